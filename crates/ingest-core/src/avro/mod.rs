//! Avro in the schema registry's framing (byte 0, the 4-byte schema id, the body), decoded with
//! the writer's schema into a record of top-level fields (decode.rs's [`TypedDecoder`]).
//!
//! An own decoder of the binary encoding (no Avro crate): the encoding is small, and reading it
//! straight into [`Value`]s borrows strings and bytes from the message and keeps every digit.
//!
//! Type mapping (the README's "Formats: Avro through a schema registry" table):
//! null -> NULL; boolean -> `Bool`; int/long -> `Int`; float/double -> `Float`; string, enum ->
//! `Text`; bytes/fixed -> `Bytes`; decimal (bytes or fixed, any precision) -> `Decimal` up to 38
//! digits, beyond that `Text` of the exact decimal; date -> `DateDays`; timestamp-millis/micros ->
//! `TimestampMicros`; local-timestamp-millis/micros -> `LocalTimestampMicros`; time-millis/micros
//! -> `Text` `HH:MM:SS.ffffff`; uuid (string or fixed(16)) -> `Text`; duration -> `Text`
//! `N months N days N ms` (interval input); a union -> its branch's value. Nested records and maps
//! -> `Text` holding a JSON object, arrays a JSON array, or, for a column whose type is an array
//! (see [`AvroDecoder::set_array_columns`]), a PostgreSQL array literal.
//!
//! Errors (the message becomes a dead letter): a schema id not in the registry 22P02; a schema
//! that is not valid Avro 22P02, or not a record 0A000; a corrupt body (it ends early, a bad
//! varint, union branch or enum index, bytes after the record) 22P03; a string that is not UTF-8
//! 22021; a time or timestamp out of range 22008; nesting deeper than 100 levels 54001.

mod envelope;
mod read;
mod schema;
mod text;
#[cfg(test)]
mod tests;

use crate::decode::{confluent_frame, DecodeError, Record, TypedDecoder};
pub use envelope::{EnvelopeField, NestedField};
pub use schema::Schema;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// How many schemas a decoder keeps (the oldest fetched is dropped first; a message naming it
/// again has it fetched again).
pub const DEFAULT_CAPACITY: usize = 1000;

/// Writer schemas by id, and what to do with arrays.
#[derive(Debug, Clone)]
pub struct AvroDecoder {
    /// Parsed, or why the schema is unusable (its messages are dead letters with that error).
    schemas: HashMap<u32, Result<Arc<Schema>, DecodeError>>,
    order: VecDeque<u32>,
    capacity: usize,
    /// Ids the registry does not know (for the current batch).
    missing: HashSet<u32>,
    /// Columns whose type is an array: an Avro array fills them as an array literal.
    array_columns: HashSet<String>,
    /// Kafka Connect type names (`connect.name`) give types (format 'debezium-avro').
    connect: bool,
}

impl Default for AvroDecoder {
    fn default() -> Self {
        AvroDecoder::new(DEFAULT_CAPACITY)
    }
}

impl AvroDecoder {
    pub fn new(capacity: usize) -> AvroDecoder {
        AvroDecoder {
            schemas: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            missing: HashSet::new(),
            array_columns: HashSet::new(),
            connect: false,
        }
    }

    /// Schemas inserted from now on read Kafka Connect's temporal types and
    /// VariableScaleDecimal by their `connect.name` (Schema::parse_connect).
    pub fn set_connect_names(&mut self, on: bool) {
        self.connect = on;
    }

    /// Whether the schema `id` is known (parsed or found unusable): no need to fetch it.
    pub fn has(&self, id: u32) -> bool {
        self.schemas.contains_key(&id)
    }

    /// Adds the writer schema `id` (its JSON text, as the registry returns it). Err: it is not
    /// a valid schema; it is kept as such, so its messages become dead letters with that error.
    /// A schema that is not a record is kept (a message key may be one value), but a message
    /// value with it is refused (0A000).
    pub fn insert(&mut self, id: u32, schema_json: &str) -> Result<(), DecodeError> {
        self.insert_with_references(id, schema_json, &[])
    }

    /// `insert` of a schema naming types its `references` define (their texts, each before the
    /// schemas referring to it).
    pub fn insert_with_references(&mut self, id: u32, schema_json: &str, references: &[String]) -> Result<(), DecodeError> {
        match Schema::parse_connect(references, schema_json, self.connect) {
            Ok(s) => {
                self.keep(id, Ok(Arc::new(s)));
                Ok(())
            }
            Err(e) => {
                let e = DecodeError::new("22P02", format!("schema id {id} is not a valid Avro schema: {e}"));
                self.keep(id, Err(e.clone()));
                Err(e)
            }
        }
    }

    /// Records that schema `id` cannot be used (e.g. it is a Protobuf schema): its messages
    /// become dead letters with `error`.
    pub fn reject(&mut self, id: u32, error: DecodeError) {
        self.keep(id, Err(error));
    }

    fn keep(&mut self, id: u32, parsed: Result<Arc<Schema>, DecodeError>) {
        if self.schemas.insert(id, parsed).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.schemas.remove(&old);
                }
            }
        }
        self.missing.remove(&id);
    }

    /// Marks `id` as not in the registry: its messages are dead letters (22P02).
    pub fn set_missing(&mut self, id: u32) {
        self.missing.insert(id);
    }

    /// Forgets the ids marked missing (each batch asks the registry again).
    pub fn clear_missing(&mut self) {
        self.missing.clear();
    }

    /// The columns whose type is an array (arrays fill them as array literals, other columns get
    /// JSON).
    pub fn set_array_columns(&mut self, columns: impl IntoIterator<Item = String>) {
        self.array_columns = columns.into_iter().collect();
    }

    fn schema(&self, id: u32) -> Result<&Schema, DecodeError> {
        match self.schemas.get(&id) {
            Some(Ok(s)) => Ok(s),
            Some(Err(e)) => Err(e.clone()),
            None if self.missing.contains(&id) => Err(DecodeError::new("22P02", format!("schema id {id} not found in the schema registry"))),
            None => Err(DecodeError::new("XX000", format!("internal error: schema id {id} was not fetched before the batch was decoded"))),
        }
    }
}

impl AvroDecoder {
    /// The key columns' values an Avro message key holds, as text (None = NULL), for upserts
    /// (`key_format := 'avro'`): a record's fields of the key columns' names, or, for one key
    /// column, a key whose schema is not a record (e.g. a string or long key).
    pub fn key_fields(&self, key: &[u8], keys: &[String]) -> Result<Vec<Option<String>>, DecodeError> {
        let frame = confluent_frame(key)?;
        let id = frame.schema_id;
        let schema = self.schema(id)?;
        let mut r = read::Reader::new(frame.body, schema);
        let bad = |e: DecodeError| DecodeError::new(e.sqlstate, format!("invalid Avro key for schema id {id}: {}", e.message));
        let out = match schema.fields() {
            Some(fields) => {
                let mut values = Vec::with_capacity(fields.len());
                for (name, node) in fields {
                    values.push((name, r.value(*node, false, 0).map_err(bad)?));
                }
                keys.iter()
                    .map(|k| match values.iter().find(|(n, _)| *n == k) {
                        Some((_, v)) => Ok(v.to_text().map(|t| t.into_owned())),
                        None => Err(DecodeError::new("22P02", format!("the Avro key (schema id {id}) has no field \"{k}\""))),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            None if keys.len() == 1 => vec![r.value(schema.root, false, 0).map_err(bad)?.to_text().map(|t| t.into_owned())],
            None => {
                return Err(DecodeError::new(
                    "22P02",
                    format!("the Avro key (schema id {id}) is one value, not a record of the {} key columns", keys.len()),
                ))
            }
        };
        if r.remaining() > 0 {
            return Err(text::trailing(id, r.remaining()));
        }
        Ok(out)
    }
}

impl TypedDecoder for AvroDecoder {
    fn holds(&self, id: u32) -> bool {
        self.has(id)
    }

    fn decode<'m>(&self, payload: &'m [u8], out: &mut Vec<Record<'m>>) -> Result<(), DecodeError> {
        let frame = confluent_frame(payload)?;
        let id = frame.schema_id;
        let schema = self.schema(id)?;
        let Some(fields) = schema.fields() else {
            return Err(text::not_a_record(id, schema.nodes[schema.root].kind()));
        };
        let mut r = read::Reader::new(frame.body, schema);
        let mut record = Record { fields: Vec::with_capacity(fields.len()) };
        for (name, node) in fields {
            let v = r.value(*node, self.array_columns.contains(name), 0).map_err(|e| {
                DecodeError::new(e.sqlstate, format!("invalid Avro body for schema id {id}, field \"{name}\": {}", e.message))
            })?;
            record.fields.push((Cow::Owned(name.clone()), v));
        }
        if r.remaining() > 0 {
            return Err(text::trailing(id, r.remaining()));
        }
        out.push(record);
        Ok(())
    }

    fn field_types(&self, payload: &[u8]) -> Vec<(String, &'static str)> {
        let Ok(frame) = confluent_frame(payload) else { return Vec::new() };
        let Ok(schema) = self.schema(frame.schema_id) else { return Vec::new() };
        let Some(fields) = schema.fields() else { return Vec::new() };
        fields.iter().filter_map(|(name, node)| Some((name.clone(), schema.column_type(*node)?))).collect()
    }
}
