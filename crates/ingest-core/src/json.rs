//! The `json` format: one JSON object per message (or an array of objects), each object one row.
//!
//! Fields are matched to the relation's columns by exact name. A field that matches no column is
//! ignored; a column with no field takes its default (the row is sent to COPY without that
//! column); a field that is JSON `null` sets NULL. Strings go in as their text, numbers and
//! booleans as their JSON spelling, objects and arrays as JSON text (so json/jsonb columns get the
//! nested value). Consecutive rows with the same set of columns share one COPY.

use crate::format::push_text_field;
use serde_json::{Map, Value};
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

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The objects of one message, in order.
pub fn message_objects(msg: &[u8]) -> Result<Vec<Map<String, Value>>, JsonError> {
    let v: Value = serde_json::from_slice(msg).map_err(|e| JsonError::Invalid(e.to_string()))?;
    match v {
        Value::Object(m) => Ok(vec![m]),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(m) => Ok(m),
                other => Err(JsonError::NotAnObject(kind(&other))),
            })
            .collect(),
        other => Err(JsonError::NotAnObject(kind(&other))),
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
                push_json_value(&mut line, &obj[columns[ci].as_str()]);
            }
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

fn push_json_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => buf.extend_from_slice(b"\\N"),
        Value::String(s) => push_text_field(buf, s),
        Value::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => buf.extend_from_slice(n.to_string().as_bytes()),
        nested => push_text_field(buf, &nested.to_string()),
    }
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
}
