//! Metadata columns (consume_begin's `metadata`): which field of a message's metadata (Kafka:
//! topic, partition, offset, key, timestamp, headers; Kinesis: stream, shard_id, sequence_number,
//! partition_key, arrival_time) fills which column of the target relation, and how those values
//! are written after each row's data in the COPY encoding of the consumer's format.
//!
//! The mapping is checked against the relation's columns and their types (base type names from
//! pg_catalog, e.g. "int8", "timestamptz"), once at consume_begin and again by the worker for each
//! batch (the relation may have changed). Encoding a message's values writes into the caller's
//! reusable buffer: nothing is allocated per row or per message.

use crate::format::{CopyOptions, Format};
use crate::position::{Part, PosValues, SqlValue};
use std::fmt::Write as _;
use thiserror::Error;

/// Which system's fields a mapping may name: the one notion of a system, with its fields
/// (`System::metadata_fields`).
pub use crate::position::System;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("metadata must be a JSON object of field -> column")]
    NotAnObject,
    #[error("metadata field \"{0}\" must name a column (a JSON string)")]
    NotAColumnName(String),
    #[error("unknown metadata field \"{field}\" (the fields are {known})")]
    UnknownField { field: String, known: String },
    #[error("column \"{0}\" given in metadata does not exist or is generated")]
    UnknownColumn(String),
    #[error("column \"{0}\" is named more than once (metadata and columns fill distinct columns)")]
    DuplicateColumn(String),
    #[error("column \"{column}\" is of type {found}, which cannot hold metadata field \"{field}\" (use one of: {allowed})")]
    WrongType { field: String, column: String, found: String, allowed: String },
}

impl MetadataError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            MetadataError::NotAnObject | MetadataError::NotAColumnName(_) | MetadataError::UnknownField { .. } => "22023",
            MetadataError::UnknownColumn(_) => "42703",
            MetadataError::DuplicateColumn(_) => "42701",
            MetadataError::WrongType { .. } => "42804",
        }
    }
}

/// One metadata column: what of the message fills it (a column of its system's composite) and
/// whether it is bytea (a key or partition key then goes in as bytes, else as text that must be
/// UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaColumn {
    pub field: Part,
    pub column: String,
    pub bytea: bool,
}

/// A consumer's metadata columns (empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub columns: Vec<MetaColumn>,
}

pub use crate::headers::{headers_json, Headers};
use crate::headers::{emit_headers_json, HEX};

/// A message's metadata as the sources deliver it.
#[derive(Clone, Copy)]
pub struct MetaValues<'a> {
    /// The topic or stream.
    pub source: &'a str,
    /// The message's position: the values of its own columns.
    pub pos: &'a dyn PosValues,
    /// Kafka: the key; Kinesis: the partition key.
    pub key: Option<&'a [u8]>,
    pub timestamp_ms: Option<i64>,
    pub headers: Option<&'a Headers>,
}

/// How values are written into a COPY line: text format (with its delimiter) or csv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Text { delimiter: u8 },
    Csv { delimiter: u8, quote: u8, escape: u8 },
}

impl Encoding {
    /// The encoding of the COPY the workers run for a consumer (json and raw rows are text format).
    pub fn of(opts: &CopyOptions) -> Encoding {
        let byte = |v: &Option<String>, default: u8| v.as_ref().map(|s| s.as_bytes()[0]).unwrap_or(default);
        match opts.format {
            Format::Text => Encoding::Text { delimiter: byte(&opts.delimiter, b'\t') },
            Format::Csv => {
                let quote = byte(&opts.quote, b'"');
                Encoding::Csv { delimiter: byte(&opts.delimiter, b','), quote, escape: byte(&opts.escape, quote) }
            }
            // json, raw and the decoded formats: rows are written in text format
            _ => Encoding::Text { delimiter: b'\t' },
        }
    }

    fn delimiter(self) -> u8 {
        match self {
            Encoding::Text { delimiter } | Encoding::Csv { delimiter, .. } => delimiter,
        }
    }

    /// Appends NULL.
    fn null(self, out: &mut Vec<u8>) {
        if let Encoding::Text { .. } = self {
            out.extend_from_slice(b"\\N");
        }
        // csv: an unquoted empty field is NULL.
    }

    fn open(self, out: &mut Vec<u8>) {
        if let Encoding::Csv { quote, .. } = self {
            out.push(quote);
        }
    }

    fn close(self, out: &mut Vec<u8>) {
        self.open(out)
    }

    /// Appends bytes of a value (between `open` and `close`), escaped so COPY reads them back
    /// unchanged. Text: backslash escapes, the delimiter too (COPY takes `\` + any byte other than
    /// its escape letters and digits as that byte; text delimiters are never those). Csv: every
    /// value is quoted, quote and escape bytes inside it escaped.
    fn bytes(self, out: &mut Vec<u8>, value: &[u8]) {
        match self {
            Encoding::Text { delimiter } => {
                for &b in value {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        d if d == delimiter => out.extend_from_slice(&[b'\\', d]),
                        _ => out.push(b),
                    }
                }
            }
            Encoding::Csv { quote, escape, .. } => {
                for &b in value {
                    if b == quote || b == escape {
                        out.push(escape);
                    }
                    out.push(b);
                }
            }
        }
    }

    /// Appends a whole non-NULL value.
    fn value(self, out: &mut Vec<u8>, value: &[u8]) {
        self.open(out);
        self.bytes(out, value);
        self.close(out);
    }
}

/// A message whose metadata cannot go into its columns (a dead letter, as bad data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMetadata {
    pub error: String,
    pub sqlstate: &'static str,
}

/// A small fixed buffer for numbers and timestamps (no allocation).
struct Stack {
    buf: [u8; 48],
    len: usize,
}

impl Stack {
    fn new() -> Stack {
        Stack { buf: [0; 48], len: 0 }
    }
    fn get(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for Stack {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar (H. Hinnant's
/// civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Milliseconds since the Unix epoch as timestamptz input in UTC, e.g.
/// `2026-12-01 21:25:08.123+00` (years before 1 as PostgreSQL writes them, with ` BC`).
pub fn format_timestamp_ms(ms: i64, out: &mut impl std::fmt::Write) -> std::fmt::Result {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    let (year, bc) = if y <= 0 { (1 - y, " BC") } else { (y, "") };
    write!(out, "{year:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{milli:03}+00{bc}")
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

/// Whether a stored mapping (JSON text) has a headers column, so that the source must keep each
/// message's headers (true when it cannot be read: keeping them is never wrong).
pub fn maps_headers(json: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => map.contains_key("headers"),
        _ => true,
    }
}

impl Metadata {
    /// Parses a stored or given mapping (JSON text) against the relation's insertable columns,
    /// given as (name, base type name; "" for a type outside pg_catalog).
    pub fn parse(system: System, json: &str, columns: &[(String, String)]) -> Result<Metadata, MetadataError> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|_| MetadataError::NotAnObject)?;
        let map = value.as_object().ok_or(MetadataError::NotAnObject)?;
        let mut out = Metadata::default();
        for (field, column) in map {
            let column = column.as_str().ok_or_else(|| MetadataError::NotAColumnName(field.clone()))?;
            let f = system.metadata_fields().find(|c| c.name == field).ok_or_else(|| MetadataError::UnknownField {
                field: field.clone(),
                known: system.metadata_fields().map(|c| c.name).collect::<Vec<_>>().join(", "),
            })?;
            let typ = columns
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, t)| t.as_str())
                .ok_or_else(|| MetadataError::UnknownColumn(column.to_string()))?;
            if out.columns.iter().any(|c| c.column == column) {
                return Err(MetadataError::DuplicateColumn(column.to_string()));
            }
            if !f.metadata_types.contains(&typ) {
                return Err(MetadataError::WrongType {
                    field: field.clone(),
                    column: column.to_string(),
                    found: if typ.is_empty() { "a user-defined type".to_string() } else { typ.to_string() },
                    allowed: f.metadata_types.join(", "),
                });
            }
            out.columns.push(MetaColumn { field: f.part, column: column.to_string(), bytea: typ == "bytea" });
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn contains(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.column == column)
    }

    /// The metadata columns, in the order `encode` writes their values.
    pub fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.column.as_str())
    }

    /// Appends, for each metadata column, the delimiter and the message's value: the suffix of
    /// every row the message becomes. On error `out` may hold part of it (the caller drops it).
    pub fn encode(&self, m: &MetaValues, enc: Encoding, out: &mut Vec<u8>) -> Result<(), BadMetadata> {
        for c in &self.columns {
            out.push(enc.delimiter());
            let mut num = Stack::new();
            match c.field {
                Part::Source => enc.value(out, m.source.as_bytes()),
                Part::Pos(i) => match m.pos.value(i) {
                    SqlValue::Null => enc.null(out),
                    SqlValue::Int4(v) => {
                        let _ = write!(num, "{v}");
                        enc.value(out, num.get());
                    }
                    SqlValue::Int8(v) => {
                        let _ = write!(num, "{v}");
                        enc.value(out, num.get());
                    }
                    SqlValue::Text(t) => enc.value(out, t.as_bytes()),
                },
                Part::Key => match m.key {
                    None => enc.null(out),
                    Some(k) if c.bytea => {
                        enc.open(out);
                        enc.bytes(out, b"\\x");
                        push_hex(out, k);
                        enc.close(out);
                    }
                    Some(k) => {
                        if std::str::from_utf8(k).is_err() || k.contains(&0) {
                            return Err(BadMetadata {
                                error: format!(
                                    "the message key is not valid UTF-8 text (or holds a NUL byte), but its column \"{}\" is text; make it bytea to keep any key",
                                    c.column
                                ),
                                sqlstate: "22021",
                            });
                        }
                        enc.value(out, k);
                    }
                },
                Part::Timestamp => match m.timestamp_ms {
                    None => enc.null(out),
                    Some(ms) => {
                        let _ = format_timestamp_ms(ms, &mut num);
                        enc.value(out, num.get());
                    }
                },
                Part::Headers => {
                    enc.open(out);
                    emit_headers_json(m.headers.unwrap_or(&[]), &mut |b: &[u8]| enc.bytes(out, b));
                    enc.close(out);
                }
                // Never a metadata field.
                Part::Value => enc.null(out),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    const KAFKA: crate::position::KafkaPos = crate::position::KafkaPos { partition: 3, offset: 42 };

    fn values<'a>(pos: &'a dyn PosValues, key: Option<&'a [u8]>, headers: Option<&'a Headers>) -> MetaValues<'a> {
        MetaValues { source: "top\tic", pos, key, timestamp_ms: Some(1_764_624_308_123), headers }
    }

    #[test]
    fn mappings_are_checked_against_fields_columns_and_types() {
        let c = cols(&[("p", "int4"), ("o", "int8"), ("k", "bytea"), ("kt", "text"), ("ts", "timestamptz"), ("h", "jsonb"), ("small", "int2")]);
        let m = Metadata::parse(System::Kafka, r#"{"partition": "p", "offset": "o", "key": "k"}"#, &c).unwrap();
        assert_eq!(m.column_names().collect::<Vec<_>>(), vec!["k", "o", "p"]);
        assert!(m.columns[0].bytea);
        let err = |j: &str, s: System| Metadata::parse(s, j, &c).unwrap_err().sqlstate();
        assert_eq!(err(r#"{"nope": "p"}"#, System::Kafka), "22023");
        assert_eq!(err(r#"{"shard_id": "kt"}"#, System::Kafka), "22023");
        assert_eq!(err(r#"{"topic": "kt"}"#, System::Kinesis), "22023");
        assert_eq!(err(r#"{"topic": 1}"#, System::Kafka), "22023");
        assert_eq!(err(r#"["topic"]"#, System::Kafka), "22023");
        assert_eq!(err(r#"{"topic": "missing"}"#, System::Kafka), "42703");
        assert_eq!(err(r#"{"offset": "small"}"#, System::Kafka), "42804");
        assert_eq!(err(r#"{"offset": "p"}"#, System::Kafka), "42804");
        assert_eq!(err(r#"{"timestamp": "kt"}"#, System::Kafka), "42804");
        assert_eq!(err(r#"{"topic": "kt", "key": "kt"}"#, System::Kafka), "42701");
        assert!(Metadata::parse(System::Kinesis, r#"{"sequence_number": "kt", "arrival_time": "ts", "partition_key": "k"}"#, &c).is_ok());
    }

    #[test]
    fn text_encoding_escapes_values_and_the_delimiter() {
        let c = cols(&[("t", "text"), ("p", "int4"), ("o", "int8"), ("k", "text"), ("ts", "timestamptz")]);
        let m = Metadata::parse(System::Kafka, r#"{"topic": "t", "partition": "p", "offset": "o", "key": "k", "timestamp": "ts"}"#, &c).unwrap();
        let mut out = b"row".to_vec();
        m.encode(&values(&KAFKA, Some(b"a\\b|c"), None), Encoding::Text { delimiter: b'|' }, &mut out).unwrap();
        // in field name order: key, offset, partition, timestamp, topic
        assert_eq!(out, b"row|a\\\\b\\|c|42|3|2025-12-01 21:25:08.123+00|top\\tic".to_vec());
    }

    #[test]
    fn csv_encoding_quotes_every_value_and_leaves_null_unquoted() {
        let c = cols(&[("k", "text"), ("o", "int8")]);
        let m = Metadata::parse(System::Kafka, r#"{"key": "k", "offset": "o"}"#, &c).unwrap();
        let enc = Encoding::Csv { delimiter: b',', quote: b'"', escape: b'"' };
        let mut out = Vec::new();
        m.encode(&values(&KAFKA, Some(b"say \"hi\",\nok"), None), enc, &mut out).unwrap();
        assert_eq!(out, b",\"say \"\"hi\"\",\nok\",\"42\"".to_vec());
        out.clear();
        m.encode(&values(&KAFKA, None, None), enc, &mut out).unwrap();
        assert_eq!(out, b",,\"42\"".to_vec());
        let custom = Encoding::Csv { delimiter: b';', quote: b'\'', escape: b'\\' };
        out.clear();
        m.encode(&values(&KAFKA, Some(b"it's \\"), None), custom, &mut out).unwrap();
        assert_eq!(out, b";'it\\'s \\\\';'42'".to_vec());
    }

    #[test]
    fn keys_go_to_bytea_as_hex_and_to_text_only_as_utf8() {
        let c = cols(&[("kb", "bytea"), ("kt", "text")]);
        let b = Metadata::parse(System::Kafka, r#"{"key": "kb"}"#, &c).unwrap();
        let t = Metadata::parse(System::Kafka, r#"{"key": "kt"}"#, &c).unwrap();
        let key: &[u8] = b"\x00\\\xff";
        let mut out = Vec::new();
        b.encode(&values(&KAFKA, Some(key), None), Encoding::Text { delimiter: b'\t' }, &mut out).unwrap();
        assert_eq!(out, b"\t\\\\x005cff".to_vec());
        out.clear();
        b.encode(&values(&KAFKA, Some(key), None), Encoding::Csv { delimiter: b',', quote: b'"', escape: b'"' }, &mut out).unwrap();
        assert_eq!(out, b",\"\\x005cff\"".to_vec());
        let bad = t.encode(&values(&KAFKA, Some(key), None), Encoding::Text { delimiter: b'\t' }, &mut Vec::new()).unwrap_err();
        assert_eq!(bad.sqlstate, "22021");
        out.clear();
        t.encode(&values(&KAFKA, None, None), Encoding::Text { delimiter: b'\t' }, &mut out).unwrap();
        assert_eq!(out, b"\t\\N".to_vec());
    }

    #[test]
    fn headers_become_an_object_with_repeated_names_as_arrays() {
        let h = vec![
            ("a".to_string(), Some(b"1".to_vec())),
            ("b".to_string(), None),
            ("a".to_string(), Some(b"2\"\n".to_vec())),
            ("bin".to_string(), Some(vec![0xff, 0x00])),
            ("a".to_string(), None),
        ];
        let mut out = Vec::new();
        headers_json(&h, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a": ["1", "2\"\n", null], "b": null, "bin": {"hex": "ff00"}}"#
        );
        let mut out = Vec::new();
        headers_json(&[], &mut out);
        assert_eq!(out, b"{}");
        let mut out = Vec::new();
        headers_json(&[("c\u{1}".to_string(), Some(b"\x1f".to_vec()))], &mut out);
        assert_eq!(out, br#"{"c\u0001": "\u001f"}"#.to_vec());
        // In a text-format row the JSON's backslashes and newlines are escaped once more.
        let c = cols(&[("h", "jsonb")]);
        let m = Metadata::parse(System::Kafka, r#"{"headers": "h"}"#, &c).unwrap();
        let one = vec![("x".to_string(), Some(b"q\\".to_vec()))];
        let mut out = Vec::new();
        m.encode(&values(&KAFKA, None, Some(&one)), Encoding::Text { delimiter: b'\t' }, &mut out).unwrap();
        assert_eq!(out, b"\t{\"x\": \"q\\\\\\\\\"}".to_vec());
        // In csv, quoted, its quotes doubled.
        let mut out = Vec::new();
        m.encode(&values(&KAFKA, None, Some(&one)), Encoding::Csv { delimiter: b',', quote: b'"', escape: b'"' }, &mut out).unwrap();
        assert_eq!(out, b",\"{\"\"x\"\": \"\"q\\\\\"\"}\"".to_vec());
    }

    #[test]
    fn kinesis_fields() {
        let c = cols(&[("s", "text"), ("sh", "text"), ("seq", "numeric"), ("pk", "text"), ("at", "timestamptz")]);
        let m = Metadata::parse(
            System::Kinesis,
            r#"{"stream": "s", "shard_id": "sh", "sequence_number": "seq", "partition_key": "pk", "arrival_time": "at"}"#,
            &c,
        )
        .unwrap();
        let pos = crate::position::KinesisPos {
            shard: "shardId-000000000001".into(),
            at: crate::kinesis::seqnum::ShardPos {
                seq: crate::kinesis::seqnum::SeqNum::parse("49590338271490256608559692538361571095921575989136588898").unwrap(),
                sub: None,
            },
        };
        let mut out = Vec::new();
        m.encode(&values(&pos, Some(b"pk-1"), None), Encoding::Text { delimiter: b'\t' }, &mut out).unwrap();
        // field name order: arrival_time, partition_key, sequence_number, shard_id, stream
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\t2025-12-01 21:25:08.123+00\tpk-1\t49590338271490256608559692538361571095921575989136588898\tshardId-000000000001\ttop\\tic"
        );
    }

    #[test]
    fn timestamps_in_utc_across_eras() {
        let f = |ms: i64| {
            let mut s = String::new();
            format_timestamp_ms(ms, &mut s).unwrap();
            s
        };
        assert_eq!(f(0), "1970-01-01 00:00:00.000+00");
        assert_eq!(f(-1), "1969-12-31 23:59:59.999+00");
        assert_eq!(f(951_782_400_000), "2000-02-29 00:00:00.000+00");
        assert_eq!(f(-62_135_596_800_001), "0001-12-31 23:59:59.999+00 BC");
        assert_eq!(f(253_402_300_799_999), "9999-12-31 23:59:59.999+00");
    }
}
