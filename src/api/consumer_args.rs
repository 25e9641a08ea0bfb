//! The checks that `consume_begin` of both systems (pipeline_kafka, pipeline_kinesis) and the
//! previews share, in one place: the settings (`ingest_core::spec`, with COPY's own judgement of
//! the format options) and, against the catalog, the target relation and who may write into it,
//! its columns, metadata columns, transform and keys. Both systems refuse the same arguments the
//! same way.

use crate::api::writer_args::TransformRef;
use crate::catalog::{consumers, spi};
use crate::error::{raise, raise_with};
use crate::shmem::SourceKind;
use ingest_core::format::{CopyOptions, Format};
use ingest_core::metadata::System;
use ingest_core::spec::{Args, Spec, SpecError};
use pgrx::prelude::*;

/// The format and its options as the workers' COPY will use them.
pub fn copy_options(format: &str, delimiter: Option<&str>, quote: Option<&str>, escape: Option<&str>) -> CopyOptions {
    let owned = |v: Option<&str>| v.map(str::to_string);
    // COPY's own option code judges text and csv options first, exactly as the workers' COPY
    // will (its errors and SQLSTATEs); the json and raw rules and the worker's parse come after.
    let format_kind = Format::parse(format).unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string()));
    let unchecked = CopyOptions { format: format_kind, delimiter: owned(delimiter), quote: owned(quote), escape: owned(escape) };
    crate::sink::copy::check_copy_options(&crate::sink::copy::copy_option_list(&unchecked));
    CopyOptions::new(format, owned(delimiter), owned(quote), owned(escape))
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string()))
}

/// The arguments every consume_begin and preview share: how a message's value becomes rows.
#[allow(clippy::too_many_arguments)]
pub fn row_args(
    format: Option<&str>,
    delimiter: Option<&str>,
    quote: Option<&str>,
    escape: Option<&str>,
    columns: Option<Vec<Option<String>>>,
    metadata: Option<crate::api::JsonbArg>,
    transform: Option<&str>,
    mode: Option<&str>,
    key_columns: Option<Vec<Option<String>>>,
    key_format: Option<&str>,
) -> Args {
    let owned = |v: Option<&str>| v.map(str::to_string);
    Args {
        format: owned(format),
        delimiter: owned(delimiter),
        quote: owned(quote),
        escape: owned(escape),
        columns,
        metadata: metadata.map(|m| m.0),
        transform: owned(transform),
        mode: owned(mode),
        key_columns,
        key_format: owned(key_format),
        ..Args::default()
    }
}

/// Raises a spec error with its SQLSTATE.
#[track_caller]
pub fn raise_spec(e: SpecError) -> ! {
    let code = match e {
        SpecError::NullElement(_) => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        SpecError::Invalid(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
    };
    raise(code, e.to_string())
}

/// The settings of `args` (laid over a consumer's stored ones already), checked: the format
/// options as COPY itself judges them, then everything `Spec::check` does.
pub fn spec(system: System, args: Args) -> Spec {
    copy_options(args.format.as_deref().unwrap_or("text"), args.delimiter.as_deref(), args.quote.as_deref(), args.escape.as_deref());
    let mut spec = Spec::check(system, args).unwrap_or_else(|e| raise_spec(e));
    // avro, protobuf, debezium-avro: the registry named, else the only one (api::registry).
    if spec.opts.format.needs_registry() {
        spec.schema_registry = Some(crate::api::registry::resolve(spec.schema_registry.as_deref()));
    }
    spec
}

/// A consumer's settings checked against its relation.
pub struct Checked {
    /// The relation's owner, whom the workers write as.
    pub owner: pg_sys::Oid,
    /// The write settings as stored (metadata, transform and its pin, mode, resolved keys).
    pub features: crate::catalog::Features,
}

/// The checks consume_begin (both systems) and preview make against the relation, in one place:
/// the caller may write into it as its owner, the columns exist, the metadata columns fit, the
/// transform function and the upsert keys. `spec.transform` and `spec.key_columns` become what is
/// stored (the function's schema-qualified signature, the resolved keys).
pub fn against_relation(source: SourceKind, relid: pg_sys::Oid, relation: &str, spec: &mut Spec, transform: Option<TransformRef>) -> Checked {
    let owner = check_relation(relid, relation);
    if spec.opts.format.change_events() && crate::citus::table_kind(relid).is_some() {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("\"{relation}\" is a Citus table: Debezium change events cannot be applied to Citus tables yet"),
        );
    }
    check_columns(spec.columns.as_ref(), relid, relation);
    let metadata = crate::api::metadata_args::check(source, spec.metadata.as_deref(), relid, relation, &spec.opts, spec.columns.as_ref());
    let features = crate::api::writer_args::check(source, relid, owner, relation, spec, transform, metadata);
    spec.transform = features.transform.clone();
    spec.key_columns = features.key_columns.clone();
    Checked { owner, features }
}

/// The transform to check for a consumer: the one given, else the function the stored consumer
/// pinned (not its name again: a function of that name created by another role since is not it).
pub fn transform_ref(given: Option<&str>, pinned: Option<pg_sys::Oid>, kept: &Spec) -> Option<TransformRef> {
    match (given, &kept.transform) {
        (Some(name), _) if !name.is_empty() => Some(TransformRef::Name(name.to_string())),
        (Some(_), _) | (None, None) => None,
        (None, Some(name)) => Some(match pinned {
            Some(oid) => TransformRef::Pinned(oid),
            None => TransformRef::Name(name.clone()),
        }),
    }
}

/// The oid of the relation a user names (42P01 when there is none).
pub fn resolve_relation(relation: &str) -> pg_sys::Oid {
    // The regclass cast raises 42P01 for an unknown relation, with the usual message.
    let oid = spi(Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::text::regclass::oid", &[relation.into()]));
    oid.unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("relation \"{relation}\" does not exist")))
}

/// May the current user SET ROLE to `role`? (Superusers may.) Consumers write as their
/// relation's owner, so only who could do that by hand may create or change one.
fn may_become(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups in a backend inside a transaction.
    unsafe { pg_sys::is_member_of_role(pg_sys::GetUserId(), role) }
}

/// Checks that a consumer may write into the relation; returns its owner, the role the
/// workers will write as.
pub fn check_relation(relid: pg_sys::Oid, relation: &str) -> pg_sys::Oid {
    let (kind, persistence) = spi(Spi::get_two_with_args::<String, String>(
        "SELECT relkind::text, relpersistence::text FROM pg_catalog.pg_class WHERE oid = $1",
        &[relid.into()],
    ));
    let kind = kind.unwrap_or_default();
    if kind != "r" && kind != "p" {
        raise(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, format!("\"{relation}\" is not a table"));
    }
    if persistence.as_deref() == Some("t") {
        // Workers are other sessions, which cannot see this session's temporary tables.
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("\"{relation}\" is a temporary table; consumers write from their own sessions, which cannot see it"),
        );
    }
    let (_, owner) = consumers::relation_name_and_owner(relid)
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("relation \"{relation}\" does not exist")));
    if !may_become(owner) {
        raise_with(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be able to SET ROLE {} (the owner of \"{relation}\") to consume into it", consumers::role_name(owner)),
            None,
            Some("Consumers write as their table's owner; ask a member of that role or a superuser.".into()),
        );
    }
    let may_insert = spi(Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.has_table_privilege($1, $2, 'INSERT')",
        &[owner.into(), relid.into()],
    ))
    .unwrap_or(false);
    if !may_insert {
        raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("permission denied for table {relation}"));
    }
    // SAFETY: catalog lookup for an existing relation, in a transaction.
    let rls = unsafe { pg_sys::check_enable_rls(relid, owner, true) };
    if rls == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32 {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("row-level security is enabled on \"{relation}\"; ingestion uses COPY FROM, which does not support it"),
        );
    }
    crate::citus::refuse(relid, relation);
    owner
}

/// The column list (its fit to the format checked by `Spec::check`) names insertable columns of the relation, once each.
pub fn check_columns(cols: Option<&Vec<String>>, relid: pg_sys::Oid, relation: &str) {
    let Some(cols) = cols else { return };
    let known = crate::catalog::insertable_columns(relid);
    for (i, c) in cols.iter().enumerate() {
        if !known.contains(c) {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN, format!("column \"{c}\" of relation \"{relation}\" does not exist or is generated"));
        }
        if cols[..i].contains(c) {
            raise(PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN, format!("column \"{c}\" is named more than once"));
        }
    }
}
