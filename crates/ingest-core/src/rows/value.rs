//! What a decoder hands the row model: one `Value` per target column, and the error PostgreSQL's
//! input function would have raised for it.

use std::borrow::Cow;
use std::fmt;

/// One field of a decoded message, addressed by its target column. Text formats (csv, text,
/// json) yield `Text` (a borrowed slice of the message when no unescaping was needed); typed
/// formats (Avro, Protobuf, Debezium with its schema) yield the typed variants.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    /// The text PostgreSQL's input function would get (COPY text after unescaping).
    Text(Cow<'a, str>),
    Bool(bool),
    /// Avro int/long, Protobuf int32/int64/sint/sfixed, JSON integers of a typed schema.
    Int(i64),
    /// Protobuf uint64 / fixed64 above i64::MAX.
    UInt(u64),
    /// Avro float (widened exactly) and double, Protobuf float/double.
    Float(f64),
    /// Avro decimal (bytes/fixed, two's complement big-endian unscaled) up to 38 digits, Debezium's
    /// base64 decimal: value = unscaled * 10^-scale.
    Decimal { unscaled: i128, scale: i32 },
    /// Avro bytes/fixed, Protobuf bytes.
    Bytes(Cow<'a, [u8]>),
    /// Avro date: days since 1970-01-01.
    DateDays(i32),
    /// Avro timestamp-micros / google.protobuf.Timestamp: an instant, microseconds since
    /// 1970-01-01 00:00:00 UTC (timestamptz; into a timestamp column it is that UTC wall time).
    TimestampMicros(i64),
    /// Avro local-timestamp-micros: a wall-clock time, microseconds since 1970-01-01 00:00:00.
    LocalTimestampMicros(i64),
}

impl Value<'_> {
    /// The text a text path would hand PostgreSQL for this value (None for NULL): the same text
    /// the json format writes for a JSON scalar, so a typed value and its JSON twin load the same.
    pub fn to_text(&self) -> Option<Cow<'_, str>> {
        Some(match self {
            Value::Null => return None,
            Value::Text(s) => Cow::Borrowed(s.as_ref()),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Int(i) => Cow::Owned(i.to_string()),
            Value::UInt(u) => Cow::Owned(u.to_string()),
            Value::Float(f) => Cow::Owned(float_text(*f)),
            Value::Decimal { unscaled, scale } => Cow::Owned(decimal_text(*unscaled, *scale)),
            Value::Bytes(b) => {
                let mut s = String::with_capacity(2 + 2 * b.len());
                s.push_str("\\x");
                for byte in b.iter() {
                    s.push_str(&format!("{byte:02x}"));
                }
                Cow::Owned(s)
            }
            Value::DateDays(d) => Cow::Owned(super::calendar::date_text(i64::from(*d))),
            Value::TimestampMicros(t) => Cow::Owned(super::calendar::timestamp_text(*t, true)),
            Value::LocalTimestampMicros(t) => Cow::Owned(super::calendar::timestamp_text(*t, false)),
        })
    }
}

/// The shortest text that reads back as exactly `f` (Rust's `{}` of f64 is shortest-roundtrip),
/// with PostgreSQL's spellings of the special values.
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f}")
    }
}

/// `unscaled * 10^-scale` as plain decimal text (`-12.50` for (-1250, 2), `1200` for (12, -2)).
pub fn decimal_text(unscaled: i128, scale: i32) -> String {
    let neg = unscaled < 0;
    let mut digits = unscaled.unsigned_abs().to_string();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        if digits != "0" {
            out.extend(std::iter::repeat_n('0', (-scale) as usize));
        }
        return out;
    }
    let scale = scale as usize;
    if digits.len() <= scale {
        digits = "0".repeat(scale + 1 - digits.len()) + &digits;
    }
    let (int, frac) = digits.split_at(digits.len() - scale);
    out.push_str(int);
    out.push('.');
    out.push_str(frac);
    out
}

/// An error PostgreSQL's input function (or receive/range check) raises for a value: same
/// SQLSTATE, same message and DETAIL, so a message failing here is the dead letter the text
/// path would have made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvError {
    pub sqlstate: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

impl ConvError {
    pub fn new(sqlstate: &'static str, message: impl Into<String>) -> ConvError {
        ConvError { sqlstate, message: message.into(), detail: None }
    }

    /// The message with its DETAIL in parentheses, as a dead letter shows an error COPY raised.
    pub fn message_with_detail(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} ({d})", self.message),
            None => self.message.clone(),
        }
    }

    /// 22P02 `invalid input syntax for type T: "input"`.
    pub fn syntax(type_name: &str, input: &str) -> ConvError {
        ConvError::new("22P02", format!("invalid input syntax for type {type_name}: \"{input}\""))
    }

    /// 22003 `value "input" is out of range for type T` (the integer types).
    pub fn int_range(type_name: &str, input: &str) -> ConvError {
        ConvError::new("22003", format!("value \"{input}\" is out of range for type {type_name}"))
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> ConvError {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for ConvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.sqlstate)?;
        if let Some(d) = &self.detail {
            write!(f, " DETAIL: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConvError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_have_the_text_of_their_json_twin() {
        assert_eq!(decimal_text(-1250, 2), "-12.50");
        assert_eq!(decimal_text(5, 3), "0.005");
        assert_eq!(decimal_text(-5, 1), "-0.5");
        assert_eq!(decimal_text(12, -2), "1200");
        assert_eq!(decimal_text(0, -2), "0");
        assert_eq!(float_text(0.1), "0.1");
        assert_eq!(float_text(-0.0), "-0");
        assert_eq!(float_text(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(Value::Bytes(Cow::Borrowed(&[0, 255])).to_text().unwrap(), "\\x00ff");
        assert_eq!(Value::Null.to_text(), None);
    }
}
