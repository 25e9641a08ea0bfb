//! consume_begin's settings for how a batch is written (both systems), checked against the
//! relation: `transform` (a function receiving the batch as an array of messages), `mode`
//! ('append' | 'upsert') with `key_columns` and `key_format`. What needs no database is checked
//! by `ingest_core::spec::Spec::check` before.

use crate::catalog::spi;
use crate::error::{raise, raise_with};
use crate::catalog::Features;
use crate::shmem::SourceKind;
use ingest_core::format::CopyOptions;
use ingest_core::spec::{Mode, Spec};
use pgrx::prelude::*;

/// The transform function to check: named by the caller (name with argument types, resolved
/// here), or the one a consumer has pinned (kept when consume_begin does not name one).
pub enum TransformRef {
    Name(String),
    Pinned(pg_sys::Oid),
}

#[track_caller]
fn invalid(msg: impl Into<String>) -> ! {
    raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, msg)
}

fn array_type(source: SourceKind) -> &'static str {
    match source {
        SourceKind::Kafka => "pipeline_kafka.message[]",
        SourceKind::Kinesis => "pipeline_kinesis.record[]",
    }
}

/// The function a `transform` argument names: a name with argument types (22023 without them,
/// before PostgreSQL's regprocedure input would say "expected a left parenthesis"; 42883 when
/// there is no such function).
fn resolve_transform(source: SourceKind, name: &str) -> pg_sys::Oid {
    if !name.contains('(') {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("transform must name a function with its argument types, e.g. '{}({})'", name.trim(), array_type(source)),
            None,
            Some("A transform takes the batch as one array argument; name it as a regprocedure: function(argument types).".into()),
        );
    }
    spi(Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regprocedure($1)::pg_catalog.oid", &[name.into()]))
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION, format!("function \"{name}\" does not exist")))
}

/// Checks the write settings of `spec` (its pure checks are done) against the relation; returns
/// them as stored, with the checked `metadata`. `transform`: the function to check, if any.
pub fn check(
    source: SourceKind,
    relid: pg_sys::Oid,
    owner: pg_sys::Oid,
    relation: &str,
    spec: &Spec,
    transform: Option<TransformRef>,
    metadata: Option<String>,
) -> Features {
    let func = transform.map(|t| match t {
        TransformRef::Name(name) => resolve_transform(source, &name),
        TransformRef::Pinned(oid) => oid,
    });
    let transform = func.map(|f| check_transform(source, f, relid, owner, relation));
    let key_columns = (spec.mode == Mode::Upsert)
        .then(|| check_upsert(relid, relation, &spec.opts, spec.key_columns.clone(), spec.key_format.as_deref(), spec.columns.as_ref(), metadata.as_deref()));
    Features {
        metadata,
        transform_oid: transform.as_ref().map(|t| t.1),
        transform_owner: transform.as_ref().map(|t| t.2),
        transform: transform.map(|t| t.0),
        mode: spec.mode.name().to_string(),
        key_columns,
        key_format: spec.key_format.clone(),
    }
}

/// A transform receives each message's raw bytes and metadata and decides itself what they mean
/// (`Spec::check` refuses the settings that say how values become rows). The function must take exactly the batch array (42883), return void or SETOF the relation's
/// row type (42804), and the consumer's owner must be allowed to EXECUTE it (42501). Returns it as
/// schema-qualified regprocedure text, with its oid and owner.
fn check_transform(source: SourceKind, func: pg_sys::Oid, relid: pg_sys::Oid, owner: pg_sys::Oid, relation: &str) -> (String, pg_sys::Oid, pg_sys::Oid) {
    let array_type = array_type(source);
    // As the superuser with search_path pg_catalog: the stored text then names the function's
    // schema, so the worker (another session, another search_path) finds the same function.
    let row = crate::xact::as_superuser(|| {
        spi(Spi::connect(|c| {
            let t = c.select(
                "SELECT p.prokind = 'f' AND p.pronargs = 1 AND p.provariadic = 0 \
                        AND p.proargtypes[0] = pg_catalog.to_regtype($2), \
                        p.prorettype = 'pg_catalog.void'::pg_catalog.regtype AND NOT p.proretset, \
                        p.proretset AND p.prorettype = (SELECT reltype FROM pg_catalog.pg_class WHERE oid = $3), \
                        pg_catalog.has_function_privilege($4, p.oid, 'EXECUTE'), \
                        p.pronamespace = pg_catalog.pg_my_temp_schema(), \
                        p.oid::pg_catalog.regprocedure::text, \
                        (SELECT reltype FROM pg_catalog.pg_class WHERE oid = $3)::pg_catalog.regtype::text, \
                        p.proowner \
                 FROM pg_catalog.pg_proc p WHERE p.oid = $1",
                Some(1),
                &[func.into(), array_type.into(), relid.into(), owner.into()],
            )?;
            let mut out = None;
            for r in t {
                out = Some((
                    r.get::<bool>(1)?.unwrap_or(false),
                    r.get::<bool>(2)?.unwrap_or(false),
                    r.get::<bool>(3)?.unwrap_or(false),
                    r.get::<bool>(4)?.unwrap_or(false),
                    r.get::<bool>(5)?.unwrap_or(false),
                    r.get::<String>(6)?.unwrap_or_default(),
                    r.get::<String>(7)?.unwrap_or_default(),
                    r.get::<pg_sys::Oid>(8)?.unwrap_or(pg_sys::Oid::INVALID),
                ));
            }
            Ok(out)
        }))
    });
    let Some((args_ok, returns_void, returns_rows, may_execute, temporary, name, row_type, proowner)) = row else {
        raise(PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION, "transform function does not exist")
    };
    if !args_ok {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
            format!("transform function {name} must be a function taking exactly one argument of type {array_type}"),
        );
    }
    if !returns_void && !returns_rows {
        raise_with(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("transform function {name} must return void or SETOF {row_type} (the row type of \"{relation}\")"),
            None,
            Some("Return SETOF the table's row type to have the rows inserted, or void when the function writes itself.".into()),
        );
    }
    if temporary {
        // Workers are other sessions, which cannot see this session's temporary objects.
        raise(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, format!("transform function {name} is temporary"));
    }
    if !may_execute {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "permission denied for function {name}: the consumer runs it as {}, the owner of \"{relation}\"",
                crate::catalog::consumers::role_name(owner)
            ),
        );
    }
    (name, func, proowner)
}

/// The key columns of an upsert (NULL = the primary key's), checked: they exist, once each, and a
/// unique index or constraint usable by ON CONFLICT covers exactly them (42P10 otherwise); a
/// message key without key_format names a single column; text/csv values (or metadata fields) fill every key column.
fn check_upsert(
    relid: pg_sys::Oid,
    relation: &str,
    opts: &CopyOptions,
    key_columns: Option<Vec<String>>,
    key_format: Option<&str>,
    columns: Option<&Vec<String>>,
    metadata: Option<&str>,
) -> Vec<String> {
    // Columns metadata fields fill (e.g. {"key": "id"}): present in every row whatever the columns list.
    let from_metadata: Vec<String> = metadata
        .and_then(|m| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m).ok())
        .map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let keys = match key_columns {
        Some(k) => k,
        None => spi(Spi::get_one_with_args::<Vec<String>>(
            "SELECT pg_catalog.array_agg(a.attname::text ORDER BY k.ord) \
             FROM pg_catalog.pg_index i, pg_catalog.unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord), pg_catalog.pg_attribute a \
             WHERE i.indrelid = $1 AND i.indisprimary AND a.attrelid = i.indrelid AND a.attnum = k.attnum",
            &[relid.into()],
        ))
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE,
                format!("\"{relation}\" has no primary key: give key_columns for mode 'upsert'"),
            )
        }),
    };
    if keys.is_empty() {
        invalid("key_columns must name at least one column (or be NULL for the primary key)");
    }
    let known = crate::catalog::insertable_columns(relid);
    for (i, c) in keys.iter().enumerate() {
        if !known.contains(c) {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN, format!("key column \"{c}\" of relation \"{relation}\" does not exist or is generated"));
        }
        if keys[..i].contains(c) {
            raise(PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN, format!("key column \"{c}\" is named more than once"));
        }
    }
    // ON CONFLICT (keys) needs a unique index on exactly these columns, without a predicate or
    // expressions, not deferrable (INCLUDE columns are not part of the key).
    let unique = spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
             WHERE i.indrelid = $1 AND i.indisunique AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL \
               AND (SELECT pg_catalog.array_agg(x ORDER BY x) FROM pg_catalog.unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) x) \
                 = (SELECT pg_catalog.array_agg(attnum ORDER BY attnum) FROM pg_catalog.pg_attribute \
                    WHERE attrelid = $1 AND attname = ANY ($2) AND NOT attisdropped))",
        &[relid.into(), keys.clone().into()],
    ))
    .unwrap_or(false);
    if !unique {
        raise_with(
            PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE,
            format!("there is no unique or exclusion constraint matching the key columns ({}) of \"{relation}\"", keys.join(", ")),
            None,
            Some("mode 'upsert' needs a primary key, unique constraint or unique index on exactly the key columns (not partial, not deferrable).".into()),
        );
    }
    if key_format.is_none() && keys.len() > 1 {
        invalid(format!(
            "the message key holds one value without key_format, but there are {} key columns: give key_format 'json', 'csv' or 'text'",
            keys.len()
        ));
    }
    if let (Some(cols), true) = (columns, opts.format.name() != "json") {
        if let Some(k) = keys.iter().find(|k| !cols.contains(k) && !from_metadata.contains(k)) {
            invalid(format!("columns must include the key column \"{k}\": text and csv values hold whole rows, keys included"));
        }
    }
    keys
}
