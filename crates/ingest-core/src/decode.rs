//! Typed formats (Avro, Protobuf; Debezium's envelopes carry the same records): message bytes ->
//! records of named, typed [`Value`]s -> rows, through the one row model (rows/).
//!
//! A [`TypedDecoder`] knows its schemas before a batch is prepared: the worker reads each
//! message's schema id from its framing ([`confluent_frame`]), fetches the ids it has not seen
//! from the registry (an outage waits and retries; nothing is dead-lettered), and hands prepare a
//! decoder that has them all. So decoding is pure and a schema lookup never happens per message.
//!
//! A record's top-level fields fill the columns of the same name, as json's fields do: extra
//! fields are ignored, a column without a field gets its DEFAULT (it is left out of the COPY
//! column list), a null gives NULL; a record that fills no column is refused (22P02), as a json
//! object that matches no column is. Nested records, maps and arrays are `Value::Text` holding
//! JSON (for json/jsonb columns, or PostgreSQL array literals for array columns: the decoder's
//! choice, documented with its format).

use crate::format::push_text_field;
use crate::rows::Value;
use std::borrow::Cow;
use std::fmt;

/// One decoded record: its top-level fields by name, in schema order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record<'m> {
    pub fields: Vec<(Cow<'m, str>, Value<'m>)>,
}

impl<'m> Record<'m> {
    pub fn get(&self, name: &str) -> Option<&Value<'m>> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Why a message cannot be decoded: it becomes a dead letter with this SQLSTATE (bad data only;
/// a registry outage never reaches a decoder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub sqlstate: &'static str,
    pub message: String,
}

impl DecodeError {
    pub fn new(sqlstate: &'static str, message: impl Into<String>) -> DecodeError {
        DecodeError { sqlstate, message: message.into() }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DecodeError {}

/// A message in the Confluent wire format: magic byte 0, the schema id (4 bytes, big-endian),
/// then the body (for Protobuf the body starts with the message-index varints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed<'m> {
    pub schema_id: u32,
    pub body: &'m [u8],
}

/// Splits a Confluent-framed message; 22P02 when it is not one (too short, another magic byte).
pub fn confluent_frame(msg: &[u8]) -> Result<Framed<'_>, DecodeError> {
    match msg {
        [0, a, b, c, d, body @ ..] => Ok(Framed { schema_id: u32::from_be_bytes([*a, *b, *c, *d]), body }),
        [] => Err(DecodeError::new("22P02", "message is empty: a schema-registry framed message starts with a zero byte and a 4-byte schema id")),
        [m, ..] if *m != 0 => Err(DecodeError::new(
            "22P02",
            format!("message does not start with the schema registry's magic byte 0 (it starts with 0x{m:02x})"),
        )),
        _ => Err(DecodeError::new("22P02", format!("message of {} bytes is shorter than the 5-byte schema registry header", msg.len()))),
    }
}

/// Decodes one message of a typed format into records (usually one).
pub trait TypedDecoder: Send + Sync {
    /// The schema the message needs (read from its framing, nothing decoded), so the worker can
    /// fetch it before the batch is prepared. Err: the message is bad (a dead letter).
    fn schema_id(&self, payload: &[u8]) -> Result<u32, DecodeError> {
        confluent_frame(payload).map(|f| f.schema_id)
    }

    /// Whether the decoder holds schema `id` (parsed, or known to be unusable): a message naming
    /// one it does not hold is left to the worker's main thread, which fetches it.
    fn holds(&self, _id: u32) -> bool {
        false
    }

    /// Appends the message's records to `out`; on Err nothing of the message is kept.
    fn decode<'m>(&self, payload: &'m [u8], out: &mut Vec<Record<'m>>) -> Result<(), DecodeError>;

    /// The top-level fields the message's schema gives its records, each with the PostgreSQL
    /// type a new column for it gets (`auto_evolve`): a type name from the decoder's own fixed
    /// mapping, never text from the schema. A field no column type fits (always null) is left
    /// out. Empty when the message is bad or its schema unknown (decode reports that).
    fn field_types(&self, _payload: &[u8]) -> Vec<(String, &'static str)> {
        Vec::new()
    }
}

/// Where a typed decoder's schemas come from: the consumer's schema registry. The worker asks it
/// for the ids a batch needs that its decoder lacks, before the batch is prepared.
pub trait SchemaSource: Send + Sync {
    /// The schema registered under `id`; `Ok(None)` when the registry answers that it has no
    /// such id (its messages become dead letters); `Err(why)` when it cannot answer now (down,
    /// 5xx, refused: an outage, the batch waits and is retried, nothing is dead-lettered).
    fn schema(&self, id: u32) -> Result<Option<FetchedSchema>, String>;
}

/// A schema as a registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedSchema {
    /// `AVRO`, `PROTOBUF`, `JSON`.
    pub schema_type: String,
    pub schema: String,
    /// The schemas it references, each before those referring to it (their texts).
    pub references: Vec<String>,
    /// The name each of `references` is referenced by (for Protobuf the path it is imported as,
    /// `import "shop/common.proto"`), in the same order.
    pub reference_names: Vec<String>,
}

/// Records matched to `columns` by name: per record the indexes of the columns it fills (in
/// column order) and their values.
pub fn record_row<'r, 'm>(record: &'r Record<'m>, columns: &[String]) -> Result<(Vec<usize>, Vec<&'r Value<'m>>), DecodeError> {
    let mut present = Vec::new();
    let mut values = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        if let Some(v) = record.get(c) {
            present.push(i);
            values.push(v);
        }
    }
    if present.is_empty() {
        return Err(DecodeError::new("22P02", "no field of the record matches a column of the relation"));
    }
    Ok((present, values))
}

/// Appends one row in COPY text format (tab-separated, `\N` for NULL, then `suffix` and a
/// newline): each value as the text its input function reads ([`Value::to_text`]), the text a
/// json message with the same values would give.
pub fn push_text_row(buf: &mut Vec<u8>, values: &[&Value<'_>], suffix: &[u8]) {
    for (n, v) in values.iter().enumerate() {
        if n > 0 {
            buf.push(b'\t');
        }
        match v.to_text() {
            None => buf.extend_from_slice(b"\\N"),
            Some(t) => push_text_field(buf, &t),
        }
    }
    buf.extend_from_slice(suffix);
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confluent_framing() {
        let f = confluent_frame(&[0, 0, 0, 1, 2, 9, 8]).unwrap();
        assert_eq!((f.schema_id, f.body), (258, &[9u8, 8][..]));
        assert_eq!(confluent_frame(&[1, 0, 0, 0, 1]).unwrap_err().sqlstate, "22P02");
        assert!(confluent_frame(&[0, 0, 0]).unwrap_err().message.contains("shorter"));
        assert!(confluent_frame(&[]).is_err());
    }

    #[test]
    fn records_fill_columns_by_name_as_json_objects_do() {
        let r = Record {
            fields: vec![
                ("extra".into(), Value::Int(1)),
                ("b".into(), Value::Text("x\ty".into())),
                ("a".into(), Value::Null),
            ],
        };
        let cols = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let (present, values) = record_row(&r, &cols).unwrap();
        assert_eq!(present, vec![0, 1]);
        let mut buf = Vec::new();
        push_text_row(&mut buf, &values, b"\tm");
        assert_eq!(buf, b"\\N\tx\\ty\tm\n");
        let none = Record { fields: vec![("z".into(), Value::Bool(true))] };
        assert_eq!(record_row(&none, &cols).unwrap_err().sqlstate, "22P02");
    }
}
