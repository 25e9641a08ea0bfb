//! Format 'debezium-avro': change events written by Kafka Connect's Avro converter (Confluent
//! framed, the writer's schema from the registry), decoded by the Avro decoder into the same
//! [`Event`] the JSON path builds, so one collapse and one applier serve both.
//!
//! The envelope is a record {before, after: union of null and the row record; source: record;
//! op: string; ts_ms: union of null and long; transaction: ...}. A row's fields are typed by the
//! Avro decoder (logical types, and with `connect.name` Debezium's temporal types; see
//! `AvroDecoder::set_connect_names`). Debezium's placeholder for an unchanged TOASTed value is the
//! string (or, for bytes, its bytes) `__debezium_unavailable_value`, or an array of only it.

use super::fields::PLACEHOLDER;
use super::{bad, Event, Op, Row};
use crate::avro::{AvroDecoder, EnvelopeField, NestedField};
use crate::decode::{DecodeError, Record, TypedDecoder};
use crate::rows::Value;
use std::borrow::Cow;

/// The event a framed Avro message holds (a tombstone has no value: the caller skips it).
pub fn decode_avro_event(d: &AvroDecoder, payload: &[u8]) -> Result<Option<Event>, DecodeError> {
    let fields = d.decode_envelope(payload, &["before", "after", "source"])?;
    let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, f)| f);
    let op_text = match get("op") {
        Some(EnvelopeField::Value(Value::Text(t))) => t.to_string(),
        Some(_) => return Err(bad("not a Debezium change event: the envelope's \"op\" is not a string")),
        None => return Err(bad("not a Debezium change event: the envelope has no \"op\"")),
    };
    let op = Op::parse(&op_text)
        .ok_or_else(|| bad(format!("unknown change event op \"{op_text}\" (expected \"r\", \"c\", \"u\", \"d\" or \"t\")")))?;
    let image = |name: &str| -> Result<Option<Row>, DecodeError> {
        match get(name) {
            None | Some(EnvelopeField::Record(None)) => Ok(None),
            Some(EnvelopeField::Record(Some(fs))) => Ok(Some(row(fs))),
            Some(EnvelopeField::Value(_)) => Err(bad(format!("\"{name}\" is not a record"))),
        }
    };
    let before = image("before")?;
    let after = image("after")?;
    let source: &[NestedField] = match get("source") {
        Some(EnvelopeField::Record(Some(fs))) => fs,
        _ => &[],
    };
    let in_source = |name: &str| source.iter().find(|f| f.name == name).map(|f| &f.value);
    let int = |v: Option<&Value>| match v {
        Some(Value::Int(i)) => Some(*i),
        _ => None,
    };
    let ts_ms = match get("ts_ms") {
        Some(EnvelopeField::Value(v)) => int(Some(v)),
        _ => None,
    }
    .or_else(|| int(in_source("ts_ms")));
    let change_id = in_source("lsn").and_then(Value::to_text).map(|lsn| {
        let tx = in_source("txId").and_then(Value::to_text).unwrap_or_default();
        format!("{tx}/{lsn}")
    });
    match op {
        Op::Read | Op::Create | Op::Update if after.is_none() => Err(bad(format!("a change event with op \"{op_text}\" has no \"after\""))),
        _ => Ok(Some(Event { op, before, after, ts_ms, change_id })),
    }
}

/// A framed Avro message key (a record of the key columns) as a row.
pub fn decode_avro_key(d: &AvroDecoder, key: &[u8]) -> Result<Option<Row>, DecodeError> {
    let mut out = Vec::new();
    d.decode(key, &mut out)?;
    let Some(rec) = out.pop() else { return Ok(None) };
    let fields = rec.fields.into_iter().map(|(n, v)| (Cow::Owned(n.into_owned()), owned(v))).collect();
    Ok(Some(Row { record: Record { fields }, unavailable: Vec::new() }))
}

fn row(fields: &[NestedField]) -> Row {
    let mut r = Row::default();
    for f in fields {
        if unavailable(&f.value, f.array) {
            r.unavailable.push(f.name.clone());
        } else {
            r.record.fields.push((Cow::Owned(f.name.clone()), owned(f.value.clone())));
        }
    }
    r
}

/// Debezium's placeholder: the string, its bytes, or an array of only it (as JSON text).
fn unavailable(v: &Value, array: bool) -> bool {
    match v {
        Value::Text(t) if t == PLACEHOLDER => true,
        Value::Bytes(b) => b.as_ref() == PLACEHOLDER.as_bytes(),
        Value::Text(t) if array => serde_json::from_str::<Vec<serde_json::Value>>(t)
            .is_ok_and(|items| !items.is_empty() && items.iter().all(|i| i.as_str() == Some(PLACEHOLDER))),
        _ => false,
    }
}

fn owned(v: Value) -> Value<'static> {
    match v {
        Value::Null => Value::Null,
        Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
        Value::Bool(b) => Value::Bool(b),
        Value::Int(i) => Value::Int(i),
        Value::UInt(u) => Value::UInt(u),
        Value::Float(f) => Value::Float(f),
        Value::Decimal { unscaled, scale } => Value::Decimal { unscaled, scale },
        Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
        Value::DateDays(d) => Value::DateDays(d),
        Value::TimestampMicros(t) => Value::TimestampMicros(t),
        Value::LocalTimestampMicros(t) => Value::LocalTimestampMicros(t),
    }
}
