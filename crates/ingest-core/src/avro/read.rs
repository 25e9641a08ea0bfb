//! Avro's binary encoding read with the writer's schema: top-level fields become [`Value`]s
//! (borrowing strings and bytes from the message), nested records, maps and arrays become JSON
//! text (or a PostgreSQL array literal for an array column).
//!
//! Hostile bodies cannot make it loop or recurse without bound: nesting is capped
//! (`MAX_DEPTH`), and the items of all arrays and maps of a message are counted against a budget
//! of its length plus `ITEM_ALLOWANCE` (an item of a non-empty type takes at least one byte).

use super::schema::{Node, Schema};
use super::text;
pub(crate) use super::text::corrupt;
use crate::decode::DecodeError;
use crate::rows::Value;
use std::borrow::Cow;

/// Nesting deeper than this (records in records, arrays in arrays...) is refused.
pub(crate) const MAX_DEPTH: usize = 100;
/// Zero-byte items (nulls, empty records) a message may hold beyond one per byte.
const ITEM_ALLOWANCE: usize = 1 << 16;

/// A record's field as `record_or_null` reads it: name, value, whether its type is an array.
pub(crate) type Field<'s, 'm> = (&'s str, Value<'m>, bool);

pub(crate) struct Reader<'m, 's> {
    buf: &'m [u8],
    pos: usize,
    items_left: usize,
    schema: &'s Schema,
}

/// A corrupt body: 22P03, as COPY BINARY's own "incorrect binary data format" errors.

impl<'m, 's> Reader<'m, 's> {
    pub(crate) fn new(buf: &'m [u8], schema: &'s Schema) -> Self {
        Reader { buf, pos: 0, items_left: buf.len() + ITEM_ALLOWANCE, schema }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn node(&self, i: usize) -> &'s Node {
        &self.schema.nodes[i]
    }

    fn take(&mut self, n: usize) -> Result<&'m [u8], DecodeError> {
        if n > self.remaining() {
            return Err(corrupt(format!("the body ends early: {n} bytes needed at byte {}, {} left", self.pos, self.remaining())));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// A zigzag varint long.
    pub(crate) fn long(&mut self) -> Result<i64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(corrupt(format!("the body ends inside a number at byte {}", self.pos)));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(corrupt(format!("a number longer than 64 bits at byte {}", self.pos - 1)));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
            }
        }
        Err(corrupt(format!("a number longer than 10 bytes at byte {}", self.pos)))
    }

    fn int(&mut self) -> Result<i32, DecodeError> {
        let at = self.pos;
        let v = self.long()?;
        i32::try_from(v).map_err(|_| corrupt(format!("an int out of range ({v}) at byte {at}")))
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.long()?;
        usize::try_from(n).map_err(|_| corrupt(format!("a negative length ({n}) at byte {at}")))
    }

    fn bytes(&mut self) -> Result<&'m [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'m str, DecodeError> {
        let at = self.pos;
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|e| {
            DecodeError::new("22021", format!("invalid byte sequence for encoding \"UTF8\" in the string at byte {at}: {e}"))
        })
    }

    /// Reads a union's branch index (when `node` is a union) and returns the node to read.
    fn branch(&mut self, node: usize) -> Result<usize, DecodeError> {
        match self.node(node) {
            Node::Union(branches) => {
                let at = self.pos;
                let i = self.long()?;
                usize::try_from(i).ok().and_then(|i| branches.get(i).copied()).ok_or_else(|| {
                    corrupt(format!("union branch index {i} at byte {at} is out of range (the union has {} branches)", branches.len()))
                })
            }
            _ => Ok(node),
        }
    }

    /// The count of the next block of an array or map (0 = the end).
    fn block(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.long()?;
        let count = if n < 0 {
            self.long()?; // the block's size in bytes, for skipping: not needed
            n.unsigned_abs()
        } else {
            n as u64
        };
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > self.items_left {
            return Err(corrupt(format!("a block of {count} items at byte {at} is more than the body can hold")));
        }
        self.items_left -= count;
        Ok(count)
    }

    /// A top-level field's value; `array_literal`: an array is written as a PostgreSQL array
    /// literal (the column is an array), else as JSON.
    pub(crate) fn value(&mut self, node: usize, array_literal: bool, depth: usize) -> Result<Value<'m>, DecodeError> {
        let node = self.branch(node)?;
        Ok(match self.node(node) {
            Node::Null => Value::Null,
            Node::Boolean => match self.take(1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(corrupt(format!("a boolean byte {b} at byte {}", self.pos - 1))),
            },
            Node::Int => Value::Int(i64::from(self.int()?)),
            Node::Long => Value::Int(self.long()?),
            Node::Float => Value::Float(f64::from(f32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))),
            Node::Double => Value::Float(f64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default())),
            Node::Bytes | Node::Fixed(_) => Value::Bytes(Cow::Borrowed(self.raw(node)?)),
            Node::String => Value::Text(Cow::Borrowed(self.string()?)),
            Node::Uuid => Value::Text(Cow::Borrowed(self.string()?)),
            Node::Date => Value::DateDays(self.int()?),
            Node::TimeMillis => Value::Text(text::time(i64::from(self.int()?) * 1000)?.into()),
            Node::TimeMicros => Value::Text(text::time(self.long()?)?.into()),
            Node::TimestampMillis => Value::TimestampMicros(millis(self.long()?)?),
            Node::TimestampMicros => Value::TimestampMicros(self.long()?),
            Node::LocalTimestampMillis => Value::LocalTimestampMicros(millis(self.long()?)?),
            Node::LocalTimestampMicros => Value::LocalTimestampMicros(self.long()?),
            // nanoseconds to the nearest microsecond (PostgreSQL keeps microseconds)
            Node::LocalTimestampNanos => Value::LocalTimestampMicros(self.long()?.saturating_add(500).div_euclid(1000)),
            Node::TimeNanos => {
                let ns = self.long()?;
                Value::Text(format!("{}{:03}", text::time(ns.div_euclid(1000))?, ns.rem_euclid(1000)).into())
            }
            Node::MicroDuration => Value::Text(format!("{} microseconds", self.long()?).into()),
            Node::VariableScaleDecimal => {
                let scale = self.int()?;
                text::decimal_value(self.bytes()?, scale)
            }
            Node::FixedUuid => Value::Text(text::uuid(self.take(16)?).into()),
            Node::Duration => Value::Text(text::duration(self.take(12)?).into()),
            Node::Decimal { scale, .. } => {
                let b = self.raw(node)?;
                text::decimal_value(b, *scale)
            }
            Node::Enum(symbols) => Value::Text(Cow::Owned(self.symbol(symbols)?.to_string())),
            Node::Array(items) if array_literal => {
                let mut out = String::new();
                self.array_literal(*items, &mut out, depth + 1)?;
                Value::Text(out.into())
            }
            Node::Array(_) | Node::Map(_) | Node::Record(_) => {
                let mut out = String::new();
                self.json(node, &mut out, depth)?;
                Value::Text(out.into())
            }
            Node::Union(_) => return Err(corrupt("a union directly inside a union")),
        })
    }

    /// A record (through a union) as its fields' values, or None for a null: each field with
    /// whether its type is an array (arrays are JSON text, as nested values are).
    pub(crate) fn record_or_null(&mut self, node: usize, depth: usize) -> Result<Option<Vec<Field<'s, 'm>>>, DecodeError> {
        let node = self.branch(node)?;
        match self.node(node) {
            Node::Null => Ok(None),
            Node::Record(fields) => {
                let depth = Self::deeper(depth)?;
                let mut out = Vec::with_capacity(fields.len());
                for (name, f) in fields {
                    let array = match self.node(*f) {
                        Node::Array(_) => true,
                        Node::Union(b) => b.iter().any(|i| matches!(self.node(*i), Node::Array(_))),
                        _ => false,
                    };
                    let v = self.value(*f, false, depth).map_err(|e| DecodeError::new(e.sqlstate, format!("field \"{name}\": {}", e.message)))?;
                    out.push((name.as_str(), v, array));
                }
                Ok(Some(out))
            }
            other => Err(DecodeError::new("22P02", format!("a {} where a record or null was expected", other.kind()))),
        }
    }

    /// The bytes of a bytes or fixed node.
    fn raw(&mut self, node: usize) -> Result<&'m [u8], DecodeError> {
        match self.node(node) {
            Node::Fixed(n) | Node::Decimal { fixed: Some(n), .. } => self.take(*n),
            _ => self.bytes(),
        }
    }

    fn symbol<'x>(&mut self, symbols: &'x [String]) -> Result<&'x str, DecodeError> {
        let at = self.pos;
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .and_then(|i| symbols.get(i))
            .map(String::as_str)
            .ok_or_else(|| corrupt(format!("enum index {i} at byte {at} is out of range (the enum has {} symbols)", symbols.len())))
    }

    fn deeper(depth: usize) -> Result<usize, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError::new("54001", format!("the value nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(depth + 1)
    }

    /// `node`'s value as JSON: records and maps as objects, arrays as arrays, unions as the
    /// branch's value, numbers as numbers (decimals with every digit), everything else as the
    /// string its column would read (dates, times, timestamps in ISO form, bytes as `\x` hex).
    pub(crate) fn json(&mut self, node: usize, out: &mut String, depth: usize) -> Result<(), DecodeError> {
        let depth = Self::deeper(depth)?;
        let node = self.branch(node)?;
        match self.node(node) {
            Node::Record(fields) => {
                out.push('{');
                for (k, (name, f)) in fields.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    text::json_string(name, out);
                    out.push(':');
                    self.json(*f, out, depth)?;
                }
                out.push('}');
            }
            Node::Map(values) => {
                out.push('{');
                let mut first = true;
                loop {
                    let n = self.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        let key = self.string()?;
                        text::json_string(key, out);
                        out.push(':');
                        self.json(*values, out, depth)?;
                    }
                }
                out.push('}');
            }
            Node::Array(items) => {
                out.push('[');
                let mut first = true;
                loop {
                    let n = self.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        if !first {
                            out.push(',');
                        }
                        first = false;
                        self.json(*items, out, depth)?;
                    }
                }
                out.push(']');
            }
            Node::Enum(symbols) => text::json_string(self.symbol(symbols)?, out),
            other => {
                let is_decimal = matches!(other, Node::Decimal { .. });
                match self.value(node, false, depth)? {
                    Value::Null => out.push_str("null"),
                    Value::Bool(b) => out.push_str(if b { "true" } else { "false" }),
                    Value::Int(i) => out.push_str(&i.to_string()),
                    Value::Float(f) if f.is_finite() => out.push_str(&crate::rows::float_text(f)),
                    // A decimal is a JSON number with every digit (jsonb keeps them all).
                    v if is_decimal => out.push_str(&v.to_text().unwrap_or_default()),
                    v => text::json_string(&v.to_text().unwrap_or_default(), out),
                }
            }
        }
        Ok(())
    }

    /// An array's value as a PostgreSQL array literal: `{"1","2",NULL}` (every element quoted,
    /// nested arrays as nested braces, records and maps as their JSON text).
    fn array_literal(&mut self, items: usize, out: &mut String, depth: usize) -> Result<(), DecodeError> {
        let depth = Self::deeper(depth)?;
        out.push('{');
        let mut first = true;
        loop {
            let n = self.block()?;
            if n == 0 {
                break;
            }
            for _ in 0..n {
                if !first {
                    out.push(',');
                }
                first = false;
                let item = self.branch(items)?;
                match self.node(item) {
                    Node::Array(inner) => self.array_literal(*inner, out, depth)?,
                    _ => match self.value(item, false, depth)?.to_text() {
                        None => out.push_str("NULL"),
                        Some(t) => text::array_element(&t, out),
                    },
                }
            }
        }
        out.push('}');
        Ok(())
    }
}

/// Milliseconds -> microseconds, or 22008 when that overflows.
fn millis(ms: i64) -> Result<i64, DecodeError> {
    ms.checked_mul(1000)
        .ok_or_else(|| DecodeError::new("22008", format!("timestamp {ms} ms is out of range")))
}
