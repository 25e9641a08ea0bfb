//! A consumer's settings (`ingest_core::spec::Spec`) in either system's consumers table: the one
//! upsert that `consume_begin` (Kafka, Kinesis) and `consume_begin_stream_partitioned` store
//! with, and the stored settings read back as the arguments a new call is laid over.

use super::spi;
use crate::shmem::SourceKind;
use crate::xact::as_superuser;
use ingest_core::spec::{Args, Spec};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// Which consumer: the key of its row.
#[derive(Clone, Copy)]
pub enum Key<'a> {
    /// A Kafka consumer of a topic into a relation.
    Kafka { topic: &'a str, relid: pg_sys::Oid },
    /// The stream-partitioned consumer of a topic (no relation: each message's key names one).
    KafkaPartitioned { topic: &'a str },
    /// A Kinesis consumer of a stream at an endpoint into a relation.
    Kinesis { endpoint: &'a str, stream: &'a str, relid: pg_sys::Oid },
}

impl Key<'_> {
    pub fn system(self) -> SourceKind {
        match self {
            Key::Kinesis { .. } => SourceKind::Kinesis,
            _ => SourceKind::Kafka,
        }
    }
}

/// Inserts or updates a consumer with `spec` (and `config`, the consumer's settings object as
/// JSON text, when given: None keeps the stored one, `{}` for a new consumer), owned by `owner`;
/// enables it, bumps its generation and clears its last error. Returns its id. The 0.4.0 write
/// settings are stored apart (`consumers::set_features`).
pub fn upsert(key: Key, owner: pg_sys::Oid, spec: &Spec, config: Option<&str>) -> i32 {
    // (column, value expression, value); `$` in the expression is this value's parameter.
    let mut cols: Vec<(&str, &str, DatumWithOid<'static>)> = Vec::new();
    let mut relid = None;
    let conflict = match key {
        Key::Kafka { topic, relid: r } => {
            cols.push(("topic", "$", topic.to_string().into()));
            relid = Some(r);
            "(topic, relation)"
        }
        Key::KafkaPartitioned { topic } => {
            cols.push(("topic", "$", topic.to_string().into()));
            "(topic) WHERE relation IS NULL"
        }
        Key::Kinesis { endpoint, stream, relid: r } => {
            cols.push(("endpoint", "$", endpoint.to_string().into()));
            cols.push(("stream", "$", stream.to_string().into()));
            relid = Some(r);
            "(endpoint, stream, relation)"
        }
    };
    let key_columns = cols.len();
    if let Some(r) = relid {
        cols.push(("relation", "$::oid::regclass", r.into()));
        cols.push((
            "relname",
            "(SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $)",
            r.into(),
        ));
    }
    let o = &spec.opts;
    cols.push(("owner", "$::oid::regrole", owner.into()));
    cols.push(("format", "$", o.format.name().to_string().into()));
    cols.push(("delimiter", "$", o.delimiter.clone().into()));
    cols.push(("quote", "$", o.quote.clone().into()));
    cols.push(("escape", "$", o.escape.clone().into()));
    cols.push(("columns", "$", spec.columns.clone().into()));
    cols.push(("batchsize", "$", spec.batchsize.into()));
    cols.push(("parallelism", "$", spec.parallelism.into()));
    cols.push(("timeout", "$", spec.timeout.into()));
    cols.push(("on_error", "$", spec.on_error.name().to_string().into()));
    cols.push(("max_dead_letters", "$", spec.max_dead_letters.into()));
    match key.system() {
        SourceKind::Kafka => {
            cols.push(("maxbytes", "$", spec.maxbytes.into()));
            cols.push(("group_id", "$", spec.group_id.clone().into()));
        }
        SourceKind::Kinesis => cols.push(("poll_interval", "$", spec.poll_interval.into())),
    }
    cols.push(("config", "$::jsonb", config.unwrap_or("{}").to_string().into()));
    let names: Vec<&str> = cols.iter().map(|c| c.0).collect();
    let values: Vec<String> = cols.iter().enumerate().map(|(i, c)| c.1.replace('$', &format!("${}", i + 1))).collect();
    let updates: Vec<String> = names[key_columns..]
        .iter()
        .filter(|n| **n != "relation" && (**n != "config" || config.is_some()))
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    let sql = format!(
        "INSERT INTO {t} AS k ({names}) VALUES ({values}) ON CONFLICT {conflict} DO UPDATE SET {updates}, \
             enabled = true, generation = k.generation + 1, last_error = NULL, last_error_at = NULL \
         RETURNING id",
        t = key.system().consumers(),
        names = names.join(", "),
        values = values.join(", "),
        updates = updates.join(", "),
    );
    let args: Vec<DatumWithOid> = cols.into_iter().map(|c| c.2).collect();
    as_superuser(|| spi(Spi::get_one_with_args::<i32>(&sql, &args))).expect("INSERT ... RETURNING id returns a row")
}

/// What a consumer has stored: its settings, as the arguments that made them, and the transform
/// function it pinned (0.6.0).
pub struct Stored {
    pub args: Args,
    pub transform_oid: Option<pg_sys::Oid>,
}

/// A consumer's stored settings (None: no such consumer).
pub fn stored(sys: SourceKind, consumer_id: i32) -> Option<Stored> {
    let row = as_superuser(|| {
        spi(Spi::get_one_with_args::<String>(
            &format!("SELECT pg_catalog.to_jsonb(k)::text FROM {t} k WHERE id = $1", t = sys.consumers()),
            &[consumer_id.into()],
        ))
    })?;
    let v: serde_json::Value = serde_json::from_str(&row).ok()?;
    let transform_oid = v.get("transform_oid").and_then(|o| o.as_u64()).and_then(|o| u32::try_from(o).ok()).map(pg_sys::Oid::from);
    Some(Stored { args: Args::from_row(&v), transform_oid })
}
