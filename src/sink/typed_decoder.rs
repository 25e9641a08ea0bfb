//! The decoder a typed consumer keeps (sink::typed drives it): Avro values, or Protobuf values
//! (with an Avro decoder beside it for `key_format := 'avro'` keys). Both take their schemas by
//! id from the registry; a Protobuf schema comes with its references (the files it imports).

use ingest_core::avro::AvroDecoder;
use ingest_core::decode::{DecodeError, FetchedSchema, Record, TypedDecoder};
use ingest_core::format::Format;
use ingest_core::protobuf::ProtobufDecoder;

pub enum Decoder {
    Avro(AvroDecoder),
    /// Values in Protobuf; the Avro decoder reads `key_format := 'avro'` keys. Every fetched id
    /// goes to both (an id is one schema: the decoder of the other type keeps it as unusable).
    Protobuf(ProtobufDecoder, AvroDecoder),
}

impl Decoder {
    /// The decoder of a consumer whose values are `format`.
    pub fn for_format(format: Format) -> Decoder {
        match format {
            Format::Protobuf => Decoder::Protobuf(ProtobufDecoder::default(), AvroDecoder::default()),
            _ => Decoder::Avro(AvroDecoder::default()),
        }
    }

    pub fn has(&self, id: u32) -> bool {
        match self {
            Decoder::Avro(a) => a.has(id),
            Decoder::Protobuf(p, k) => p.has(id) && k.has(id),
        }
    }

    pub fn set_missing(&mut self, id: u32) {
        match self {
            Decoder::Avro(a) => a.set_missing(id),
            Decoder::Protobuf(p, k) => {
                p.set_missing(id);
                k.set_missing(id);
            }
        }
    }

    pub fn clear_missing(&mut self) {
        match self {
            Decoder::Avro(a) => a.clear_missing(),
            Decoder::Protobuf(p, k) => {
                p.clear_missing();
                k.clear_missing();
            }
        }
    }

    pub fn set_array_columns(&mut self, columns: impl IntoIterator<Item = String>) {
        match self {
            Decoder::Avro(a) => a.set_array_columns(columns),
            Decoder::Protobuf(p, _) => p.set_array_columns(columns),
        }
    }

    /// Adds schema `id` as the registry holds it. A schema of another type than the decoder's
    /// (or one that does not parse or compile) is kept as unusable: its messages are dead
    /// letters with that error (22P02).
    pub fn insert(&mut self, id: u32, s: &FetchedSchema) {
        match self {
            Decoder::Avro(a) => avro_insert(a, id, s),
            Decoder::Protobuf(p, k) => {
                avro_insert(k, id, s);
                if s.schema_type == "PROTOBUF" {
                    let refs: Vec<(&str, &str)> =
                        s.reference_names.iter().zip(&s.references).map(|(n, t)| (n.as_str(), t.as_str())).collect();
                    let _ = p.insert(id, &s.schema, &refs);
                } else {
                    p.reject(id, not_of_type(id, s, "Protobuf"));
                }
            }
        }
    }

    /// An upsert's key columns from an Avro message key (`key_format := 'avro'`).
    pub fn key_fields(&self, key: &[u8], keys: &[String]) -> Result<Vec<Option<String>>, DecodeError> {
        match self {
            Decoder::Avro(a) | Decoder::Protobuf(_, a) => a.key_fields(key, keys),
        }
    }
}

fn avro_insert(a: &mut AvroDecoder, id: u32, s: &FetchedSchema) {
    if s.schema_type == "AVRO" {
        let _ = a.insert_with_references(id, &s.schema, &s.references);
    } else {
        a.reject(id, not_of_type(id, s, "Avro"));
    }
}

fn not_of_type(id: u32, s: &FetchedSchema, wanted: &str) -> DecodeError {
    DecodeError::new("22P02", format!("schema id {id} is a {} schema, not {wanted}", s.schema_type))
}

impl TypedDecoder for Decoder {
    fn schema_id(&self, payload: &[u8]) -> Result<u32, DecodeError> {
        match self {
            Decoder::Avro(a) => a.schema_id(payload),
            Decoder::Protobuf(p, _) => p.schema_id(payload),
        }
    }

    fn decode<'m>(&self, payload: &'m [u8], out: &mut Vec<Record<'m>>) -> Result<(), DecodeError> {
        match self {
            Decoder::Avro(a) => a.decode(payload, out),
            Decoder::Protobuf(p, _) => p.decode(payload, out),
        }
    }
}
