//! The `json` format: one JSON object per message (or an array of objects), each object one row.
//!
//! Fields are matched to the relation's columns by exact name. A field that matches no column is
//! ignored; a column with no field takes its default (the row is sent to COPY without that
//! column); a field that is JSON `null` sets NULL. Strings go in as their text, numbers and
//! booleans as their JSON spelling, objects and arrays as JSON text (so json/jsonb columns get the
//! nested value). Consecutive rows with the same set of columns share one COPY.
//!
//! Field values are kept as the message's own bytes (`RawValue`), never as parsed numbers: a
//! number reaches PostgreSQL exactly as written (`123456789012345678901234567890`, `1e400`, `-0`,
//! `1.0`), and so does every number inside a nested object or array. PostgreSQL's input function
//! for the column then takes it or rejects it (a dead letter), instead of an f64 rounding it.

use crate::format::push_text_field;
use serde_json::value::RawValue;
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum JsonError {
    #[error("invalid JSON: {0}")]
    Invalid(String),
    #[error("a JSON message must be an object or an array of objects, found {0}")]
    NotAnObject(&'static str),
    #[error("no field of the JSON object matches a column of the target relation")]
    NoMatchingField,
}

/// One JSON object: its fields' values as they appear in the message. For a repeated field name
/// the last one counts (as in jsonb).
pub type Object<'a> = HashMap<String, &'a RawValue>;

/// What kind of JSON value `raw` is, from its first byte (a `RawValue` is valid JSON, trimmed).
fn kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

fn invalid(e: serde_json::Error) -> JsonError {
    JsonError::Invalid(e.to_string())
}

fn object(raw: &RawValue) -> Result<Object<'_>, JsonError> {
    match kind(raw) {
        "an object" => serde_json::from_str(raw.get()).map_err(invalid),
        other => Err(JsonError::NotAnObject(other)),
    }
}

/// The objects of one message, in order. A zero-length message holds none (as in text and csv).
pub fn message_objects(msg: &[u8]) -> Result<Vec<Object<'_>>, JsonError> {
    if msg.is_empty() {
        return Ok(Vec::new());
    }
    let top: &RawValue = serde_json::from_slice(msg).map_err(invalid)?;
    match kind(top) {
        "an array" => {
            let items: Vec<&RawValue> = serde_json::from_str(top.get()).map_err(invalid)?;
            items.into_iter().map(object).collect()
        }
        _ => Ok(vec![object(top)?]),
    }
}

/// One JSON object's fields in message order, keys borrowed from the message when they hold no
/// escape: the fast path's view of an object (rows::fast), read in one pass without hashing.
/// For a repeated name the last one counts, as in [`Object`].
#[derive(Debug, Default)]
pub struct Fields<'a>(pub Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// The value of field `name` (the last of that name).
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// A map key, borrowed when the message spells it without escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Fields<'de>, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some((k, v)) = m.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The objects of one message as [`Fields`], or None when the message is not an object or an
/// array of objects of valid JSON (then [`message_objects`] gives the error the text path gives).
pub fn message_fields(msg: &[u8]) -> Option<Vec<Fields<'_>>> {
    let first = msg.iter().find(|b| !b.is_ascii_whitespace())?;
    match first {
        b'{' => serde_json::from_slice::<Fields>(msg).ok().map(|f| vec![f]),
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_slice(msg).ok()?;
            items
                .into_iter()
                .map(|i| match kind(i) {
                    "an object" => serde_json::from_str::<Fields>(i.get()).ok(),
                    _ => None,
                })
                .collect()
        }
        _ => None,
    }
}

/// Rows that go to the relation in one COPY: the columns named, and text-format lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroup {
    /// Indexes into the relation's column list, in COPY column order.
    pub columns: Vec<usize>,
    pub data: Vec<u8>,
    pub rows: usize,
}

/// Builds COPY groups from JSON rows, for a relation whose insertable columns are `columns`.
#[derive(Debug, Default)]
pub struct JsonRowEncoder {
    pub groups: Vec<RowGroup>,
}

impl JsonRowEncoder {
    /// Converts one message; on error nothing of the message is kept.
    pub fn push_message(&mut self, msg: &[u8], columns: &[String]) -> Result<usize, JsonError> {
        self.push_message_with(msg, columns, &[])
    }

    /// As `push_message`, with `suffix` (metadata columns' values, each after a tab) at the end
    /// of every row; the group's `columns` do not name them (the caller appends their indexes).
    pub fn push_message_with(&mut self, msg: &[u8], columns: &[String], suffix: &[u8]) -> Result<usize, JsonError> {
        let objects = message_objects(msg)?;
        let mut encoded = Vec::with_capacity(objects.len());
        for obj in &objects {
            let present: Vec<usize> =
                columns.iter().enumerate().filter(|(_, c)| obj.contains_key(c.as_str())).map(|(i, _)| i).collect();
            if present.is_empty() {
                return Err(JsonError::NoMatchingField);
            }
            let mut line = Vec::new();
            for (n, &ci) in present.iter().enumerate() {
                if n > 0 {
                    line.push(b'\t');
                }
                push_json_value(&mut line, obj[columns[ci].as_str()])?;
            }
            line.extend_from_slice(suffix);
            line.push(b'\n');
            encoded.push((present, line));
        }
        let n = encoded.len();
        for (present, line) in encoded {
            match self.groups.last_mut() {
                Some(g) if g.columns == present => {
                    g.data.extend_from_slice(&line);
                    g.rows += 1;
                }
                _ => self.groups.push(RowGroup { columns: present, data: line, rows: 1 }),
            }
        }
        Ok(n)
    }
}

/// Appends one field as a text-format COPY value: strings unescaped, everything else (numbers,
/// booleans, nested objects and arrays) as its JSON text exactly as it stands in the message.
fn push_json_value(buf: &mut Vec<u8>, v: &RawValue) -> Result<(), JsonError> {
    match kind(v) {
        "null" => buf.extend_from_slice(b"\\N"),
        "a string" => {
            let s: String = serde_json::from_str(v.get()).map_err(invalid)?;
            push_text_field(buf, &s);
        }
        _ => push_text_field(buf, v.get()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn objects_become_rows_matched_by_name() {
        let mut enc = JsonRowEncoder::default();
        let c = cols(&["id", "name", "doc"]);
        assert_eq!(enc.push_message(br#"{"name":"a\tb\nc","id":1,"doc":{"x":[1,2]},"extra":5}"#, &c), Ok(1));
        assert_eq!(enc.groups.len(), 1);
        assert_eq!(enc.groups[0].columns, vec![0, 1, 2]);
        assert_eq!(enc.groups[0].data, b"1\ta\\tb\\nc\t{\"x\":[1,2]}\n".to_vec());
    }

    #[test]
    fn absent_fields_split_groups_and_nulls_stay_null() {
        let mut enc = JsonRowEncoder::default();
        let c = cols(&["id", "name"]);
        enc.push_message(br#"[{"id":1,"name":null},{"id":2,"name":"b"},{"id":3}]"#, &c).unwrap();
        enc.push_message(br#"{"id":4}"#, &c).unwrap();
        assert_eq!(enc.groups.len(), 2);
        assert_eq!(enc.groups[0].data, b"1\t\\N\n2\tb\n".to_vec());
        assert_eq!(enc.groups[0].rows, 2);
        assert_eq!(enc.groups[1].columns, vec![0]);
        assert_eq!(enc.groups[1].data, b"3\n4\n".to_vec());
        assert_eq!(enc.groups[1].rows, 2);
    }

    #[test]
    fn bad_messages_are_errors_and_leave_nothing_behind() {
        let mut enc = JsonRowEncoder::default();
        let c = cols(&["id"]);
        assert!(matches!(enc.push_message(b"{not json", &c), Err(JsonError::Invalid(_))));
        assert_eq!(enc.push_message(b"42", &c), Err(JsonError::NotAnObject("a number")));
        assert_eq!(enc.push_message(br#"[{"id":1},3]"#, &c), Err(JsonError::NotAnObject("a number")));
        assert_eq!(enc.push_message(br#"{"other":1}"#, &c), Err(JsonError::NoMatchingField));
        assert_eq!(enc.push_message(b"[]", &c), Ok(0));
        assert!(enc.groups.is_empty());
        assert_eq!(enc.push_message(br#"{"id":true}"#, &c), Ok(1));
        assert_eq!(enc.groups[0].data, b"true\n".to_vec());
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        // Issue 11 item 6: an f64 turned these into 123456789012345680000000000000 and
        // 0.12345678901234568; 1e400 did not parse at all.
        let mut enc = JsonRowEncoder::default();
        let c = cols(&["n", "d", "big", "neg", "one", "doc"]);
        let msg = br#"{"n": 123456789012345678901234567890, "d": 0.1234567890123456789, "big": 1e400,
                       "neg": -0, "one": 1.0, "doc": {"x": [123456789012345678901234567890, 1.0, -0, 1E+2]}}"#;
        assert_eq!(enc.push_message(msg, &c), Ok(1));
        assert_eq!(
            String::from_utf8(enc.groups[0].data.clone()).unwrap(),
            "123456789012345678901234567890\t0.1234567890123456789\t1e400\t-0\t1.0\t\
             {\"x\": [123456789012345678901234567890, 1.0, -0, 1E+2]}\n"
        );
    }

    #[test]
    fn nested_values_are_their_source_text_escaped_for_copy() {
        let mut enc = JsonRowEncoder::default();
        let c = cols(&["doc", "s"]);
        // A newline and a tab between tokens must not split the COPY line; the string escapes
        // inside the nested value stay JSON escapes; top-level strings are unescaped.
        assert_eq!(enc.push_message(b"{\"doc\": {\"a\":\n\t\"x\\ty\"}, \"s\": \"p\\\\q\"}", &c), Ok(1));
        assert_eq!(enc.groups[0].data, b"{\"a\":\\n\\t\"x\\\\ty\"}\tp\\\\q\n".to_vec());
    }

    #[test]
    fn whitespace_around_values_is_not_part_of_them() {
        let mut enc = JsonRowEncoder::default();
        let c = cols(&["id", "doc"]);
        assert_eq!(enc.push_message(b" \n[ {\"id\" :  1 \n, \"doc\":\t[1 , 2]\t} ,\n{\"id\":2} ]\n ", &c), Ok(2));
        assert_eq!(enc.groups[0].data, b"1\t[1 , 2]\n".to_vec());
        assert_eq!(enc.groups[1].data, b"2\n".to_vec());
    }

    #[test]
    fn repeated_field_names_take_the_last_value() {
        let mut enc = JsonRowEncoder::default();
        assert_eq!(enc.push_message(br#"{"id": 1, "id": 2}"#, &cols(&["id"])), Ok(1));
        assert_eq!(enc.groups[0].data, b"2\n".to_vec());
    }

    #[test]
    fn a_suffix_ends_every_row() {
        let mut enc = JsonRowEncoder::default();
        assert_eq!(enc.push_message_with(br#"[{"id": 1}, {"id": 2}]"#, &cols(&["id"]), b"\t7"), Ok(2));
        assert_eq!(enc.groups[0].data, b"1\t7\n2\t7\n".to_vec());
        assert_eq!(enc.groups[0].columns, vec![0]);
    }

    #[test]
    fn an_empty_message_holds_no_rows_like_text_and_csv() {
        let mut enc = JsonRowEncoder::default();
        assert_eq!(enc.push_message(b"", &cols(&["id"])), Ok(0));
        assert!(enc.groups.is_empty());
        // Whitespace is not empty: it is not JSON.
        assert!(matches!(enc.push_message(b" ", &cols(&["id"])), Err(JsonError::Invalid(_))));
    }

    #[test]
    fn message_fields_reads_what_message_objects_reads() {
        let cases: &[&[u8]] = &[
            br#"{"a": 1, "b": "x"}"#,
            br#" {"a\u0062": 2, "a": 1, "a": [3, {"z": null}]} "#,
            br#"[{"a": 1}, {"b": true}]"#,
            br#"[]"#,
        ];
        for msg in cases {
            let fields = message_fields(msg).expect("valid objects");
            let objects = message_objects(msg).unwrap();
            assert_eq!(fields.len(), objects.len());
            for (f, o) in fields.iter().zip(&objects) {
                for (k, v) in o {
                    assert_eq!(f.get(k).map(RawValue::get), Some(v.get()), "{k}");
                }
                assert!(f.0.iter().all(|(k, _)| o.contains_key(k.as_ref())));
            }
        }
        // a key written with an escape is read as its text
        assert_eq!(message_fields(br#"{"a\u0062": 2}"#).unwrap()[0].get("ab").map(RawValue::get), Some("2"));
        // anything else is left to message_objects (and its error)
        for bad in [&b""[..], b" ", b"1", b"\"x\"", b"[1]", b"{\"a\": }", b"{} x"] {
            assert!(message_fields(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
