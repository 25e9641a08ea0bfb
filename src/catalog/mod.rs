//! Typed access to the extension's catalog tables. Every statement is parameterized; writes run
//! as the bootstrap superuser because the tables are not writable by other roles.

pub mod consumers;
pub mod dead_letters;
pub mod kafka;
pub mod kinesis;
pub mod kinesis_seek;
pub mod seqnums;
pub mod spec;
pub mod columns;

use pgrx::prelude::*;
use pgrx::spi::SpiResult;

// Defined below the catalog (the sink uses them too); named here, where callers find them.
pub use crate::error::{read_one, read_two, spi};
pub use crate::sink::relation::insertable_columns;
pub use crate::sink::target::Features;

/// True when the extension exists in the current database (workers check before touching tables).
pub fn extension_exists() -> bool {
    read_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pipeline_ingest')", &[]).unwrap_or(false)
}

/// The version of the extension's schema in the current database (None when not created).
pub fn extension_version() -> Option<String> {
    read_one::<String>("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pipeline_ingest'", &[])
}

/// The schema version this library works with.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The settings both systems' consumers rows hold alike: how values become rows, how big and how
/// old a batch gets, what a bad message does (as stored; the worker checks them again).
#[derive(Debug, Clone)]
pub struct RowSettings {
    pub format: String,
    pub delimiter: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    /// text/csv: the columns fields go to (None = all).
    pub columns: Option<Vec<String>>,
    pub batchsize: i32,
    pub timeout: i32,
    /// What to do with a message that cannot become rows: dead_letter, skip or stop.
    pub on_error: String,
    /// Dead letters allowed in one batch before the consumer stops (None = no limit).
    pub max_dead_letters: Option<i32>,
    /// The consumer's settings object (Kafka: client settings, secrets included; Kinesis: its own).
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// The select-list of `RowSettings` for a consumers table aliased `k`.
pub const ROW_SETTINGS_COLUMNS: &str =
    "k.format, k.delimiter, k.quote, k.escape, k.columns, k.batchsize, k.timeout, k.on_error, k.max_dead_letters, k.config::text";

impl RowSettings {
    /// Reads the `ROW_SETTINGS_COLUMNS` starting at column `first` (1-based).
    pub fn from_row(row: &pgrx::spi::SpiHeapTupleData, first: usize) -> SpiResult<RowSettings> {
        let config: String = row.get(first + 9)?.unwrap_or_default();
        Ok(RowSettings {
            format: row.get(first)?.unwrap_or_default(),
            delimiter: row.get(first + 1)?,
            quote: row.get(first + 2)?,
            escape: row.get(first + 3)?,
            columns: row.get(first + 4)?,
            batchsize: row.get(first + 5)?.unwrap_or(1000),
            timeout: row.get(first + 6)?.unwrap_or(250),
            on_error: row.get(first + 7)?.unwrap_or_else(|| "dead_letter".to_string()),
            max_dead_letters: row.get(first + 8)?,
            config: match serde_json::from_str(&config) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            },
        })
    }
}

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
    read_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = $1::regclass AND attname = $2 AND NOT attisdropped)",
        &[table.into(), column.into()],
    )
    .unwrap_or(false)
}
