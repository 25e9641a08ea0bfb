//! One field of a Debezium row (a `before`/`after`/key struct) -> a [`Value`], exactly: with the
//! schema wrapper by its Kafka Connect type and logical name (decimals, dates, times,
//! timestamps, bytes), without it as its JSON text (what format json loads). Debezium's
//! placeholder for an unchanged TOASTed column becomes [`Cell::Unavailable`].

use crate::decode::DecodeError;
use crate::rows::Value;
use serde_json::value::RawValue;
use serde_json::Value as Json;
use std::borrow::Cow;

/// Debezium's `unavailable.value.placeholder` (its default), as text and as bytes.
pub const PLACEHOLDER: &str = "__debezium_unavailable_value";

/// A decoded field: a value, or Debezium's placeholder for a value it does not have.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Value(Value<'static>),
    Unavailable,
}

/// What the schema wrapper says of one field of a struct.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSchema {
    /// int8, int16, int32, int64, float, double (float32, float64), boolean, string, bytes, array, map, struct.
    pub ty: String,
    /// The logical type (`io.debezium.time.Date`, `org.apache.kafka.connect.data.Decimal`, ...).
    pub name: Option<String>,
    /// Decimal: the `scale` parameter.
    pub scale: Option<i32>,
}

impl FieldSchema {
    /// A struct's fields (`{"type": "struct", "fields": [...]}`) by name.
    pub fn of_struct(schema: &Json) -> Result<Vec<(String, FieldSchema)>, DecodeError> {
        let Some(fields) = schema.get("fields").and_then(Json::as_array) else {
            return Err(bad("the schema of a row is not a struct with \"fields\""));
        };
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let (Some(name), Some(ty)) = (f.get("field").and_then(Json::as_str), f.get("type").and_then(Json::as_str)) else {
                return Err(bad("a field of the schema has no \"field\" name or \"type\""));
            };
            let scale = match f.get("parameters").and_then(|p| p.get("scale")) {
                None => None,
                Some(s) => Some(
                    s.as_str()
                        .and_then(|s| s.parse().ok())
                        .or_else(|| s.as_i64().and_then(|i| i32::try_from(i).ok()))
                        .ok_or_else(|| bad(format!("field \"{name}\": the decimal's scale parameter is not an integer")))?,
                ),
            };
            let logical = f.get("name").and_then(Json::as_str).map(str::to_string);
            out.push((name.to_string(), FieldSchema { ty: ty.to_string(), name: logical, scale }));
        }
        Ok(out)
    }
}

fn bad(msg: impl Into<String>) -> DecodeError {
    DecodeError::new("22P02", msg)
}

/// A field without a schema: its JSON text, as format json loads it (a string's characters, a
/// number's literal, true/false, objects and arrays as JSON text, null as NULL).
pub fn untyped(raw: &RawValue) -> Result<Cell, DecodeError> {
    let text = raw.get().trim();
    Ok(Cell::Value(match text.as_bytes().first() {
        Some(b'n') => Value::Null,
        Some(b'"') => {
            let s: String = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
            if s == PLACEHOLDER || is_placeholder_base64(&s) {
                return Ok(Cell::Unavailable);
            }
            Value::Text(Cow::Owned(s))
        }
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'[') if placeholder_array(text) => return Ok(Cell::Unavailable),
        _ => Value::Text(Cow::Owned(text.to_string())),
    }))
}

/// The placeholder base64-encoded (bytea columns without a schema; bytes with one).
fn is_placeholder_base64(s: &str) -> bool {
    s == "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="
}

/// An array holding only the placeholder (Debezium's form for an unchanged TOASTed array).
fn placeholder_array(text: &str) -> bool {
    match serde_json::from_str::<Vec<Json>>(text) {
        Ok(items) => !items.is_empty() && items.iter().all(|i| i.as_str().is_some_and(|s| s == PLACEHOLDER || is_placeholder_base64(s))),
        Err(_) => false,
    }
}

/// A field with its schema, decoded exactly.
pub fn typed(field: &str, raw: &RawValue, schema: &FieldSchema) -> Result<Cell, DecodeError> {
    let json: Json = serde_json::from_str(raw.get()).map_err(|e| bad(e.to_string()))?;
    if json.is_null() {
        return Ok(Cell::Value(Value::Null));
    }
    if let Some(s) = json.as_str() {
        if s == PLACEHOLDER || (schema.ty == "bytes" && is_placeholder_base64(s)) {
            return Ok(Cell::Unavailable);
        }
    }
    if schema.ty == "array" && placeholder_array(raw.get()) {
        return Ok(Cell::Unavailable);
    }
    let mismatch = || bad(format!("field \"{field}\": {} is not a value of type {}{}", raw.get(), schema.ty, schema.name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()));
    let int = || json.as_i64().ok_or_else(mismatch);
    let v = match schema.name.as_deref() {
        Some("org.apache.kafka.connect.data.Decimal") => match &json {
            // decimal.handling.mode=precise: base64 of the unscaled value, two's complement big-endian
            Json::String(s) => {
                let scale = schema.scale.ok_or_else(|| bad(format!("field \"{field}\": a Decimal without its scale parameter")))?;
                Value::Decimal { unscaled: unscaled(field, s)?, scale }
            }
            // the JSON converter's decimal.format=NUMERIC: the number as written
            Json::Number(_) => Value::Text(Cow::Owned(raw.get().trim().to_string())),
            _ => return Err(mismatch()),
        },
        Some("io.debezium.data.VariableScaleDecimal") => {
            let (Some(scale), Some(value)) = (json.get("scale").and_then(Json::as_i64), json.get("value").and_then(Json::as_str)) else {
                return Err(bad(format!("field \"{field}\": a VariableScaleDecimal needs \"scale\" and \"value\"")));
            };
            let scale = i32::try_from(scale).map_err(|_| mismatch())?;
            Value::Decimal { unscaled: unscaled(field, value)?, scale }
        }
        Some("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") => Value::DateDays(i32::try_from(int()?).map_err(|_| mismatch())?),
        Some("io.debezium.time.Time" | "org.apache.kafka.connect.data.Time") => Value::Text(Cow::Owned(time_text(int()?, 1_000_000))),
        Some("io.debezium.time.MicroTime") => Value::Text(Cow::Owned(time_text(int()?, 1_000))),
        Some("io.debezium.time.NanoTime") => Value::Text(Cow::Owned(time_text(int()?, 1))),
        Some("io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") => {
            Value::LocalTimestampMicros(int()?.checked_mul(1000).ok_or_else(mismatch)?)
        }
        Some("io.debezium.time.MicroTimestamp") => Value::LocalTimestampMicros(int()?),
        // nanoseconds to the nearest microsecond (PostgreSQL keeps microseconds)
        Some("io.debezium.time.NanoTimestamp") => Value::LocalTimestampMicros((int()? + 500).div_euclid(1000)),
        Some("io.debezium.time.MicroDuration") => Value::Text(Cow::Owned(format!("{} microseconds", int()?))),
        _ => match (schema.ty.as_str(), &json) {
            ("int8" | "int16" | "int32" | "int64", _) => Value::Int(int()?),
            ("float" | "double" | "float32" | "float64", Json::Number(n)) => Value::Float(n.as_f64().ok_or_else(mismatch)?),
            ("float" | "double" | "float32" | "float64", Json::String(s)) => Value::Float(match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => return Err(mismatch()),
            }),
            ("boolean", Json::Bool(b)) => Value::Bool(*b),
            ("string", Json::String(s)) => Value::Text(Cow::Owned(s.clone())),
            ("bytes", Json::String(s)) => Value::Bytes(Cow::Owned(base64(s).ok_or_else(|| bad(format!("field \"{field}\": bytes that are not base64")))?)),
            ("array" | "map" | "struct", _) => Value::Text(Cow::Owned(raw.get().trim().to_string())),
            _ => return Err(mismatch()),
        },
    };
    Ok(Cell::Value(v))
}

/// A decimal's base64 unscaled value (two's complement, big-endian) as i128: up to 38 digits.
fn unscaled(field: &str, b64: &str) -> Result<i128, DecodeError> {
    let bytes = base64(b64).ok_or_else(|| bad(format!("field \"{field}\": a decimal's value is not base64")))?;
    if bytes.is_empty() {
        return Ok(0);
    }
    let neg = bytes[0] & 0x80 != 0;
    let fill = if neg { 0xff } else { 0 };
    if bytes.len() > 16 {
        // longer than i128: only sign bytes may precede the last 16
        let (head, tail) = bytes.split_at(bytes.len() - 16);
        if head.iter().any(|&b| b != fill) || (tail[0] & 0x80 != 0) != neg {
            return Err(DecodeError::new("22003", format!("field \"{field}\": a decimal beyond 38 digits is not supported")));
        }
        let mut buf = [0u8; 16];
        buf.copy_from_slice(tail);
        return Ok(i128::from_be_bytes(buf));
    }
    let mut buf = [fill; 16];
    buf[16 - bytes.len()..].copy_from_slice(&bytes);
    Ok(i128::from_be_bytes(buf))
}

/// Standard base64 (padding optional); None when it is not.
pub fn base64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

/// A time of day from `n` units of `unit_ns` nanoseconds since midnight, as `HH:MM:SS.fraction`
/// (every digit kept: PostgreSQL rounds nanoseconds to microseconds as its input does).
fn time_text(n: i64, unit_ns: i64) -> String {
    let ns = i128::from(n) * i128::from(unit_ns);
    let (secs, frac) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    let hms = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    match unit_ns {
        1 => format!("{hms}.{frac:09}"),
        _ => format!("{hms}.{:06}", frac / 1000),
    }
}
