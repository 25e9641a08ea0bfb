//! Typed formats in the sink (avro, protobuf): before a batch is prepared, every schema its messages name
//! that the consumer's decoder lacks is fetched from the consumer's schema registry, once per id
//! (the decoder keeps them, bounded), so a schema lookup never happens per message.
//!
//! * an id the registry does not have: its messages become dead letters (22P02 `schema id N not
//!   found in the schema registry`), asked again in a later batch;
//! * a registry that is down, answers 5xx or refuses the request: the batch fails (SQLSTATE
//!   08006 with the registry's error), is rolled back and retried with backoff, the error in the
//!   consumer's `last_error`; nothing is dead-lettered, nothing lost;
//! * a message whose framing is bad is left to the decoder (a dead letter, 22P02).

use super::target::Target;
use crate::xact::PgError;
use super::typed_decoder::Decoder;
use ingest_core::batch::{Message, Position};
use ingest_core::decode::{DecodeError, SchemaSource, TypedDecoder};
use ingest_core::format::Format;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

/// A consumer's decoder and where its schemas come from (shared by the clones of its `Target`).
#[derive(Clone)]
pub struct Typed {
    decoder: Arc<Mutex<Decoder>>,
    /// The consumer's registry (the worker attaches it; None: none is configured).
    pub registry: Option<Arc<dyn SchemaSource>>,
    /// How errors name the registry (its URL).
    pub registry_name: String,
    /// Why the registry cannot be used (no registry, removed, unusable config).
    pub registry_error: Option<String>,
    /// Message values are typed (format 'avro' or 'protobuf'); message keys are (key_format).
    values: bool,
    keys: bool,
}

impl Typed {
    /// The decoder state of a consumer of `format` and `key_format` (None when neither is typed).
    /// Format 'debezium-avro' has Avro values and keys.
    pub fn for_format(format: Format, key_format: Option<&str>) -> Option<Typed> {
        let typed_keys = matches!(key_format, Some("avro" | "protobuf")) || format == Format::DebeziumAvro;
        let typed_values = matches!(format, Format::Avro | Format::Protobuf | Format::DebeziumAvro);
        (typed_values || typed_keys).then(|| Typed {
            decoder: Arc::new(Mutex::new(Decoder::new(format, key_format))),
            registry: None,
            registry_name: String::new(),
            registry_error: None,
            values: typed_values,
            keys: typed_keys,
        })
    }

    /// A change event of format 'debezium-avro' (None: a tombstone's).
    pub fn debezium_event(&self, payload: &[u8]) -> Result<Option<ingest_core::debezium::Event>, DecodeError> {
        self.lock().debezium_event(payload)
    }

    /// A message key of format 'debezium-avro' as a row.
    pub fn debezium_key(&self, key: &[u8]) -> Result<Option<ingest_core::debezium::Row>, DecodeError> {
        self.lock().debezium_key(key)
    }

    /// An upsert's key columns from a typed message key (`key_format := 'avro'` or `'protobuf'`).
    pub fn key_fields(&self, key: &[u8], keys: &[String]) -> Result<Vec<Option<String>>, DecodeError> {
        self.lock().key_fields(key, keys)
    }

    /// The top-level fields (and their new columns' types) of the schemas `payloads` name, each
    /// schema read once, in first-seen order (message values; nothing when they are not typed).
    pub fn value_field_types<'p>(&self, payloads: impl Iterator<Item = &'p [u8]>) -> Vec<(String, &'static str)> {
        if !self.values {
            return Vec::new();
        }
        let d = self.lock();
        let d: &dyn TypedDecoder = &*d;
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        let mut out = Vec::new();
        for p in payloads {
            let Ok(id) = d.schema_id(p) else { continue };
            if ids.insert(id) {
                out.extend(d.field_types(p).into_iter().filter(|(n, _)| names.insert(n.clone())));
            }
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Decoder> {
        // A panic while holding it cannot leave the decoder half-updated in a way that matters:
        // the worst is a schema missing, fetched again.
        self.decoder.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn outage(registry: &str, why: &str) -> PgError {
    PgError {
        sqlstate: "08006".to_string(),
        message: format!("schema registry {registry} is unavailable: {why} (the batch waits; nothing is dead-lettered)"),
        detail: None,
    }
}

/// Fetches the schemas of `messages` the decoder lacks. Err: the registry cannot answer now.
pub fn resolve<P: Position>(target: &Target, messages: &[Message<P>]) -> Result<(), PgError> {
    let Some(typed) = &target.typed else { return Ok(()) };
    let wanted: BTreeSet<u32> = {
        let mut d = typed.lock();
        d.clear_missing();
        // A transform gets the messages' bytes as they are: their values are not decoded.
        let decoded = typed.values && target.features.transform.is_none();
        let values = messages.iter().filter(|_| decoded).filter_map(|m| m.payload.as_deref());
        let keys = messages.iter().filter(|_| typed.keys).filter_map(|m| m.key.as_deref());
        values
            .chain(keys)
            .filter_map(|p| d.schema_id(p).ok())
            .filter(|id| !d.has(*id))
            .collect()
    };
    if wanted.is_empty() {
        return Ok(());
    }
    let Some(registry) = &typed.registry else {
        let why = typed.registry_error.clone().unwrap_or_else(|| "the consumer has no schema registry".to_string());
        return Err(PgError { sqlstate: "55000".to_string(), message: why, detail: None });
    };
    for id in wanted {
        pgrx::check_for_interrupts!();
        match registry.schema(id) {
            // An unusable schema (or one of another type) is kept as such: its messages carry its
            // error.
            Ok(Some(s)) => typed.lock().insert(id, &s),
            Ok(None) => typed.lock().set_missing(id),
            Err(why) => return Err(outage(&typed.registry_name, &why)),
        }
    }
    Ok(())
}

/// The consumer's decoder (None for other formats), locked for preparing a batch, its arrays
/// filling the array columns of `relation` ((name, typname) pairs: an array type's typname starts
/// with `_`; other columns get JSON).
pub fn decoder<'t>(target: &'t Target, relation: &[(String, String)]) -> Option<MutexGuard<'t, Decoder>> {
    let typed = target.typed.as_ref().filter(|t| t.values)?;
    let mut d = typed.lock();
    d.set_array_columns(relation.iter().filter(|(_, t)| t.starts_with('_')).map(|(c, _)| c.clone()));
    Some(d)
}
