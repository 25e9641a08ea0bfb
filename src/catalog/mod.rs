//! Typed access to the extension's catalog tables. Every statement is parameterized; writes run
//! as the bootstrap superuser because the tables are not writable by other roles.

pub mod consumers;
pub mod dead_letters;
pub mod kafka;
pub mod kinesis;
pub mod kinesis_seek;
pub mod seqnums;

use pgrx::prelude::*;
use pgrx::spi::SpiResult;

// Defined below the catalog (the sink uses them too); named here, where callers find them.
pub use crate::error::spi;
pub use crate::sink::relation::insertable_columns;
pub use crate::sink::target::Features;

/// True when the extension exists in the current database (workers check before touching tables).
pub fn extension_exists() -> bool {
    spi(Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pipeline_ingest')"))
        .unwrap_or(false)
}

/// The version of the extension's schema in the current database (None when not created).
pub fn extension_version() -> Option<String> {
    spi(Spi::get_one::<String>("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pipeline_ingest'"))
}

/// The schema version this library works with.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Features {
    /// Whether messages' headers are used: by a headers metadata column, or by a transform (its
    /// messages carry them). Sources copy them only then.
    pub fn uses_headers(&self) -> bool {
        self.transform.is_some() || self.metadata.as_deref().is_some_and(ingest_core::metadata::maps_headers)
    }
}

/// The select-list of `Features` for a consumers table aliased `k`, read through the row's jsonb
/// so that a database whose extension is not updated yet (no such columns) reads the defaults.
pub const FEATURE_COLUMNS: &str = "to_jsonb(k) ->> 'metadata', to_jsonb(k) ->> 'transform', \
     coalesce(to_jsonb(k) ->> 'mode', 'append'), \
     CASE WHEN jsonb_typeof(to_jsonb(k) -> 'key_columns') = 'array' \
          THEN ARRAY(SELECT jsonb_array_elements_text(to_jsonb(k) -> 'key_columns')) END, \
     to_jsonb(k) ->> 'key_format', \
     (to_jsonb(k) ->> 'transform_oid')::oid, (to_jsonb(k) ->> 'transform_owner')::regrole::oid";

/// The select-list expression of a consumer's start_time (the timestamptz `column`) in
/// microseconds since the Unix epoch. consume_begin refuses times outside what a bigint of
/// microseconds holds (22008); a value stored before it did (0.5.0 accepted '294250-01-01') is
/// clamped to 1 January 10000 here, so that one consumer's row never makes a read of every
/// consumer fail with "bigint out of range" (the supervisor, consume_drop and status read them
/// all in one query).
pub fn start_time_us_sql(column: &str) -> String {
    format!(
        "(LEAST(GREATEST(pg_catalog.date_part('epoch', {column})::pg_catalog.numeric, \
              {MIN_START_TIME_EPOCH}), {MAX_START_TIME_EPOCH}) * 1000000)::pg_catalog.int8"
    )
}

/// The earliest and the latest start_time a consumer may have, in seconds since the Unix epoch:
/// 4713 BC (PostgreSQL's first timestamp) and 10000-01-01 00:00:00+00.
pub const MIN_START_TIME_EPOCH: i64 = -210_866_803_200;
pub const MAX_START_TIME_EPOCH: i64 = 253_402_300_800;

impl Features {
    /// Reads the `FEATURE_COLUMNS` starting at column `first` (1-based).
    pub fn from_row(row: &pgrx::spi::SpiHeapTupleData, first: usize) -> SpiResult<Features> {
        Ok(Features {
            metadata: row.get(first)?,
            transform: row.get(first + 1)?,
            mode: row.get(first + 2)?.unwrap_or_else(|| "append".to_string()),
            key_columns: row.get(first + 3)?,
            key_format: row.get(first + 4)?,
            transform_oid: row.get(first + 5)?,
            transform_owner: row.get(first + 6)?,
        })
    }
}

/// True when `table` has `column` (e.g. a consumers table the 0.4.0 update added a column to).
pub fn has_column(table: &str, column: &str) -> bool {
    spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped)",
        &[table.into(), column.into()],
    ))
    .unwrap_or(false)
}
