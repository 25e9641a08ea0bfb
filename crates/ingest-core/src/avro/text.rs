//! The texts of Avro values that have no `Value` of their own (time of day, uuid, duration,
//! decimals beyond 38 digits), and JSON / array-literal quoting.

use crate::decode::DecodeError;
use crate::rows::{decimal_text, Value};
use std::fmt::Write;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Microseconds after midnight as `HH:MM:SS.ffffff` (24:00:00 is PostgreSQL's end of day);
/// 22008 outside a day.
pub(crate) fn time(micros: i64) -> Result<String, DecodeError> {
    if !(0..=MICROS_PER_DAY).contains(&micros) {
        return Err(DecodeError::new("22008", format!("time of day {micros} µs is outside 00:00:00-24:00:00")));
    }
    let (s, f) = (micros / 1_000_000, micros % 1_000_000);
    Ok(format!("{:02}:{:02}:{:02}.{f:06}", s / 3600, s / 60 % 60, s % 60))
}

/// 16 bytes as a UUID's text.
pub(crate) fn uuid(b: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

/// Avro's duration (months, days, milliseconds; little-endian unsigned 32-bit each) as interval
/// input text that reads back exactly: `1 months 2 days 3 ms`.
pub(crate) fn duration(b: &[u8]) -> String {
    let n = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    format!("{} months {} days {} ms", n(0), n(4), n(8))
}

/// The decimal whose unscaled value is `b` (two's complement, big-endian): `Value::Decimal` up to
/// 38 digits, beyond that `Value::Text` of the exact decimal.
pub(crate) fn decimal_value(b: &[u8], scale: i32) -> Value<'static> {
    let neg = b.first().is_some_and(|x| x & 0x80 != 0);
    let mut s = b;
    while s.len() > 1 && ((s[0] == 0 && s[1] & 0x80 == 0) || (s[0] == 0xff && s[1] & 0x80 != 0)) {
        s = &s[1..];
    }
    if s.len() <= 16 {
        let mut v: i128 = if neg { -1 } else { 0 };
        for &byte in s {
            v = (v << 8) | i128::from(byte);
        }
        if v.unsigned_abs() < 10u128.pow(38) {
            return Value::Decimal { unscaled: v, scale };
        }
        return Value::Text(decimal_text(v, scale).into());
    }
    // The magnitude, then its digits through base-10^9 limbs (least significant first).
    let mut mag: Vec<u8> = s.to_vec();
    if neg {
        for x in mag.iter_mut() {
            *x = !*x;
        }
        for x in mag.iter_mut().rev() {
            let (y, carry) = x.overflowing_add(1);
            *x = y;
            if !carry {
                break;
            }
        }
    }
    let mut limbs: Vec<u32> = Vec::new();
    for &byte in &mag {
        let mut carry = u64::from(byte);
        for l in limbs.iter_mut() {
            let v = u64::from(*l) * 256 + carry;
            *l = (v % 1_000_000_000) as u32;
            carry = v / 1_000_000_000;
        }
        while carry > 0 {
            limbs.push((carry % 1_000_000_000) as u32);
            carry /= 1_000_000_000;
        }
    }
    let mut digits = match limbs.last() {
        Some(top) => top.to_string(),
        None => "0".to_string(),
    };
    for l in limbs.iter().rev().skip(1) {
        let _ = write!(digits, "{l:09}");
    }
    Value::Text(scaled(neg, digits, scale).into())
}

/// `digits * 10^-scale` as plain decimal text.
fn scaled(neg: bool, mut digits: String, scale: i32) -> String {
    let mut out = String::with_capacity(digits.len() + 3);
    if neg {
        out.push('-');
    }
    if scale <= 0 {
        out.push_str(&digits);
        if digits != "0" {
            out.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
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

/// `s` as a JSON string.
pub(crate) fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One element of an array literal, always quoted (so any text is one element).
pub(crate) fn array_element(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Not a record at the top: such messages cannot fill columns by name.
pub(crate) fn not_a_record(id: u32, kind: &str) -> DecodeError {
    DecodeError::new("0A000", format!("schema id {id} is an Avro {kind}, not a record: avro consumers read records, whose fields fill the columns of the same name"))
}

/// Bytes after the record.
pub(crate) fn trailing(id: u32, n: usize) -> DecodeError {
    corrupt(format!("invalid Avro body for schema id {id}: {n} bytes after the end of the record"))
}

/// A body that does not decode with its schema (22P03).
pub(crate) fn corrupt(what: impl Into<String>) -> DecodeError {
    DecodeError::new("22P03", what)
}
