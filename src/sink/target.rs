//! What a consumer writes and how (`Target`): everything the sink needs to write a batch, made by
//! the worker (worker::pipeline::target_of) or a preview from the consumer's stored settings. It
//! lives with the sink, which uses it, so the sink never reaches up into the worker or catalog.

use ingest_core::batch::Limits;
use ingest_core::format::CopyOptions;
use ingest_core::policy::OnError;
use ingest_core::prepare::Rejected;
use pgrx::prelude::*;

/// The 0.4.0 settings both systems' consumers tables hold (as stored; the worker parses them).
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// metadata field -> target column, as jsonb text (None = no metadata columns).
    pub metadata: Option<String>,
    /// The transform function, as regprocedure text.
    pub transform: Option<String>,
    /// 'append' or 'upsert'.
    pub mode: String,
    pub key_columns: Option<Vec<String>>,
    pub key_format: Option<String>,
    /// 0.6.0: the transform function as consume_begin found it (its oid and owner): a function
    /// dropped and created again by another role is never called (worker::pin). None in a database
    /// not updated yet, or when the function did not exist when it was updated.
    pub transform_oid: Option<pg_sys::Oid>,
    pub transform_owner: Option<pg_sys::Oid>,
    /// 0.8.0: formats avro, protobuf, debezium-avro: the schema registry's URL, as stored with the consumer.
    pub schema_registry: Option<String>,
    /// 0.8.0: typed formats: a new field of a later schema becomes a new column (sink::evolve).
    pub auto_evolve: bool,
}

/// What a consumer writes and how: the same fields for every source.
#[derive(Clone)]
pub struct Target {
    pub dboid: pg_sys::Oid,
    pub consumer_id: i32,
    pub index: i32,
    pub generation: i64,
    pub relid: pg_sys::Oid,
    /// The relation's owner: rows are written with its rights.
    pub owner: pg_sys::Oid,
    pub opts: CopyOptions,
    /// text/csv: the columns fields fill (None = all).
    pub columns: Option<Vec<String>>,
    pub on_error: OnError,
    pub max_dead_letters: Option<i32>,
    /// As the consumer asks; `limits_now` applies the server's cap.
    pub limits: Limits,
    /// The topic or stream (for metadata columns and transforms).
    pub source_name: String,
    /// 0.4.0: metadata columns, transform, mode and keys, as stored (sink::write reads them).
    pub features: Features,
    /// A stream-partitioned consumer: each message's key names its relation (`relid` is invalid).
    pub partitioned: bool,
    /// avro: the consumer's decoder and schema registry (sink::typed).
    pub typed: Option<super::typed_decoder::Typed>,
}

impl Target {
    /// The consumer's batch limits under `pipeline_ingest.max_batch_bytes` as it is now: at most
    /// that many bytes of messages, and that / `MESSAGE_COST` messages, whatever the consumer asks.
    pub fn limits_now(&self) -> Limits {
        let cap = crate::guc::max_batch_bytes();
        Limits {
            max_messages: self.limits.max_messages.min(cap / crate::guc::MESSAGE_COST).max(1),
            max_bytes: self.limits.max_bytes.min(cap),
            max_wait: self.limits.max_wait,
        }
    }
}

/// What writing a batch did.
#[derive(Debug, Default)]
pub struct Written {
    /// Messages that could not become rows (bad data, a constraint, a trigger or transform error).
    pub rejected: Vec<Rejected>,
    /// (message index, rows it became) of the messages written; rejected ones may appear too
    /// (the pipeline ignores them).
    pub rows: Vec<(usize, usize)>,
}
