//! The decoders a typed consumer keeps (sink::typed drives them): one for Avro and one for
//! Protobuf, for its values (`format`) and its upsert keys (`key_format`). Both take their schemas
//! by id from the registry; a Protobuf schema comes with its references (the files it imports).
//! Every fetched id goes to both: the decoder of its type compiles it, the other keeps it as
//! unusable (an id is one schema), so a message of the wrong type is a dead letter (22P02).

use ingest_core::avro::AvroDecoder;
use ingest_core::decode::{DecodeError, FetchedSchema, Record, SchemaSource, TypedDecoder};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use ingest_core::format::Format;
use ingest_core::protobuf::ProtobufDecoder;

pub struct Decoder {
    avro: AvroDecoder,
    protobuf: ProtobufDecoder,
    /// Values are Protobuf (else Avro).
    protobuf_values: bool,
    /// Keys are Protobuf (`key_format := 'protobuf'`; else Avro).
    protobuf_keys: bool,
}

impl Decoder {
    /// The decoders of a consumer whose values are `format` and keys `key_format`.
    pub fn new(format: Format, key_format: Option<&str>) -> Decoder {
        let mut avro = AvroDecoder::default();
        // Debezium's Avro envelopes type their temporal fields by Kafka Connect name
        avro.set_connect_names(format == Format::DebeziumAvro);
        Decoder {
            avro,
            protobuf: ProtobufDecoder::default(),
            protobuf_values: format == Format::Protobuf,
            protobuf_keys: key_format == Some("protobuf"),
        }
    }

    pub fn has(&self, id: u32) -> bool {
        self.avro.has(id) && self.protobuf.has(id)
    }

    pub fn set_missing(&mut self, id: u32) {
        self.avro.set_missing(id);
        self.protobuf.set_missing(id);
    }

    pub fn clear_missing(&mut self) {
        self.avro.clear_missing();
        self.protobuf.clear_missing();
    }

    pub fn set_array_columns(&mut self, columns: impl IntoIterator<Item = String>) {
        let columns: Vec<String> = columns.into_iter().collect();
        self.protobuf.set_array_columns(columns.iter().cloned());
        self.avro.set_array_columns(columns);
    }

    /// Adds schema `id` as the registry holds it. A schema of another type than a decoder's (or
    /// one that does not parse or compile) is kept there as unusable: its messages are dead
    /// letters with that error (22P02).
    pub fn insert(&mut self, id: u32, s: &FetchedSchema) {
        if s.schema_type == "AVRO" {
            let _ = self.avro.insert_with_references(id, &s.schema, &s.references);
        } else {
            self.avro.reject(id, not_of_type(id, s, "Avro"));
        }
        if s.schema_type == "PROTOBUF" {
            let refs: Vec<(&str, &str)> =
                s.reference_names.iter().zip(&s.references).map(|(n, t)| (n.as_str(), t.as_str())).collect();
            let _ = self.protobuf.insert(id, &s.schema, &refs);
        } else {
            self.protobuf.reject(id, not_of_type(id, s, "Protobuf"));
        }
    }

    /// An upsert's key columns from a message key (`key_format := 'avro'` or `'protobuf'`).
    pub fn key_fields(&self, key: &[u8], keys: &[String]) -> Result<Vec<Option<String>>, DecodeError> {
        if self.protobuf_keys {
            self.protobuf.key_fields(key, keys)
        } else {
            self.avro.key_fields(key, keys)
        }
    }

    /// A 'debezium-avro' change event (an Avro envelope).
    pub fn debezium_event(&self, payload: &[u8]) -> Result<Option<ingest_core::debezium::Event>, DecodeError> {
        ingest_core::debezium::decode_avro_event(&self.avro, payload)
    }

    /// A 'debezium-avro' message key (an Avro record of the key columns).
    pub fn debezium_key(&self, key: &[u8]) -> Result<Option<ingest_core::debezium::Row>, DecodeError> {
        ingest_core::debezium::decode_avro_key(&self.avro, key)
    }

    fn values(&self) -> &dyn TypedDecoder {
        if self.protobuf_values {
            &self.protobuf
        } else {
            &self.avro
        }
    }
}

fn not_of_type(id: u32, s: &FetchedSchema, wanted: &str) -> DecodeError {
    DecodeError::new("22P02", format!("schema id {id} is a {} schema, not {wanted}", s.schema_type))
}

impl TypedDecoder for Decoder {
    fn holds(&self, id: u32) -> bool {
        self.has(id)
    }

    fn schema_id(&self, payload: &[u8]) -> Result<u32, DecodeError> {
        self.values().schema_id(payload)
    }

    fn decode<'m>(&self, payload: &'m [u8], out: &mut Vec<Record<'m>>) -> Result<(), DecodeError> {
        self.values().decode(payload, out)
    }

    fn field_types(&self, payload: &[u8]) -> Vec<(String, &'static str)> {
        self.values().field_types(payload)
    }
}

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
    pub(super) values: bool,
    pub(super) keys: bool,
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

    /// The decoder as a reader thread decodes with it (rows::fast::prepare_chunk).
    pub fn rows_handle(&self) -> ingest_core::rows::fast::TypedHandle {
        ingest_core::rows::fast::TypedHandle(self.decoder.clone())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Decoder> {
        // A panic while holding it cannot leave the decoder half-updated in a way that matters:
        // the worst is a schema missing, fetched again.
        self.decoder.lock().unwrap_or_else(|p| p.into_inner())
    }
}
