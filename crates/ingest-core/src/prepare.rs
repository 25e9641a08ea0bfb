//! Batch preparation, the same for every source: each message's payload becomes COPY input, or
//! is rejected when it cannot become whole rows.
//!
//! The rows of every good message go into one buffer; each message keeps the byte ranges of its
//! rows. A run of consecutive messages is one slice of the buffer, so COPYing any part of a batch
//! (as bad-message isolation does by bisection) copies nothing.
//!
//! Metadata columns (metadata.rs) are written after each row's data fields, in the same COPY
//! encoding; their names follow the data columns in every COPY column list. A message that is one
//! whole value (format raw, or json into a relation whose one data column is json/jsonb) becomes
//! one row whose data column is that value.

use crate::decode::{push_text_row, record_row, Record, TypedDecoder};
use crate::rows::ColumnPlan;
use crate::format::{push_text_bytes, CopyOptions, Format};
use crate::json::{JsonError, JsonRowEncoder};
use smallvec::{smallvec, SmallVec};

/// A batch made ready for COPY.
#[derive(Debug, Default)]
pub struct Prepared {
    pub data: Vec<u8>,
    /// The good messages that hold rows, in batch order.
    pub items: Vec<Item>,
    /// The distinct column lists chunks name, by index (json: the fields present; text/csv with
    /// a column list: that list).
    pub column_sets: Vec<Vec<usize>>,
    /// Per column set (missing = false): its chunks are COPY BINARY tuples (the fast path,
    /// rows::fast), without the header and trailer each COPY of them adds.
    pub binary: Vec<bool>,
}

/// One good message: its rows, in chunks by the columns they fill (text/csv: one chunk; json: one
/// chunk per run of objects with the same fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The message's index in the batch.
    pub msg: usize,
    /// Inline for the usual single chunk (no allocation per message).
    pub chunks: SmallVec<[Chunk; 1]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Index into `Prepared::column_sets`; None = every column of the relation.
    pub columns: Option<usize>,
    pub range: std::ops::Range<usize>,
    pub rows: usize,
}

/// A message that did not become rows, and why (with the SQLSTATE COPY would have given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub msg: usize,
    pub error: String,
    pub sqlstate: String,
}

impl Item {
    pub fn rows(&self) -> usize {
        self.chunks.iter().map(|c| c.rows).sum()
    }
}

/// A message that is one value of the data column, and what that column needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    /// Any bytes, written as bytea hex.
    Bytea,
    /// UTF-8 without NUL (else 22021); the column's input function judges the text (json and jsonb
    /// columns: their parser, so invalid JSON is COPY's own error, 22P02).
    Text,
}

/// How a batch's messages become rows.
#[derive(Clone, Copy)]
pub struct Plan<'a> {
    pub opts: &'a CopyOptions,
    /// The data columns: json matches fields to these names; text/csv with `listed` fill exactly
    /// these; with `whole` the one column the value fills.
    pub columns: &'a [String],
    pub listed: bool,
    pub whole: Option<Whole>,
    /// How many metadata columns follow `columns` in the COPY column lists (their values are the
    /// suffix `prepare_with`'s callback writes).
    pub metadata: usize,
    /// avro / protobuf: the decoder, holding every schema the batch's messages name (the
    /// worker fetched them first); its records fill `columns` by name, as json objects do.
    pub typed: Option<&'a dyn TypedDecoder>,
    /// avro / protobuf without metadata columns: the plans of `columns` (same order), when every
    /// one has a binary encoding: records then become COPY BINARY tuples (rows::encode_field,
    /// issue 23's model), a message the model is unsure of goes in COPY text as before.
    pub binary: Option<&'a [ColumnPlan]>,
}

impl std::fmt::Debug for Plan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("opts", self.opts)
            .field("columns", &self.columns)
            .field("listed", &self.listed)
            .field("whole", &self.whole)
            .field("metadata", &self.metadata)
            .field("typed", &self.typed.is_some())
            .field("binary", &self.binary.is_some())
            .finish()
    }
}

/// Prepares a batch's payloads (None = no value, e.g. a Kafka tombstone: no rows). `columns`:
/// json matches fields to these names; text/csv with `listed` fill exactly these columns.
pub fn prepare<'a>(
    payloads: impl IntoIterator<Item = Option<&'a [u8]>>,
    opts: &CopyOptions,
    columns: &[String],
    listed: bool,
    size_hint: usize,
) -> (Prepared, Vec<Rejected>) {
    let plan = Plan { opts, columns, listed, whole: None, metadata: 0, typed: None, binary: None };
    prepare_with(payloads, &plan, |_, _| Ok(()), size_hint)
}

/// Prepares a batch by `plan`. `suffix(i, buf)` appends message i's metadata values (each after a
/// delimiter) to `buf`, or says why they cannot go in (the message is rejected); it is called only
/// with `plan.metadata > 0`, once per message that has a value.
pub fn prepare_with<'a, F>(
    payloads: impl IntoIterator<Item = Option<&'a [u8]>>,
    plan: &Plan,
    mut suffix: F,
    size_hint: usize,
) -> (Prepared, Vec<Rejected>)
where
    F: FnMut(usize, &mut Vec<u8>) -> Result<(), (String, &'static str)>,
{
    let (opts, columns) = (plan.opts, plan.columns);
    let meta_columns = columns.len()..columns.len() + plan.metadata;
    let mut out = Prepared { data: Vec::with_capacity(size_hint), ..Default::default() };
    let text_columns = if plan.whole.is_some() || ((plan.listed || plan.metadata > 0) && matches!(opts.format, Format::Text | Format::Csv)) {
        out.column_sets.push((0..columns.len()).chain(meta_columns.clone()).collect());
        Some(0)
    } else {
        None
    };
    let mut meta = Vec::new();
    let mut bad = Vec::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let Some(payload) = payload else { continue };
        meta.clear();
        // An empty message holds no rows, except in raw format, where it is the empty value.
        if plan.metadata > 0 && (!payload.is_empty() || opts.format == Format::Raw) {
            if let Err((error, sqlstate)) = suffix(i, &mut meta) {
                bad.push(Rejected { msg: i, error, sqlstate: sqlstate.to_string() });
                continue;
            }
        }
        if let Some(kind) = plan.whole {
            // json: an empty message holds no value (as in the other formats); raw: it is the
            // empty value.
            if payload.is_empty() && opts.format == Format::Json {
                continue;
            }
            if kind == Whole::Text && (payload.contains(&0) || std::str::from_utf8(payload).is_err()) {
                bad.push(Rejected {
                    msg: i,
                    error: "invalid byte sequence for encoding \"UTF8\": the message is not UTF-8 text without NUL bytes".to_string(),
                    sqlstate: "22021".to_string(),
                });
                continue;
            }
            let start = out.data.len();
            match kind {
                Whole::Bytea => {
                    out.data.extend_from_slice(b"\\\\x");
                    out.data.reserve(payload.len() * 2);
                    for &b in payload {
                        out.data.push(HEX[(b >> 4) as usize]);
                        out.data.push(HEX[(b & 15) as usize]);
                    }
                }
                Whole::Text => push_text_bytes(&mut out.data, payload),
            }
            out.data.extend_from_slice(&meta);
            out.data.push(b'\n');
            out.items.push(Item { msg: i, chunks: smallvec![Chunk { columns: text_columns, range: start..out.data.len(), rows: 1 }] });
            continue;
        }
        match opts.format {
            Format::Json => {
                let mut enc = JsonRowEncoder::default();
                match enc.push_message_with(payload, columns, &meta) {
                    Ok(_) => {
                        let mut chunks = SmallVec::with_capacity(enc.groups.len());
                        for mut g in enc.groups {
                            g.columns.extend(meta_columns.clone());
                            let set = set_index(&mut out, g.columns, false);
                            let start = out.data.len();
                            out.data.extend_from_slice(&g.data);
                            chunks.push(Chunk { columns: Some(set), range: start..out.data.len(), rows: g.rows });
                        }
                        if !chunks.is_empty() {
                            out.items.push(Item { msg: i, chunks });
                        }
                    }
                    Err(e) => {
                        let sqlstate = match e {
                            JsonError::Invalid(_) => "22032",
                            _ => "22P02",
                        };
                        bad.push(Rejected { msg: i, error: e.to_string(), sqlstate: sqlstate.to_string() });
                    }
                }
            }
            Format::Avro | Format::Protobuf => {
                let Some(decoder) = plan.typed else {
                    bad.push(Rejected {
                        msg: i,
                        error: format!("internal error: no {} decoder for this batch", opts.format.name()),
                        sqlstate: "XX000".to_string(),
                    });
                    continue;
                };
                if let Some(types) = plan.binary.filter(|_| plan.metadata == 0) {
                    match crate::records::binary_rows(decoder, payload, columns, types, &mut out.data) {
                        Ok(Some(pre)) => {
                            let mut chunks = SmallVec::with_capacity(pre.len());
                            for c in pre {
                                let set = c.columns.unwrap_or_else(|| (0..columns.len()).collect());
                                let k = set_index(&mut out, set, true);
                                chunks.push(Chunk { columns: Some(k), range: c.range, rows: c.rows });
                            }
                            if !chunks.is_empty() {
                                out.items.push(Item { msg: i, chunks });
                            }
                            continue;
                        }
                        // not sure of a value: COPY text, as before
                        Ok(None) => {}
                        Err(e) => {
                            bad.push(Rejected { msg: i, error: e.message, sqlstate: e.sqlstate.to_string() });
                            continue;
                        }
                    }
                }
                let groups = typed_groups(decoder, payload, columns, &meta);
                match groups {
                    Ok(groups) => {
                        let mut chunks = SmallVec::with_capacity(groups.len());
                        for (mut set, data, rows) in groups {
                            set.extend(meta_columns.clone());
                            let k = set_index(&mut out, set, false);
                            let start = out.data.len();
                            out.data.extend_from_slice(&data);
                            chunks.push(Chunk { columns: Some(k), range: start..out.data.len(), rows });
                        }
                        if !chunks.is_empty() {
                            out.items.push(Item { msg: i, chunks });
                        }
                    }
                    Err(e) => bad.push(Rejected { msg: i, error: e.message, sqlstate: e.sqlstate.to_string() }),
                }
            }
            Format::Raw => unreachable!("raw messages are whole values"),
            Format::Debezium | Format::DebeziumAvro => bad.push(Rejected {
                msg: i,
                error: "internal error: change events are applied by the change-event writer, not appended".to_string(),
                sqlstate: "XX000".to_string(),
            }),
            Format::Text | Format::Csv => {
                let start = out.data.len();
                match opts.push_message_with(&mut out.data, payload, &meta) {
                    Ok(0) => {}
                    Ok(rows) => out.items.push(Item {
                        msg: i,
                        chunks: smallvec![Chunk { columns: text_columns, range: start..out.data.len(), rows }],
                    }),
                    Err(e) => bad.push(Rejected { msg: i, error: e.to_string(), sqlstate: "22P04".to_string() }),
                }
            }
        }
    }
    (out, bad)
}

/// The index of column set `set` with its rows in COPY text (`binary` false) or as COPY BINARY
/// tuples, added when new.
pub fn set_index(out: &mut Prepared, set: Vec<usize>, binary: bool) -> usize {
    let found = (0..out.column_sets.len())
        .find(|&k| out.column_sets[k] == set && out.binary.get(k).copied().unwrap_or(false) == binary);
    if let Some(k) = found {
        return k;
    }
    out.column_sets.push(set);
    if binary {
        out.binary.resize(out.column_sets.len() - 1, false);
        out.binary.push(true);
    }
    out.column_sets.len() - 1
}

/// One typed message's rows in COPY text format, in runs of records that fill the same columns:
/// (the columns' indexes, the lines, how many rows).
type Group = (Vec<usize>, Vec<u8>, usize);

fn typed_groups(decoder: &dyn TypedDecoder, payload: &[u8], columns: &[String], suffix: &[u8]) -> Result<Vec<Group>, crate::decode::DecodeError> {
    let mut records: Vec<Record<'_>> = Vec::with_capacity(1);
    decoder.decode(payload, &mut records)?;
    let mut groups: Vec<Group> = Vec::with_capacity(1);
    for r in &records {
        let (present, values) = record_row(r, columns)?;
        match groups.last_mut() {
            Some(g) if g.0 == present => {
                push_text_row(&mut g.1, &values, suffix);
                g.2 += 1;
            }
            _ => {
                let mut data = Vec::new();
                push_text_row(&mut data, &values, suffix);
                groups.push((present, data, 1));
            }
        }
    }
    Ok(groups)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The COPYs that insert `items`: consecutive chunks naming the same columns and adjacent in the
/// buffer are one job (one COPY).
pub fn copy_jobs(items: &[Item]) -> Vec<Chunk> {
    let mut jobs: Vec<Chunk> = Vec::new();
    for chunk in items.iter().flat_map(|p| &p.chunks) {
        match jobs.last_mut() {
            Some(j) if j.columns == chunk.columns && j.range.end == chunk.range.start => {
                j.range.end = chunk.range.end;
                j.rows += chunk.rows;
            }
            _ => jobs.push(chunk.clone()),
        }
    }
    jobs
}

/// The COPY jobs of any run of a batch's items, as `copy_jobs(&items[range])` gives them, in time
/// proportional to the jobs: isolating bad messages COPYs ever shorter tails of a large batch, and
/// walking the whole tail for each would cost the square of the batch.
pub struct Jobs<'a> {
    chunks: Vec<&'a Chunk>,
    /// Index in `chunks` of item i's first chunk; one more entry: `chunks.len()`.
    first: Vec<usize>,
    /// Rows in `chunks[..c]`.
    rows_before: Vec<usize>,
    /// The chunks that do not continue the job of the chunk before them.
    starts: Vec<usize>,
}

impl<'a> Jobs<'a> {
    pub fn new(items: &'a [Item]) -> Self {
        let mut j = Jobs { chunks: Vec::new(), first: Vec::with_capacity(items.len() + 1), rows_before: vec![0], starts: Vec::new() };
        for item in items {
            j.first.push(j.chunks.len());
            for chunk in &item.chunks {
                let joins = j.chunks.last().is_some_and(|l| l.columns == chunk.columns && l.range.end == chunk.range.start);
                if !joins {
                    j.starts.push(j.chunks.len());
                }
                j.rows_before.push(j.rows_before.last().unwrap() + chunk.rows);
                j.chunks.push(chunk);
            }
        }
        j.first.push(j.chunks.len());
        j
    }

    /// `copy_jobs(&items[range])`.
    pub fn of(&self, range: std::ops::Range<usize>) -> Vec<Chunk> {
        let (mut c, hi) = (self.first[range.start], self.first[range.end]);
        let mut k = self.starts.partition_point(|s| *s <= c);
        let mut jobs = Vec::new();
        while c < hi {
            let end = self.starts.get(k).map_or(hi, |s| (*s).min(hi));
            jobs.push(Chunk {
                columns: self.chunks[c].columns,
                range: self.chunks[c].range.start..self.chunks[end - 1].range.end,
                rows: self.rows_before[end] - self.rows_before[c],
            });
            c = end;
            k += 1;
        }
        jobs
    }
}

/// How COPY counts lines, to find the message behind the line number of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// COPY's text format (text, json and raw messages): one line per row (a backslash-escaped
    /// newline is data and not counted).
    Text,
    /// csv with these quote and escape bytes: COPY counts every `\n` (row ends and `\n` in quoted
    /// fields), except in the first row of a COPY, where the line-ending style is not yet known
    /// and a quoted `\r` counts instead of a quoted `\n` (PostgreSQL's CopyReadLineText).
    Csv { quote: u8, escape: u8 },
}

/// The index in `items` of the message holding line `line` (1-based, as in COPY's error context
/// "COPY t, line N") of COPY job `job` of `copy_jobs(items)`; None if the job has no such line.
pub fn item_at_line(items: &[Item], data: &[u8], job: usize, line: u64, lines: Lines) -> Option<usize> {
    let mut at: Option<(usize, &Chunk)> = None; // (job index, last chunk) as copy_jobs merges them
    if line == 0 {
        return None;
    }
    let mut seen: u64 = 0;
    for (k, chunk) in items.iter().enumerate().flat_map(|(k, p)| p.chunks.iter().map(move |c| (k, c))) {
        let (j, first) = match at {
            Some((j, last)) if last.columns == chunk.columns && last.range.end == chunk.range.start => (j, false),
            Some((j, _)) => (j + 1, true),
            None => (0, true),
        };
        at = Some((j, chunk));
        if j < job {
            continue;
        }
        if j > job {
            return None;
        }
        let bytes = &data[chunk.range.clone()];
        seen += match lines {
            Lines::Text => chunk.rows as u64,
            Lines::Csv { quote, escape } if first => {
                let (end, crs) = csv_first_row(bytes, quote, escape);
                1 + crs + count_newlines(&bytes[(end + 1).min(bytes.len())..])
            }
            Lines::Csv { .. } => count_newlines(bytes),
        };
        if seen >= line {
            return Some(k);
        }
    }
    None
}

fn count_newlines(b: &[u8]) -> u64 {
    b.iter().filter(|c| **c == b'\n').count() as u64
}

/// Where the first csv row of `b` ends (its `\n`), and the `\r` bytes in its quoted fields, with
/// PostgreSQL's quote tracking (an escape counts only inside quotes, before a quote).
fn csv_first_row(b: &[u8], quote: u8, escape: u8) -> (usize, u64) {
    let escape = if escape == quote { None } else { Some(escape) };
    let (mut in_quote, mut last_was_esc, mut crs) = (false, false, 0);
    for (i, &c) in b.iter().enumerate() {
        if in_quote && Some(c) == escape {
            last_was_esc = !last_was_esc;
        }
        if c == quote && !last_was_esc {
            in_quote = !in_quote;
        }
        if Some(c) != escape {
            last_was_esc = false;
        }
        if in_quote && c == b'\r' {
            crs += 1;
        }
        if c == b'\n' && !in_quote {
            return (i, crs);
        }
    }
    (b.len(), crs)
}

#[cfg(test)]
mod tests;
