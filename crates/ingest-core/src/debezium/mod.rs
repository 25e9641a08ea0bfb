//! Debezium change events (format 'debezium': the JSON converter's envelopes, with or without
//! the `schema`/`payload` wrapper), decoded without PostgreSQL: a message -> an [`Event`] (op,
//! `before`, `after`, the source's ts_ms), a message key -> a [`Row`]; `collapse` then folds a
//! batch's events into one final change per key, which src/sink/changes.rs applies.
//!
//! With the wrapper each field is decoded by its Kafka Connect type and logical name (fields.rs:
//! base64 decimals with their scale, VariableScaleDecimal, Date, Time/MicroTime/NanoTime,
//! Timestamp/MicroTimestamp/NanoTimestamp, bytes); without it a field loads as its JSON text, as
//! format json would load it. Debezium's placeholder for an unchanged TOASTed column is kept
//! apart (`Row::unavailable`): it never becomes a value. Format 'debezium-avro' (avro.rs) builds
//! the same events from Avro envelopes.

mod avro;
mod collapse;
mod fields;

pub use avro::{decode_avro_event, decode_avro_key};
pub use collapse::{collapse, step_of, Collapsed, Fill, Final, Given, Key, Step};
pub use fields::{base64, Cell, FieldSchema, PLACEHOLDER};

use crate::decode::{DecodeError, Record};
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// What a change event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `r`: a row of the initial snapshot.
    Read,
    /// `c`
    Create,
    /// `u`
    Update,
    /// `d`
    Delete,
    /// `t`: the source table was truncated.
    Truncate,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "r" => Op::Read,
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "t" => Op::Truncate,
            _ => return None,
        })
    }
}

/// One row image (`before`, `after`, or a message key): its fields with values, and the names of
/// the fields Debezium sent its unavailable-value placeholder for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub record: Record<'static>,
    pub unavailable: Vec<String>,
}

/// A decoded change event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub op: Op,
    pub before: Option<Row>,
    pub after: Option<Row>,
    /// The envelope's `ts_ms` (when the connector processed the event), else the source's.
    pub ts_ms: Option<i64>,
    /// Where the change is in the source's log (`source.txId` and `source.lsn`, PostgreSQL's
    /// connector): a key change's `d` and `c` come from one log record, so they share it.
    pub change_id: Option<String>,
}

fn bad(msg: impl Into<String>) -> DecodeError {
    DecodeError::new("22P02", msg)
}

type Object<'m> = BTreeMap<String, &'m RawValue>;

/// The JSON object `raw` is, its members unparsed (22032 when it is not JSON at all).
fn object<'m>(raw: &'m str, what: &str) -> Result<Option<Object<'m>>, DecodeError> {
    let t = raw.trim();
    if t == "null" {
        return Ok(None);
    }
    if !t.starts_with('{') {
        return Err(bad(format!("{what} is not a JSON object")));
    }
    serde_json::from_str(t).map(Some).map_err(|e| DecodeError::new("22032", format!("{what} is not valid JSON: {e}")))
}

/// The payload and (when wrapped) the schema of a message or key: `{"schema": ..., "payload":
/// ...}` is the JSON converter with schemas.enable; anything else is the payload itself.
fn unwrap<'m>(text: &'m str, what: &str) -> Result<(Option<Object<'m>>, Option<Json>), DecodeError> {
    let Some(top) = object(text, what)? else { return Ok((None, None)) };
    let wrapped = top.contains_key("payload") && top.contains_key("schema") && top.len() == 2;
    if !wrapped {
        return Ok((Some(top), None));
    }
    let schema: Json = serde_json::from_str(top["schema"].get()).map_err(|e| bad(e.to_string()))?;
    let payload = object(top["payload"].get(), what)?;
    Ok((payload, (!schema.is_null()).then_some(schema)))
}

/// The event a message holds; None for a tombstone (`null`, or a wrapper with a null payload).
/// Not an envelope, an unknown op, or a field that does not decode: Err (a dead letter).
pub fn decode_event(payload: &[u8]) -> Result<Option<Event>, DecodeError> {
    let text = std::str::from_utf8(payload).map_err(|_| DecodeError::new("22021", "a change event must be UTF-8 JSON"))?;
    if text.trim().is_empty() {
        return Err(bad("an empty message is not a change event"));
    }
    let (Some(p), schema) = unwrap(text, "the change event")? else { return Ok(None) };
    let op_raw = p.get("op").ok_or_else(|| bad("not a Debezium change event: the envelope has no \"op\""))?;
    let op_text: Option<String> = serde_json::from_str(op_raw.get()).ok();
    let op = op_text.as_deref().and_then(Op::parse).ok_or_else(|| {
        bad(format!("unknown change event op {} (expected \"r\", \"c\", \"u\", \"d\" or \"t\")", op_raw.get()))
    })?;
    // the envelope's schema is a struct whose fields are the structs of before and after
    if let Some(s) = &schema {
        FieldSchema::of_struct(s)?;
    }
    let row_schema = |name: &str| -> Option<&Json> {
        schema.as_ref()?.get("fields")?.as_array()?.iter().find(|f| f.get("field").and_then(Json::as_str) == Some(name))
    };
    let image = |name: &str| -> Result<Option<Row>, DecodeError> {
        match p.get(name) {
            None => Ok(None),
            Some(raw) => row(raw.get(), row_schema(name), name),
        }
    };
    let before = image("before")?;
    let after = image("after")?;
    let ts = |o: &Object| o.get("ts_ms").and_then(|r| serde_json::from_str::<i64>(r.get()).ok());
    let source = p.get("source").and_then(|s| object(s.get(), "source").ok().flatten());
    let ts_ms = ts(&p).or_else(|| source.as_ref().and_then(ts));
    let change_id = source.as_ref().and_then(|s| {
        let lsn = s.get("lsn").map(|r| r.get().trim()).filter(|l| *l != "null")?;
        Some(format!("{}/{lsn}", s.get("txId").map_or("", |t| t.get().trim())))
    });
    match op {
        Op::Read | Op::Create | Op::Update if after.is_none() => Err(bad(format!("a change event with op \"{}\" has no \"after\"", op_text.unwrap_or_default()))),
        _ => Ok(Some(Event { op, before, after, ts_ms, change_id })),
    }
}

/// A message key (`{"id": 1}` or its wrapped form) as a row; None when there is none to read.
pub fn decode_key(key: &[u8]) -> Result<Option<Row>, DecodeError> {
    let text = std::str::from_utf8(key).map_err(|_| DecodeError::new("22021", "the message key is not UTF-8"))?;
    let (Some(p), schema) = unwrap(text, "the message key")? else { return Ok(None) };
    let fields = match &schema {
        Some(s) => Some(FieldSchema::of_struct(s)?),
        None => None,
    };
    fill(&p, fields.as_deref()).map(Some)
}

/// One row image: `null` is None; with its struct schema the fields decode typed.
fn row(raw: &str, schema: Option<&Json>, what: &str) -> Result<Option<Row>, DecodeError> {
    let Some(o) = object(raw, &format!("\"{what}\""))? else { return Ok(None) };
    let fields = match schema {
        Some(s) => Some(FieldSchema::of_struct(s)?),
        None => None,
    };
    fill(&o, fields.as_deref()).map(Some)
}

fn fill(o: &Object, schema: Option<&[(String, FieldSchema)]>) -> Result<Row, DecodeError> {
    let mut r = Row::default();
    for (name, raw) in o {
        let cell = match schema {
            None => fields::untyped(raw)?,
            Some(fs) => match fs.iter().find(|(n, _)| n == name) {
                Some((_, f)) => fields::typed(name, raw, f)?,
                None => return Err(bad(format!("field \"{name}\" is not in the event's schema"))),
            },
        };
        match cell {
            Cell::Value(v) => r.record.fields.push((name.clone().into(), v)),
            Cell::Unavailable => r.unavailable.push(name.clone()),
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod avro_tests;
