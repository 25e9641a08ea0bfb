//! A decoded Protobuf message -> a [`Record`] of [`Value`]s, one per top-level field.
//!
//! | Protobuf | Value |
//! |---|---|
//! | int32, sint32, sfixed32, int64, sint64, sfixed64, uint32, fixed32 | `Int` |
//! | uint64, fixed64 | `UInt` |
//! | float (widened exactly), double | `Float` |
//! | bool | `Bool` |
//! | string | `Text` |
//! | bytes | `Bytes` |
//! | enum | `Text`: the value's name (a number the schema does not name: its decimal text) |
//! | google.protobuf.Timestamp | `TimestampMicros`, the nanoseconds rounded to microseconds as PostgreSQL rounds the same instant written with nine fractional digits (half to even) |
//! | google.protobuf.{Double,Float,Int64,UInt64,Int32,UInt32,Bool,String,Bytes}Value | the wrapped value as above, `Null` when absent |
//! | repeated | `Text`: a JSON array; into an array column a PostgreSQL array literal |
//! | map | `Text`: a JSON object (keys as strings) |
//! | any other message | `Text`: a JSON object |
//!
//! JSON is the proto3 JSON mapping with these choices: keys are the `.proto` field names (as the
//! columns are), 64-bit integers are JSON numbers (jsonb keeps them exactly), a float its
//! shortest text as a float (`0.1`), NaN and infinities strings, fields without
//! presence are written with their defaults and absent fields with presence are left out, enums
//! are names, bytes base64, Timestamp an RFC 3339 string, Duration `"1.500s"`, wrappers their value,
//! Struct/Value/ListValue their JSON, Any `{"@type": ..., ...}`; the fields of a message in field
//! number order, a map's entries in key order.
//!
//! Absent fields: a field with presence (messages, wrappers, Timestamp, proto3 `optional`, oneof
//! members, proto2 singular fields) that is not set is `Null`; a proto3 field without presence is
//! its default (0, "", false, empty bytes, the enum's first value), as a standard deserializer
//! gives; a repeated field or map without elements is `[]` / `{}` (or `{}` into an array column).

use crate::decode::{DecodeError, Record};
use crate::rows::Value;
use prost_reflect::{
    DynamicMessage, Kind, MapKey, ReflectMessage, SerializeOptions, Value as PValue,
};
use std::borrow::Cow;
use std::collections::HashSet;

const TIMESTAMP: &str = "google.protobuf.Timestamp";

/// Whether a message type is one the mapping reads as a scalar (Timestamp and the wrappers).
fn scalar_message(full_name: &str) -> bool {
    full_name == TIMESTAMP
        || matches!(
            full_name,
            "google.protobuf.DoubleValue"
                | "google.protobuf.FloatValue"
                | "google.protobuf.Int64Value"
                | "google.protobuf.UInt64Value"
                | "google.protobuf.Int32Value"
                | "google.protobuf.UInt32Value"
                | "google.protobuf.BoolValue"
                | "google.protobuf.StringValue"
                | "google.protobuf.BytesValue"
        )
}

/// The message's top-level fields, in field-number order.
pub(super) fn record<'m>(
    msg: &DynamicMessage,
    array_columns: &HashSet<String>,
) -> Result<Record<'m>, DecodeError> {
    let desc = msg.descriptor();
    let mut fields = Vec::with_capacity(desc.fields().len());
    for f in desc.fields() {
        let kind = f.kind();
        let value = if f.is_list() && array_columns.contains(f.name()) {
            let PValue::List(items) = &*msg.get_field(&f) else {
                return Err(DecodeError::new(
                    "XX000",
                    format!("repeated field {} holds no list", f.name()),
                ));
            };
            Value::Text(Cow::Owned(array_literal(items, &kind)?))
        } else if f.is_list() || f.is_map() {
            let mut out = String::new();
            json_value(&mut out, &msg.get_field(&f), &kind)?;
            Value::Text(Cow::Owned(out))
        } else if f.supports_presence() && !msg.has_field(&f) {
            Value::Null
        } else {
            scalar(&msg.get_field(&f), &kind)?
        };
        fields.push((Cow::Owned(f.name().to_string()), value));
    }
    Ok(Record { fields })
}

/// The PostgreSQL type of a new column for each top-level field of `desc` (`auto_evolve`), from
/// the mapping above: 32-bit signed integers integer, other integers bigint (uint64/fixed64
/// numeric), float real, double double precision, bool boolean, string and enum text, bytes
/// bytea, Timestamp timestamptz, a wrapper its value's, repeated fields, maps and other messages
/// jsonb.
pub(super) fn column_types(desc: &prost_reflect::MessageDescriptor) -> Vec<(String, &'static str)> {
    fn scalar_type(kind: &Kind) -> &'static str {
        match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "integer",
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint32 | Kind::Fixed32 => "bigint",
            Kind::Uint64 | Kind::Fixed64 => "numeric",
            Kind::Float => "real",
            Kind::Double => "double precision",
            Kind::Bool => "boolean",
            Kind::String | Kind::Enum(_) => "text",
            Kind::Bytes => "bytea",
            Kind::Message(m) if m.full_name() == TIMESTAMP => "timestamptz",
            Kind::Message(m) if scalar_message(m.full_name()) => {
                m.get_field(1).map_or("jsonb", |v| scalar_type(&v.kind()))
            }
            Kind::Message(_) => "jsonb",
        }
    }
    desc.fields()
        .map(|f| {
            let t = if f.is_list() || f.is_map() { "jsonb" } else { scalar_type(&f.kind()) };
            (f.name().to_string(), t)
        })
        .collect()
}

/// A message in the proto3 JSON mapping, with the choices of this module's doc.
fn message_json(out: &mut String, msg: &DynamicMessage) -> Result<(), DecodeError> {
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(false)
        .use_proto_field_name(true)
        .skip_default_fields(false);
    let mut buf = Vec::new();
    msg.serialize_with_options(&mut serde_json::Serializer::new(&mut buf), &options)
        .map_err(|e| {
            DecodeError::new(
                "22P03",
                format!(
                    "Protobuf message {} cannot be written as JSON: {e}",
                    msg.descriptor().full_name()
                ),
            )
        })?;
    out.push_str(&String::from_utf8_lossy(&buf));
    Ok(())
}

/// A value as JSON, as the proto3 JSON mapping (with this module's choices) writes it: lists as
/// arrays, maps as objects (keys as strings, in key order), messages through [`message_json`].
fn json_value(out: &mut String, v: &PValue, kind: &Kind) -> Result<(), DecodeError> {
    let string =
        |out: &mut String, s: &str| out.push_str(&serde_json::to_string(s).unwrap_or_default());
    match v {
        PValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        PValue::I32(i) => out.push_str(&i.to_string()),
        PValue::I64(i) => out.push_str(&i.to_string()),
        PValue::U32(u) => out.push_str(&u.to_string()),
        PValue::U64(u) => out.push_str(&u.to_string()),
        PValue::F32(f) if f.is_finite() => {
            out.push_str(&serde_json::to_string(f).unwrap_or_default())
        }
        PValue::F64(f) if f.is_finite() => {
            out.push_str(&serde_json::to_string(f).unwrap_or_default())
        }
        PValue::F32(_) | PValue::F64(_) => {
            let f = v
                .as_f64()
                .or_else(|| v.as_f32().map(f64::from))
                .unwrap_or(f64::NAN);
            string(
                out,
                if f.is_nan() {
                    "NaN"
                } else if f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                },
            );
        }
        PValue::String(s) => string(out, s),
        PValue::Bytes(b) => string(out, &base64(b)),
        PValue::EnumNumber(n) => match kind.as_enum().and_then(|e| e.get_value(*n)) {
            Some(v) => string(out, v.name()),
            None => out.push_str(&n.to_string()),
        },
        PValue::Message(m) => message_json(out, m)?,
        PValue::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_value(out, item, kind)?;
            }
            out.push(']');
        }
        PValue::Map(map) => {
            let value_kind = kind
                .as_message()
                .map(|entry| entry.map_entry_value_field().kind())
                .unwrap_or(Kind::String);
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let key = match k {
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                    MapKey::String(s) => s.clone(),
                };
                string(out, &key);
                out.push(':');
                json_value(out, v, &value_kind)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Standard base64 with padding (the proto3 JSON mapping of bytes).
fn base64(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A scalar field's value (a Timestamp or wrapper message included).
fn scalar(v: &PValue, kind: &Kind) -> Result<Value<'static>, DecodeError> {
    Ok(match v {
        PValue::Bool(b) => Value::Bool(*b),
        PValue::I32(i) => Value::Int(i64::from(*i)),
        PValue::I64(i) => Value::Int(*i),
        PValue::U32(u) => Value::Int(i64::from(*u)),
        PValue::U64(u) => Value::UInt(*u),
        PValue::F32(f) => Value::Float(f64::from(*f)),
        PValue::F64(f) => Value::Float(*f),
        PValue::String(s) => Value::Text(Cow::Owned(s.clone())),
        PValue::Bytes(b) => Value::Bytes(Cow::Owned(b.to_vec())),
        PValue::EnumNumber(n) => {
            let name = kind
                .as_enum()
                .and_then(|e| e.get_value(*n))
                .map(|v| v.name().to_string());
            Value::Text(Cow::Owned(name.unwrap_or_else(|| n.to_string())))
        }
        PValue::Message(m) => {
            let desc = m.descriptor();
            if desc.full_name() == TIMESTAMP {
                let seconds = m
                    .get_field_by_number(1)
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                let nanos = m
                    .get_field_by_number(2)
                    .and_then(|v| v.as_i32())
                    .unwrap_or(0);
                Value::TimestampMicros(timestamp_micros(seconds, nanos)?)
            } else if scalar_message(desc.full_name()) {
                match desc.get_field(1) {
                    Some(inner) => scalar(&m.get_field(&inner), &inner.kind())?,
                    None => Value::Null,
                }
            } else {
                let mut out = String::new();
                message_json(&mut out, m)?;
                Value::Text(Cow::Owned(out))
            }
        }
        PValue::List(_) | PValue::Map(_) => {
            return Err(DecodeError::new(
                "XX000",
                "a repeated value where a scalar was expected",
            ));
        }
    })
}

/// A Timestamp's instant in microseconds: the nanoseconds rounded as PostgreSQL's input rounds
/// `.nnnnnnnnn` (the fraction read as a double, times 10^6, rounded half to even), so a
/// Timestamp and its RFC 3339 text load the same. 22008 for nanos outside 0..=999999999 or an
/// instant beyond 64-bit microseconds.
pub(super) fn timestamp_micros(seconds: i64, nanos: i32) -> Result<i64, DecodeError> {
    if !(0..=999_999_999).contains(&nanos) {
        return Err(DecodeError::new(
            "22008",
            format!("google.protobuf.Timestamp nanos {nanos} is outside 0 to 999999999"),
        ));
    }
    let frac: f64 = format!("0.{nanos:09}").parse().unwrap_or(0.0);
    let micros = (frac * 1e6).round_ties_even() as i64;
    seconds
        .checked_mul(1_000_000)
        .and_then(|s| s.checked_add(micros))
        .ok_or_else(|| {
            DecodeError::new(
                "22008",
                format!("google.protobuf.Timestamp of {seconds} seconds is out of range"),
            )
        })
}

/// A repeated field as a PostgreSQL array literal: `{"1","2"}`, every element quoted, messages as
/// their JSON text.
fn array_literal(items: &[PValue], kind: &Kind) -> Result<String, DecodeError> {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let text = match scalar(item, kind)? {
            Value::Null => None,
            v => v.to_text().map(|t| t.into_owned()),
        };
        match text {
            None => out.push_str("NULL"),
            Some(t) => {
                out.push('"');
                for c in t.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    Ok(out)
}
