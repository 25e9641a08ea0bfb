//! A batch's change events folded into one final change per key, in message order (the last
//! wins): what the change-event writer stages and applies. Pure, so the semantics (key changes,
//! deletes by `before` or the message key, TOAST placeholders, truncates) are unit-tested here.

use super::{Event, Op, Row};
use crate::decode::DecodeError;
use std::collections::HashMap;

/// A row's key: the text of each key column (never NULL).
pub type Key = Vec<String>;

/// The column values an event gives (index into the table's columns, text or None for NULL),
/// sorted by column; a column left out (its placeholder, or not in the event) is not given.
pub type Given = Vec<(usize, Option<String>)>;

/// What one event does to one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Upsert { key: Key, values: Given },
    Delete { key: Key },
    Truncate,
}

/// The text of every key column in `row`, or the first key column it lacks.
fn key_of(row: &Row, keys: &[String]) -> Result<Key, String> {
    keys.iter()
        .map(|k| match row.record.get(k).and_then(|v| v.to_text()) {
            Some(t) => Ok(t.into_owned()),
            None => Err(k.clone()),
        })
        .collect()
}

/// The steps of one message (none for a tombstone): `r`/`c`/`u` upsert `after` by its key (a
/// `u` whose `before` has another key deletes that one first); `d` deletes `before`'s key, or
/// the message key's when `before` lacks it; `t` truncates. A key column missing or NULL: 22004.
pub fn step_of(event: Option<&Event>, message_key: Option<&Row>, keys: &[String], columns: &[String]) -> Result<Vec<Step>, DecodeError> {
    let Some(e) = event else { return Ok(Vec::new()) };
    let missing = |what: &str, k: String| {
        DecodeError::new("22004", format!("the change event's {what} has no value for the key column \"{k}\""))
    };
    match e.op {
        Op::Truncate => Ok(vec![Step::Truncate]),
        Op::Delete => {
            let from_before = e.before.as_ref().map(|b| key_of(b, keys));
            let key = match (from_before, message_key) {
                (Some(Ok(k)), _) => k,
                (_, Some(mk)) => key_of(mk, keys).map_err(|k| missing("\"before\" nor the message key", k))?,
                (Some(Err(k)), None) => return Err(missing("\"before\"", k)),
                (None, None) => return Err(DecodeError::new("22004", "a delete event without \"before\" or a message key deletes nothing")),
            };
            Ok(vec![Step::Delete { key }])
        }
        Op::Read | Op::Create | Op::Update => {
            let after = e.after.as_ref().expect("decode_event refuses r/c/u without after");
            let key = key_of(after, keys).map_err(|k| missing("\"after\"", k))?;
            let mut values: Given = Vec::new();
            for (name, v) in &after.record.fields {
                if let Some(i) = columns.iter().position(|c| c == name) {
                    values.push((i, v.to_text().map(|t| t.into_owned())));
                }
            }
            values.sort_by_key(|(i, _)| *i);
            let mut steps = Vec::with_capacity(1);
            if e.op == Op::Update {
                if let Some(Ok(old)) = e.before.as_ref().map(|b| key_of(b, keys)) {
                    if old != key {
                        steps.push(Step::Delete { key: old });
                    }
                }
            }
            steps.push(Step::Upsert { key, values });
            Ok(steps)
        }
    }
}

/// A key's final change in the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Final {
    pub key: Key,
    /// Some: the row (the given columns) is inserted or updated; None: it is deleted.
    pub upsert: Option<Given>,
    /// The stored row is deleted before the upsert (a delete came first in the batch): columns
    /// not given then get their default instead of keeping a stale value.
    pub delete_first: bool,
    /// The messages that made it, in order.
    pub msgs: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Collapsed {
    /// Every row of the table is deleted first (a truncate the consumer applies came).
    pub truncate: bool,
    /// In the order keys were first seen (after the last applied truncate).
    pub finals: Vec<Final>,
    /// Messages holding a truncate that was not applied (the writer logs them).
    pub skipped_truncates: Vec<usize>,
}

/// Folds the steps of messages (batch index, steps), in order.
pub fn collapse<'s>(steps: impl IntoIterator<Item = (usize, &'s [Step])>, apply_truncate: bool) -> Collapsed {
    let mut out = Collapsed::default();
    let mut at: HashMap<Key, usize> = HashMap::new();
    for (msg, list) in steps {
        let msg = &msg;
        for s in list {
            let (key, upsert) = match s {
                Step::Truncate if apply_truncate => {
                    out.truncate = true;
                    out.finals.clear();
                    at.clear();
                    continue;
                }
                Step::Truncate => {
                    out.skipped_truncates.push(*msg);
                    continue;
                }
                Step::Delete { key } => (key, None),
                Step::Upsert { key, values } => (key, Some(values)),
            };
            let Some(&i) = at.get(key) else {
                at.insert(key.clone(), out.finals.len());
                out.finals.push(Final { key: key.clone(), upsert: upsert.cloned(), delete_first: upsert.is_none(), msgs: vec![*msg] });
                continue;
            };
            let f = &mut out.finals[i];
            if f.msgs.last() != Some(msg) {
                f.msgs.push(*msg);
            }
            f.upsert = match (f.upsert.take(), upsert) {
                (_, None) => {
                    f.delete_first = true;
                    None
                }
                (None, Some(v)) => Some(v.clone()),
                // what this event does not give (a TOAST placeholder) keeps the batch's earlier value
                (Some(prev), Some(v)) => {
                    let mut merged: Given = prev.into_iter().filter(|(c, _)| !v.iter().any(|(n, _)| n == c)).collect();
                    merged.extend(v.iter().cloned());
                    merged.sort_by_key(|(c, _)| *c);
                    Some(merged)
                }
            };
        }
    }
    out
}
