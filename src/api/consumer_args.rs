//! Argument checks that `consume_begin` of both systems (pipeline_kafka, pipeline_kinesis) share:
//! the target relation and who may write into it, the format and its COPY options, the error
//! policy, positive numbers and the column list. Each check raises the error (with its SQLSTATE)
//! that the Kafka side has always raised, so both systems refuse the same arguments the same way.

use crate::catalog::{consumers, spi};
use crate::error::{raise, raise_with};
use ingest_core::format::{CopyOptions, Format};
use pgrx::prelude::*;

/// The on_error policy's stored name ('dead_letter', 'skip', 'stop'), or 22023.
pub fn on_error(on_error: &str) -> &'static str {
    ingest_core::policy::OnError::parse(on_error)
        .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string()))
        .name()
}

/// max_dead_letters is a count or NULL (no limit).
pub fn check_max_dead_letters(max_dead_letters: Option<i32>) {
    if max_dead_letters.is_some_and(|m| m < 0) {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "max_dead_letters must be >= 0 or NULL");
    }
}

/// The columns argument without NULL elements (22004); which columns exist is checked later by
/// `check_columns`, once the relation is known.
pub fn columns(columns: Option<Vec<Option<String>>>) -> Option<Vec<String>> {
    columns.map(|cols| {
        cols.into_iter()
            .map(|c| c.unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "columns must not contain NULL")))
            .collect()
    })
}

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

/// Every (name, value) must be positive (22023 naming the first that is not).
pub fn check_positive(values: &[(&str, i32)]) {
    for (name, v) in values {
        if *v <= 0 {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("{name} must be positive, got {v}"));
        }
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

/// The column list fits the format and names insertable columns of the relation, once each.
pub fn check_columns(cols: Option<&Vec<String>>, opts: &CopyOptions, relid: pg_sys::Oid, relation: &str) {
    let Some(cols) = cols else { return };
    if opts.format == Format::Json {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "columns is for text and csv (json matches fields to columns by name)");
    }
    if opts.format == Format::Raw {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "columns is for text and csv (raw fills the one column not filled by metadata)");
    }
    if cols.is_empty() {
        raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "columns must name at least one column (or be NULL for all)");
    }
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
