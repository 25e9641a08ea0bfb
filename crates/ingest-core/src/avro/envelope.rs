//! A record whose named fields are records in turn (a Debezium envelope: `before` and `after`
//! are unions of null and the table's row record, `source` a record): those fields are read as
//! their fields' values, the others as top-level values are (nested values as JSON text).

use super::read::Reader;
use super::text;
use super::AvroDecoder;
use crate::decode::{confluent_frame, DecodeError};
use crate::rows::Value;

/// A field of a nested record: its name, value, and whether its type is an array (its value is
/// then the array's JSON text).
#[derive(Debug, Clone, PartialEq)]
pub struct NestedField<'m> {
    pub name: String,
    pub value: Value<'m>,
    pub array: bool,
}

/// A top-level field of an envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvelopeField<'m> {
    Value(Value<'m>),
    /// A field named as nested: its record's fields, or None for a null.
    Record(Option<Vec<NestedField<'m>>>),
}

impl AvroDecoder {
    /// A framed message whose root is a record, its fields named in `nested` read as records
    /// (through a union with null). Errors as `decode`'s; a nested field that is neither a
    /// record nor null: 22P02.
    pub fn decode_envelope<'m>(&self, payload: &'m [u8], nested: &[&str]) -> Result<Vec<(String, EnvelopeField<'m>)>, DecodeError> {
        let frame = confluent_frame(payload)?;
        let id = frame.schema_id;
        let schema = self.schema(id)?;
        let Some(fields) = schema.fields() else {
            return Err(text::not_a_record(id, schema.nodes[schema.root].kind()));
        };
        let mut r = Reader::new(frame.body, schema);
        let mut out = Vec::with_capacity(fields.len());
        for (name, node) in fields {
            let bad = |e: DecodeError| DecodeError::new(e.sqlstate, format!("invalid Avro body for schema id {id}, field \"{name}\": {}", e.message));
            let f = if nested.contains(&name.as_str()) {
                let rec = r.record_or_null(*node, 0).map_err(bad)?;
                EnvelopeField::Record(rec.map(|fs| {
                    fs.into_iter().map(|(n, value, array)| NestedField { name: n.to_string(), value, array }).collect()
                }))
            } else {
                EnvelopeField::Value(r.value(*node, false, 0).map_err(bad)?)
            };
            out.push((name.clone(), f));
        }
        if r.remaining() > 0 {
            return Err(text::trailing(id, r.remaining()));
        }
        Ok(out)
    }
}
