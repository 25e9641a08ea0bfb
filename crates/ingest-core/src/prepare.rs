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
#[derive(Debug, Clone, Copy)]
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
    let plan = Plan { opts, columns, listed, whole: None, metadata: 0 };
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
    let text_columns = if plan.whole.is_some() || ((plan.listed || plan.metadata > 0) && opts.format != Format::Json) {
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
                            let set = match out.column_sets.iter().position(|c| *c == g.columns) {
                                Some(k) => k,
                                None => {
                                    out.column_sets.push(g.columns);
                                    out.column_sets.len() - 1
                                }
                            };
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
            Format::Raw => unreachable!("raw messages are whole values"),
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
mod tests {
    use super::*;

    fn opts(f: &str) -> CopyOptions {
        CopyOptions::new(f, None, None, None).unwrap()
    }

    fn cols(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn text_messages_share_one_buffer_and_bad_ones_are_rejected() {
        let msgs: Vec<Option<&[u8]>> = vec![Some(b"1\ta"), None, Some(b"2\tb\n3\tc"), Some(b"4\tmid\\."), Some(b""), Some(b"5\te")];
        let (p, bad) = prepare(msgs, &opts("text"), &[], false, 64);
        assert_eq!(p.data, b"1\ta\n2\tb\n3\tc\n5\te\n".to_vec());
        assert_eq!(p.items.iter().map(|i| (i.msg, i.rows())).collect::<Vec<_>>(), vec![(0, 1), (2, 2), (5, 1)]);
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].msg, bad[0].sqlstate.as_str()), (3, "22P04"));
        // every item's chunks are None (every column) and consecutive: one COPY for all
        let jobs = copy_jobs(&p.items);
        assert_eq!(jobs, vec![Chunk { columns: None, range: 0..p.data.len(), rows: 4 }]);
        // a part of the batch (as bisection takes) is a slice of the same buffer
        let tail = copy_jobs(&p.items[1..]);
        assert_eq!(&p.data[tail[0].range.clone()], b"2\tb\n3\tc\n5\te\n");
    }

    #[test]
    fn listed_columns_are_one_column_set() {
        let c = cols(&["b", "a"]);
        let (p, bad) = prepare(vec![Some(&b"x,y"[..])], &opts("csv"), &c, true, 8);
        assert!(bad.is_empty());
        assert_eq!(p.column_sets, vec![vec![0, 1]]);
        assert_eq!(p.items[0].chunks[0].columns, Some(0));
    }

    #[test]
    fn json_objects_group_by_fields_present() {
        let c = cols(&["id", "name"]);
        let msgs: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id": 1, "name": "a"}"#),
            Some(br#"{"id": 2}"#),
            Some(b"{not json"),
            Some(b"42"),
            Some(br#"[{"id": 3, "name": "c"}, {"id": 4, "name": "d"}]"#),
        ];
        let (p, bad) = prepare(msgs, &opts("json"), &c, false, 64);
        assert_eq!(p.column_sets, vec![vec![0, 1], vec![0]]);
        assert_eq!(bad.iter().map(|r| (r.msg, r.sqlstate.as_str())).collect::<Vec<_>>(), vec![(2, "22032"), (3, "22P02")]);
        let jobs = copy_jobs(&p.items);
        // {id,name} then {id} then {id,name}: three COPYs, rows 1, 1, 2
        assert_eq!(jobs.iter().map(|j| (j.columns, j.rows)).collect::<Vec<_>>(), vec![(Some(0), 1), (Some(1), 1), (Some(0), 2)]);
        assert_eq!(&p.data[jobs[2].range.clone()], b"3\tc\n4\td\n");
    }

    fn with_meta(msgs: Vec<Option<&[u8]>>, plan: &Plan) -> (Prepared, Vec<Rejected>) {
        // message i's metadata: a tab and i; message 9's cannot go in
        prepare_with(
            msgs,
            plan,
            |i, buf| {
                if i == 9 {
                    return Err(("bad key".to_string(), "22021"));
                }
                buf.extend_from_slice(format!("\t{i}").as_bytes());
                Ok(())
            },
            64,
        )
    }

    #[test]
    fn metadata_ends_every_row_and_follows_the_data_columns() {
        let o = opts("text");
        let c = cols(&["a", "b"]);
        let plan = Plan { opts: &o, columns: &c, listed: true, whole: None, metadata: 1 };
        let msgs: Vec<Option<&[u8]>> = vec![Some(b"1\tx\\\ny\n2\tz"), None, Some(b""), Some(b"3\tw\r\n")];
        let (p, bad) = with_meta(msgs, &plan);
        assert!(bad.is_empty());
        assert_eq!(p.data, b"1\tx\\\ny\t0\n2\tz\t0\n3\tw\t3\n".to_vec());
        assert_eq!(p.column_sets, vec![vec![0, 1, 2]]);
        assert_eq!(p.items.iter().map(|i| (i.msg, i.rows())).collect::<Vec<_>>(), vec![(0, 2), (3, 1)]);

        let o = opts("csv");
        let plan = Plan { opts: &o, columns: &c, listed: true, whole: None, metadata: 1 };
        let (p, _) = with_meta(vec![Some(b"1,\"x\ny\"\n2,z")], &plan);
        assert_eq!(p.data, b"1,\"x\ny\"\t0\n2,z\t0\n".to_vec());
    }

    #[test]
    fn metadata_errors_reject_the_message() {
        let o = opts("text");
        let c = cols(&["a"]);
        let plan = Plan { opts: &o, columns: &c, listed: true, whole: None, metadata: 1 };
        let msgs: Vec<Option<&[u8]>> = (0..10).map(|_| Some(&b"v"[..])).collect();
        let (p, bad) = with_meta(msgs, &plan);
        assert_eq!(p.items.len(), 9);
        assert_eq!(bad, vec![Rejected { msg: 9, error: "bad key".into(), sqlstate: "22021".into() }]);
    }

    #[test]
    fn json_column_sets_name_the_metadata_columns_last() {
        let o = opts("json");
        let c = cols(&["id", "name"]);
        let plan = Plan { opts: &o, columns: &c, listed: false, whole: None, metadata: 2 };
        let (p, bad) = with_meta(vec![Some(br#"{"name": "n", "id": 1}"#), Some(br#"{"id": 2}"#)], &plan);
        assert!(bad.is_empty());
        assert_eq!(p.column_sets, vec![vec![0, 1, 2, 3], vec![0, 2, 3]]);
        assert_eq!(p.data, b"1\tn\t0\n2\t1\n".to_vec());
    }

    #[test]
    fn whole_values_bytea_text_and_json() {
        let o = opts("raw");
        let c = cols(&["v"]);
        let bytea = Plan { opts: &o, columns: &c, listed: false, whole: Some(Whole::Bytea), metadata: 0 };
        let (p, bad) = prepare_with(vec![Some(&b"\x00\\\n\xff"[..]), None, Some(b"")], &bytea, |_, _| Ok(()), 8);
        assert!(bad.is_empty());
        assert_eq!(p.data, b"\\\\x005c0aff\n\\\\x\n".to_vec());
        assert_eq!(p.column_sets, vec![vec![0]]);
        assert_eq!(p.items.iter().map(|i| (i.msg, i.rows())).collect::<Vec<_>>(), vec![(0, 1), (2, 1)]);

        let text = Plan { whole: Some(Whole::Text), metadata: 1, ..bytea };
        let (p, bad) = with_meta(vec![Some(b"a\tb\\c\nd"), Some(b"\xff"), Some(b"nul\x00"), Some(b"")], &text);
        assert_eq!(p.data, b"a\\tb\\\\c\\nd\t0\n\t3\n".to_vec());
        assert_eq!(bad.iter().map(|r| (r.msg, r.sqlstate.as_str())).collect::<Vec<_>>(), vec![(1, "22021"), (2, "22021")]);
        assert_eq!(p.column_sets, vec![vec![0, 1]]);

        // json into one json column: every JSON value as written; an empty message holds none.
        let j = opts("json");
        let whole = Plan { opts: &j, columns: &c, listed: false, whole: Some(Whole::Text), metadata: 0 };
        let (p, bad) = prepare_with(vec![Some(&b"[1, {\"a\": 1.0}]"[..]), Some(b""), Some(b"\"s\\t\"\n")], &whole, |_, _| Ok(()), 8);
        assert!(bad.is_empty());
        assert_eq!(p.data, b"[1, {\"a\": 1.0}]\n\"s\\\\t\"\\n\n".to_vec());
        assert_eq!(p.items.iter().map(|i| i.msg).collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn lines_of_text_rows_find_their_message() {
        let (p, _) = prepare(vec![Some(&b"1\tx\\\ny"[..]), Some(b"2\n3\n4"), Some(b"5")], &opts("text"), &[], false, 64);
        let at = |line| item_at_line(&p.items, &p.data, 0, line, Lines::Text);
        // an escaped newline is data: message 0 is one line
        assert_eq!((1..=6).map(at).collect::<Vec<_>>(), vec![Some(0), Some(1), Some(1), Some(1), Some(2), None]);
        assert_eq!(at(0), None);
        assert_eq!(item_at_line(&p.items, &p.data, 1, 1, Lines::Text), None);
    }

    #[test]
    fn csv_lines_count_quoted_newlines_except_in_the_first_row() {
        let csv = Lines::Csv { quote: b'"', escape: b'"' };
        let msgs: Vec<Option<&[u8]>> = vec![Some(b"1,\"a\nb\"\n2,\"c\r\nd\""), Some(b"3,\"e\n\nf\""), Some(b"4,g")];
        let (p, bad) = prepare(msgs, &opts("csv"), &[], false, 64);
        assert!(bad.is_empty());
        // message 0: its first row is COPY's first (quoted \n not counted), its second row has a
        // quoted \r\n (the \n counts): 1 + 2 lines; message 1: 3 lines; message 2: 1.
        let at = |line| item_at_line(&p.items, &p.data, 0, line, csv);
        let want = vec![Some(0), Some(0), Some(0), Some(1), Some(1), Some(1), Some(2), None];
        assert_eq!((1..=8).map(at).collect::<Vec<_>>(), want);
        // the same messages from the second one on: message 1's first row is now COPY's first
        let at = |line| item_at_line(&p.items[1..], &p.data, 0, line, csv);
        assert_eq!((1..=3).map(at).collect::<Vec<_>>(), vec![Some(0), Some(1), None]);
        // a quoted \r in COPY's first row counts
        let (p, _) = prepare(vec![Some(&b"\"x\r\ny\",1"[..]), Some(b"2,z")], &opts("csv"), &[], false, 64);
        let at = |line| item_at_line(&p.items, &p.data, 0, line, csv);
        assert_eq!((1..=4).map(at).collect::<Vec<_>>(), vec![Some(0), Some(0), Some(1), None]);
        // an escape other than the quote only counts inside quotes, before a quote
        let o = CopyOptions::new("csv", None, None, Some("\\".to_string())).unwrap();
        let (p, bad) = prepare(vec![Some(&b"\"a\\\"\nb\",1\n2,c"[..]), Some(b"3,d")], &o, &[], false, 64);
        assert!(bad.is_empty());
        let at = |line| item_at_line(&p.items, &p.data, 0, line, Lines::Csv { quote: b'"', escape: b'\\' });
        assert_eq!((1..=4).map(at).collect::<Vec<_>>(), vec![Some(0), Some(0), Some(1), None]);
    }

    #[test]
    fn json_lines_are_counted_within_their_copy_job() {
        let c = cols(&["id", "name"]);
        let msgs: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id": 1, "name": "a"}"#),
            Some(br#"[{"id": 2}, {"id": 3}]"#),
            Some(br#"{"id": 4}"#),
            Some(br#"[{"id": 5, "name": "c"}, {"id": 6}, {"id": 7, "name": "d"}]"#),
        ];
        let (p, _) = prepare(msgs, &opts("json"), &c, false, 64);
        let jobs = copy_jobs(&p.items);
        // {id,name}: 1 | {id}: 2, 3, 4 | {id,name}: 5 | {id}: 6 | {id,name}: 7
        assert_eq!(jobs.iter().map(|j| j.rows).collect::<Vec<_>>(), vec![1, 3, 1, 1, 1]);
        let at = |job, line| item_at_line(&p.items, &p.data, job, line, Lines::Text);
        assert_eq!((at(0, 1), at(1, 1), at(1, 2), at(1, 3), at(1, 4)), (Some(0), Some(1), Some(1), Some(2), None));
        assert_eq!((at(2, 1), at(3, 1), at(4, 1), at(5, 1)), (Some(3), Some(3), Some(3), None));
    }

    #[test]
    fn jobs_of_any_run_are_copy_jobs_of_that_run() {
        let c = cols(&["id", "name"]);
        let msgs: Vec<Option<&[u8]>> = vec![
            Some(br#"{"id": 1, "name": "a"}"#),
            Some(br#"[{"id": 2}, {"id": 3}]"#),
            Some(br#"{"id": 4}"#),
            Some(b"{not json"),
            Some(br#"[{"id": 5, "name": "c"}, {"id": 6}, {"id": 7, "name": "d"}]"#),
            Some(br#"{"id": 8, "name": "e"}"#),
            Some(br#"{"id": 9, "name": "f"}"#),
        ];
        let (p, _) = prepare(msgs, &opts("json"), &c, false, 64);
        let (t, _) = prepare(vec![Some(&b"1\n2"[..]), Some(b"3"), Some(b"4\n5\n6")], &opts("text"), &[], false, 64);
        for items in [&p.items, &t.items] {
            let jobs = Jobs::new(items);
            for a in 0..=items.len() {
                for b in a..=items.len() {
                    assert_eq!(jobs.of(a..b), copy_jobs(&items[a..b]), "{a}..{b}");
                }
            }
        }
    }
}
