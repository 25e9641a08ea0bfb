//! A batch's change events folded into one final change per key, in message order (the last
//! wins): what the change-event writer stages and applies. Pure, so the semantics (key changes,
//! deletes by `before` or the message key, TOAST placeholders, truncates) are unit-tested here.
//!
//! A key change is a `d` of the old key and a `c` of the new one from the same log record
//! (`Event::change_id`). With REPLICA IDENTITY DEFAULT the `c` carries Debezium's placeholder for
//! an unchanged TOASTed column: its value is the old row's. When the `d` is in the same batch,
//! the value comes from the batch (the old key's earlier event) or, failing that, from the old
//! key's stored row, which the writer reads before it deletes anything ([`Fill`]).

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
    /// `fill`: a `c` with placeholders (the columns) and its log position: a key change's new row.
    Upsert { key: Key, values: Given, fill: Option<(String, Vec<usize>)> },
    /// `change_id`: the event's log position (a key change's `d` shares it with the `c`).
    Delete { key: Key, change_id: Option<String> },
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
            Ok(vec![Step::Delete { key, change_id: e.change_id.clone() }])
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
            let unavailable: Vec<usize> = after.unavailable.iter().filter_map(|u| columns.iter().position(|c| c == u)).collect();
            let fill = match (&e.change_id, e.op) {
                (Some(id), Op::Create) if !unavailable.is_empty() => Some((id.clone(), unavailable)),
                _ => None,
            };
            let mut steps = Vec::with_capacity(1);
            if e.op == Op::Update {
                if let Some(Ok(old)) = e.before.as_ref().map(|b| key_of(b, keys)) {
                    if old != key {
                        steps.push(Step::Delete { key: old, change_id: None });
                    }
                }
            }
            steps.push(Step::Upsert { key, values, fill });
            Ok(steps)
        }
    }
}

/// Columns of a key change's new row to read from the old key's stored row.
#[derive(Debug, Clone, PartialEq)]
pub struct Fill {
    pub from: Key,
    pub columns: Vec<usize>,
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
    /// Columns the writer reads from other keys' stored rows before deleting anything.
    pub fill: Vec<Fill>,
    /// The messages that made it, in order.
    pub msgs: Vec<usize>,
    /// A key change's placeholders not resolved yet: (the change's log position, columns).
    pending: Option<(String, Vec<usize>)>,
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

/// The old key of a key change and what the batch knew of its row when it was deleted: the
/// values the batch gave it and whether the stored row had been deleted before them.
struct Gone {
    key: Key,
    values: Option<Given>,
    delete_first: bool,
    /// The old row was itself a key change's new row with placeholders (a chain of key changes).
    pending: Option<(String, Vec<usize>)>,
}

/// Where the values of `columns` of the row a key change `id` deleted are: found in the batch
/// (pushed to `values`), or in a stored row (pushed to `fills`); what neither has stays unset.
fn resolve(gone: &HashMap<String, Gone>, id: &str, columns: &[usize], values: &mut Given, fills: &mut Vec<Fill>, depth: usize) {
    let Some(old) = gone.get(id) else { return };
    let mut from_table = Vec::new();
    let mut chained = Vec::new();
    for &c in columns {
        match old.values.as_ref().and_then(|v| v.iter().find(|(n, _)| *n == c)) {
            Some(v) => values.push(v.clone()),
            None => match &old.pending {
                Some((_, cols)) if cols.contains(&c) && depth < 64 => chained.push(c),
                _ if !old.delete_first => from_table.push(c),
                _ => {}
            },
        }
    }
    if let (false, Some((up, _))) = (chained.is_empty(), &old.pending) {
        resolve(gone, up, &chained, values, fills, depth + 1);
    }
    if !from_table.is_empty() {
        fills.push(Fill { from: old.key.clone(), columns: from_table });
    }
}

/// Folds the steps of messages (batch index, steps), in order.
pub fn collapse<'s>(steps: impl IntoIterator<Item = (usize, &'s [Step])>, apply_truncate: bool) -> Collapsed {
    let mut out = Collapsed::default();
    let mut at: HashMap<Key, usize> = HashMap::new();
    let mut gone: HashMap<String, Gone> = HashMap::new();
    for (msg, list) in steps {
        for s in list {
            let (key, upsert, fill) = match s {
                Step::Truncate if apply_truncate => {
                    out.truncate = true;
                    out.finals.clear();
                    at.clear();
                    gone.clear();
                    continue;
                }
                Step::Truncate => {
                    out.skipped_truncates.push(msg);
                    continue;
                }
                Step::Delete { key, change_id } => {
                    if let Some(id) = change_id {
                        let now = at.get(key).map(|&i| &out.finals[i]);
                        gone.insert(id.clone(), Gone {
                            key: key.clone(),
                            values: now.and_then(|f| f.upsert.clone()),
                            delete_first: now.is_some_and(|f| f.delete_first || f.upsert.is_none()),
                            pending: now.and_then(|f| f.pending.clone()),
                        });
                    }
                    (key, None, None)
                }
                Step::Upsert { key, values, fill } => (key, Some(values), fill.clone()),
            };
            let Some(&i) = at.get(key) else {
                at.insert(key.clone(), out.finals.len());
                out.finals.push(Final {
                    key: key.clone(),
                    upsert: upsert.cloned(),
                    delete_first: upsert.is_none(),
                    fill: Vec::new(),
                    msgs: vec![msg],
                    pending: fill,
                });
                continue;
            };
            let f = &mut out.finals[i];
            if f.msgs.last() != Some(&msg) {
                f.msgs.push(msg);
            }
            f.upsert = match (f.upsert.take(), upsert) {
                (_, None) => {
                    f.delete_first = true;
                    f.pending = None;
                    None
                }
                (None, Some(v)) => {
                    f.pending = fill;
                    Some(v.clone())
                }
                // what this event does not give (a TOAST placeholder) keeps the batch's earlier value
                (Some(prev), Some(v)) => {
                    if fill.is_some() {
                        f.pending = fill;
                    }
                    let mut merged: Given = prev.into_iter().filter(|(c, _)| !v.iter().any(|(n, _)| n == c)).collect();
                    merged.extend(v.iter().cloned());
                    merged.sort_by_key(|(c, _)| *c);
                    Some(merged)
                }
            };
        }
    }
    // key changes: the new row's placeholders take the old row's values
    for f in &mut out.finals {
        let (Some((id, columns)), Some(values)) = (f.pending.take(), f.upsert.as_mut()) else { continue };
        let wanted: Vec<usize> = columns.into_iter().filter(|c| !values.iter().any(|(n, _)| n == c)).collect();
        resolve(&gone, &id, &wanted, values, &mut f.fill, 0);
        values.sort_by_key(|(c, _)| *c);
    }
    out
}
