//! consume_begin's `metadata` argument (both systems): which message metadata field fills which
//! column of the target relation, e.g. `{"offset": "off", "key": "k"}`, and the relation shapes
//! that depend on which columns are left for the data (format raw, json into one json column).
//!
//! Stored as given (a jsonb object of field -> column) in the consumers table; the worker parses it
//! again against the relation for every batch (sink::write::append), with the same rules
//! (ingest_core::metadata).

use crate::catalog::columns::{insertable_column_types, raw_shape_error};
use crate::error::raise;
use crate::shmem::SourceKind;
use ingest_core::format::{CopyOptions, Format};
use ingest_core::metadata::{Metadata, MetadataError, System};
use pgrx::prelude::*;

pub fn system(source: SourceKind) -> System {
    match source {
        SourceKind::Kafka => System::Kafka,
        SourceKind::Kinesis => System::Kinesis,
    }
}

#[track_caller]
fn raise_metadata(e: MetadataError) -> ! {
    let code = match e {
        MetadataError::UnknownColumn(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        MetadataError::DuplicateColumn(_) => PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN,
        MetadataError::WrongType { .. } => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        MetadataError::NotAnObject | MetadataError::NotAColumnName(_) | MetadataError::UnknownField { .. } => {
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        }
    };
    raise(code, e.to_string())
}

/// Checks the metadata argument against the system's fields and the relation's columns (and, for
/// format raw, that one data column is left); returns the jsonb text to store (None = no metadata
/// columns). Errors: 22023 not an object of strings or an unknown field, 42703 an unknown or
/// generated column, 42701 a column named twice (by two fields, or by a field and `columns`),
/// 42804 a column whose type cannot hold the field, 42P10 raw without exactly one data column (or
/// any other format without a data column).
pub fn check(
    source: SourceKind,
    metadata: Option<&str>,
    relid: pg_sys::Oid,
    relation: &str,
    opts: &CopyOptions,
    columns: Option<&Vec<String>>,
) -> Option<String> {
    let relation_columns = insertable_column_types(relid);
    let parsed = match &metadata {
        Some(m) => Metadata::parse(system(source), m, &relation_columns).unwrap_or_else(|e| raise_metadata(e)),
        None => Metadata::default(),
    };
    if let Some(c) = columns.into_iter().flatten().find(|c| parsed.contains(c)) {
        raise(
            PgSqlErrorCode::ERRCODE_DUPLICATE_COLUMN,
            format!("column \"{c}\" is named more than once (in columns and in metadata)"),
        );
    }
    let data = relation_columns.iter().filter(|(c, _)| !parsed.contains(c)).count();
    if data == 0 && columns.is_none() && opts.format != Format::Raw {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE,
            format!("\"{relation}\": every column is a metadata column; none is left for the message's data"),
        );
    }
    if opts.format == Format::Raw {
        // A database not updated yet refuses 'raw' in its consumers table's CHECK: say why.
        if !crate::catalog::consumers::has_features_schema(source) {
            crate::error::raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "format raw needs the extension's 0.4.0 schema",
                None,
                Some("Run ALTER EXTENSION pipeline_ingest UPDATE.".into()),
            );
        }
        if data != 1 {
            crate::error::raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE,
                format!("\"{relation}\": {}", raw_shape_error(data)),
                None,
                Some("Fill the other columns with metadata, or consume into a table of one column (bytea, text, json, jsonb, ...).".into()),
            );
        }
    }
    metadata.map(str::to_string)
}
