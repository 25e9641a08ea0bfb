//! Rows of `pipeline_kafka.consumers` and `pipeline_kinesis.consumers` that mean the same in both
//! systems: enabled and generation, last error, relation and owner. Every function names the
//! system whose table it works on; the rest of a consumer's rows (offsets or sequence numbers,
//! dead letters) are in the system's own module.

use super::spi;
use crate::shmem::SourceKind;
use crate::xact::as_superuser;
use pgrx::prelude::*;

/// SQL condition on a consumers row: its relation no longer exists and its stored name (relname)
/// is the name in parameter `$param` (a name as a user writes it; unqualified, it matches that
/// table name in any schema).
pub fn missing_relation_named(param: u8) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class r WHERE r.oid = relation) \
           AND CASE pg_catalog.cardinality(pg_catalog.parse_ident(${param})) \
                 WHEN 1 THEN (pg_catalog.parse_ident(relname))[2] = (pg_catalog.parse_ident(${param}))[1] \
                 ELSE pg_catalog.parse_ident(relname) = pg_catalog.parse_ident(${param}) END"
    )
}

/// The qualified name (as stored in `consumers.relname`) and the owner of a relation.
pub fn relation_name_and_owner(relid: pg_sys::Oid) -> Option<(String, pg_sys::Oid)> {
    let (name, owner) = as_superuser(|| {
        crate::catalog::read_two::<String, pg_sys::Oid>(
            // scalar subqueries: one row (of NULLs) also when the relation does not exist
            "SELECT (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1), \
                    (SELECT relowner FROM pg_catalog.pg_class WHERE oid = $1)",
            &[relid.into()],
        )
    });
    Some((name?, owner?))
}

// Defined below the catalog (the sink names roles in its errors too).
pub use crate::sink::relation::role_name;

/// Points a consumer at a relation (a dropped table created again, adopted by `consume_begin`).
pub fn set_relation(sys: SourceKind, consumer_id: i32, relid: pg_sys::Oid) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            &format!("UPDATE {t} SET relation = $2::oid::regclass WHERE id = $1", t = sys.consumers()),
            &[consumer_id.into(), relid.into()],
        ))
    });
}

/// Deletes a consumer with its offsets, secrets and dead letters (foreign keys cascade).
pub fn delete_consumer(sys: SourceKind, consumer_id: i32) {
    as_superuser(|| {
        spi(Spi::run_with_args(&format!("DELETE FROM {t} WHERE id = $1", t = sys.consumers()), &[consumer_id.into()]))
    });
}

/// Enables (bumping the generation) or disables a consumer; false when it already was.
pub fn set_enabled(sys: SourceKind, id: i32, enabled: bool) -> bool {
    as_superuser(|| {
        spi(Spi::get_one_with_args::<bool>(
            &format!("WITH u AS (UPDATE {t} SET enabled = $2, \
                 generation = generation + CASE WHEN $2 THEN 1 ELSE 0 END, \
                 last_error = CASE WHEN $2 THEN NULL ELSE last_error END \
             WHERE id = $1 AND enabled <> $2 RETURNING 1) SELECT count(*) > 0 FROM u", t = sys.consumers()),
            &[id.into(), enabled.into()],
        ))
    })
    .unwrap_or(false)
}

/// Records (or clears, with None) the last error of a consumer.
pub fn set_last_error(sys: SourceKind, consumer_id: i32, error: Option<&str>) {
    as_superuser(|| {
        // Looked at first: the supervisor and idle workers call this every pass, and an UPDATE
        // (even of no row) through SPI assigns the transaction an xid (see error::read_one).
        let differs = crate::catalog::read_one::<bool>(
            &format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE id = $1 AND last_error IS DISTINCT FROM $2)", t = sys.consumers()),
            &[consumer_id.into(), error.into()],
        );
        if differs != Some(true) {
            return;
        }
        spi(Spi::run_with_args(
            &format!("UPDATE {t} SET last_error = $2, \
                 last_error_at = CASE WHEN $2 IS NULL THEN NULL ELSE now() END \
             WHERE id = $1 AND last_error IS DISTINCT FROM $2", t = sys.consumers()),
            &[consumer_id.into(), error.into()],
        ))
    });
}

/// Locks the consumer row for the rest of the transaction (a concurrent `consume_begin` /
/// `consume_end` waits for the batch) and returns its generation if it is still enabled.
pub fn lock_consumer(sys: SourceKind, consumer_id: i32) -> Option<i64> {
    as_superuser(|| {
        spi(Spi::get_one_with_args::<i64>(
            &format!("SELECT generation FROM {t} WHERE id = $1 AND enabled FOR SHARE", t = sys.consumers()),
            &[consumer_id.into()],
        ))
    })
}

/// Disables a consumer and records why (the `stop` error policy, or too many dead letters).
pub fn stop_with_error(sys: SourceKind, consumer_id: i32, error: &str) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            &format!("UPDATE {t} SET enabled = false, last_error = $2, last_error_at = now() WHERE id = $1", t = sys.consumers()),
            &[consumer_id.into(), error.into()],
        ))
    });
}

/// Why a consumer cannot write into its relation now.
pub enum RelationProblem {
    /// Dropped, and no relation of its name exists: wait for one (the batch fails and is retried).
    Missing(String),
    /// The relation (or the one created again under its name) belongs to another role than the
    /// consumer: writing as the consumer's owner would run that role's triggers with the owner's
    /// rights, and writing as the new owner would give the consumer's owner its rights. Stop.
    OtherOwner(String),
}

/// Where a consumer's rows go now. `Ok(oid)` when its relation exists and still belongs to the
/// consumer's owner, or when it was dropped and a relation of the same name and owner exists again
/// (the catalog then points at the new one).
pub fn current_relation(sys: SourceKind, consumer_id: i32, relid: pg_sys::Oid, owner: pg_sys::Oid) -> Result<pg_sys::Oid, RelationProblem> {
    let other_owner = |name: &str, now: pg_sys::Oid, recreated: bool| {
        let (now, was) = (role_name(now), role_name(owner));
        let what = if recreated { "was created again with owner" } else { "now belongs to" };
        RelationProblem::OtherOwner(format!(
            "relation \"{name}\" {what} {now}, but the consumer belongs to {was}: nothing was written; \
             run consume_begin again as a member of {now} to continue [SQLSTATE 42501]"
        ))
    };
    if let Some((name, relowner)) = relation_name_and_owner(relid) {
        return if relowner == owner { Ok(relid) } else { Err(other_owner(&name, relowner, false)) };
    }
    let (name, again) = as_superuser(|| {
        crate::catalog::read_two::<String, pg_sys::Oid>(
            &format!("SELECT relname, pg_catalog.to_regclass(relname)::oid FROM {t} WHERE id = $1", t = sys.consumers()),
            &[consumer_id.into()],
        )
    });
    let name = name.unwrap_or_default();
    let Some(oid) = again else { return Err(RelationProblem::Missing(name)) };
    match relation_name_and_owner(oid) {
        Some((_, relowner)) if relowner == owner => {
            set_relation(sys, consumer_id, oid);
            Ok(oid)
        }
        Some((_, relowner)) => Err(other_owner(&name, relowner, true)),
        None => Err(RelationProblem::Missing(name)),
    }
}

/// True when the system's consumers table has the 0.4.0 columns (the database's extension was
/// updated). A database still at an older version keeps working with the old columns.
pub fn has_features_schema(sys: SourceKind) -> bool {
    super::has_column(sys.consumers(), "mode")
}

/// Stores a consumer's 0.4.0 write settings (metadata columns, transform, mode, keys, the
/// transform's pin). In a database not updated yet only the defaults are possible (55000 otherwise).
pub fn set_features(sys: SourceKind, consumer_id: i32, f: &super::Features) {
    if !has_features_schema(sys) {
        if f.metadata.is_some() || f.transform.is_some() || f.mode != "append" || f.key_columns.is_some() || f.key_format.is_some() {
            crate::error::raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "metadata, transform, mode, key_columns and key_format need the extension's 0.4.0 schema",
                None,
                Some("Run ALTER EXTENSION pipeline_ingest UPDATE.".into()),
            );
        }
        return;
    }
    as_superuser(|| {
        spi(Spi::run_with_args(
            &format!(
                "UPDATE {t} SET metadata = $2::jsonb, transform = $3, mode = $4, key_columns = $5, key_format = $6 WHERE id = $1",
                t = sys.consumers()
            ),
            &[
                consumer_id.into(),
                f.metadata.as_deref().into(),
                f.transform.as_deref().into(),
                f.mode.as_str().into(),
                f.key_columns.clone().into(),
                f.key_format.as_deref().into(),
            ],
        ))
    });
    // 0.6.0: the function pinned (a database not updated yet has no columns for it; its workers
    // do not run before ALTER EXTENSION UPDATE, which pins the function of the stored signature).
    if super::has_column(sys.consumers(), "transform_owner") {
        set_transform_pin(sys, consumer_id, f.transform_oid, f.transform_owner);
    }
}

/// Stores the oid and owner of a consumer's transform function (sink::pin re-pins the oid of a
/// function its owner created again).
pub fn set_transform_pin(sys: SourceKind, consumer_id: i32, oid: Option<pg_sys::Oid>, owner: Option<pg_sys::Oid>) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            &format!("UPDATE {t} SET transform_oid = $2, transform_owner = $3::oid::regrole \
              WHERE id = $1 AND (transform_oid, transform_owner) IS DISTINCT FROM ($2, $3::oid::regrole)", t = sys.consumers()),
            &[consumer_id.into(), oid.into(), owner.into()],
        ))
    });
}
