//! The fast path's message step, run on a source's reader thread: a csv, text or json message
//! -> its rows as COPY BINARY tuples (no header or trailer, so that any run of messages is a
//! slice of the buffer; the main thread frames each COPY), or the dead letter PostgreSQL would
//! have made of it, or "not sure" (`Pre::Fallback`: the main thread prepares that message for
//! today's text COPY).
//!
//! Fields are split exactly as COPY splits them (CopyReadAttributesText / CopyReadAttributesCSV:
//! the null marker compared before unescaping, csv's quoted empty string not NULL), and each goes
//! through [`super::encode_field`] (framed by [`push_binary_field`]), which reads it as the column's input function would. A message is
//! declined when anything about it is not plainly decidable here: not UTF-8, a NUL byte, a `\r`,
//! an escape giving a non-ASCII byte; COPY's own format errors (a bare `\r`, `\.`, an unterminated
//! quote) are left to the text path too, which reports them as today.

use super::{push_binary_field, ColumnPlan, ConvError, Encoded, RowPlan, Value};
use crate::format::{CopyOptions, Format};
use crate::json::{message_fields, message_objects, JsonError};
use smallvec::{smallvec, SmallVec};
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

/// How a consumer's messages become binary rows: its format and the plans of its data columns
/// (the COPY column list, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPlan {
    pub format: Format,
    delimiter: u8,
    quote: u8,
    escape: u8,
    pub rows: RowPlan,
    /// Told apart from other plans (a batch's messages must all be made with the plan it is
    /// written with).
    pub id: u64,
    /// avro / protobuf: what decodes the records (without it every message goes the main
    /// thread's way).
    pub typed: Option<TypedHandle>,
}

/// Typed messages' rows (Avro, Protobuf records), made by their decoder, which the worker's main
/// thread keeps fetching schemas into (ingest_core::records implements it for a locked decoder).
pub trait TypedRows: Send + Sync {
    /// Each payload's outcome (None: no value), its rows appended to `buf`: a schema the decoder
    /// does not hold yet is `Outcome::Fallback` (the main thread fetches it), as is a value the
    /// row model is unsure of.
    fn encode_chunk(&self, plan: &FastPlan, payloads: &[Option<&[u8]>], buf: &mut Vec<u8>) -> Vec<Option<Outcome>>;
}

/// A shared [`TypedRows`] (compared by identity: one consumer's decoder).
#[derive(Clone)]
pub struct TypedHandle(pub Arc<dyn TypedRows>);

impl std::fmt::Debug for TypedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypedHandle")
    }
}

impl PartialEq for TypedHandle {
    fn eq(&self, other: &TypedHandle) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }
}

impl Eq for TypedHandle {}

impl FastPlan {
    /// None when this consumer stays on the text path: format raw, a column the model does not
    /// encode (COPY BINARY takes every field in binary), no columns.
    pub fn new(opts: &CopyOptions, columns: Vec<ColumnPlan>, id: u64) -> Option<FastPlan> {
        let rows = RowPlan { columns };
        if rows.columns.is_empty() || !rows.binary() || rows.columns.len() > u16::MAX as usize {
            return None;
        }
        let byte = |o: &Option<String>, d: u8| {
            o.as_ref()
                .and_then(|s| s.as_bytes().first().copied())
                .unwrap_or(d)
        };
        let (delimiter, quote) = match opts.format {
            Format::Csv => (byte(&opts.delimiter, b','), byte(&opts.quote, b'"')),
            Format::Text => (byte(&opts.delimiter, b'\t'), 0),
            // typed formats: their records by name, as json's objects (FastPlan::typed decodes)
            Format::Json | Format::Avro | Format::Protobuf => (0, 0),
            // raw: whole values
            _ => return None,
        };
        let escape = byte(&opts.escape, quote);
        Some(FastPlan {
            format: opts.format,
            delimiter,
            quote,
            escape,
            rows,
            id,
            typed: None,
        })
    }

    /// The column names, in COPY order.
    pub fn names(&self) -> Vec<String> {
        self.rows.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// Appends message `payload`'s rows to `buf`; what became of it. On anything but `Rows`,
    /// nothing is left in `buf`.
    pub fn encode(&self, payload: &[u8], buf: &mut Vec<u8>) -> Outcome {
        self.encode_with(payload, buf, &mut Vec::new())
    }

    /// `encode` with a vector for the fields of a row, reused from message to message (no
    /// allocation per message).
    pub fn encode_with<'a>(
        &self,
        payload: &'a [u8],
        buf: &mut Vec<u8>,
        fields: &mut Vec<Option<Cow<'a, str>>>,
    ) -> Outcome {
        let start = buf.len();
        let r = match self.format {
            Format::Json => self.encode_json(payload, buf, fields),
            Format::Csv | Format::Text => self.encode_delimited(payload, buf, fields),
            // typed records: prepare_chunk hands them to the plan's decoder
            _ => Outcome::Fallback,
        };
        if !matches!(r, Outcome::Rows(_)) {
            buf.truncate(start);
        }
        r
    }

    fn encode_delimited<'a>(
        &self,
        payload: &'a [u8],
        buf: &mut Vec<u8>,
        fields: &mut Vec<Option<Cow<'a, str>>>,
    ) -> Outcome {
        if payload.is_empty() {
            return Outcome::Empty;
        }
        // \r (line ends COPY fixes from its first line), NUL, and `\.` (csv: alone on a line it
        // ends COPY's data, a 22P04 the text path's check gives): the text path decides. One pass.
        let mut prev_backslash = false;
        for &c in payload {
            if c == b'\r' || c == 0 || (prev_backslash && c == b'.') {
                return Outcome::Fallback;
            }
            prev_backslash = c == b'\\';
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return Outcome::Fallback;
        };
        let start = buf.len();
        let mut rest = text;
        let mut rows = 0;
        while !rest.is_empty() {
            fields.clear();
            if self.format == Format::Csv && rest.starts_with('\n') {
                // an empty csv line: left to COPY
                return Outcome::Fallback;
            }
            let split = if self.format == Format::Csv {
                split_csv(rest, self.delimiter, self.quote, self.escape, fields)
            } else {
                split_text(rest, self.delimiter, fields)
            };
            let Some(next) = split else {
                return Outcome::Fallback;
            };
            rest = &rest[next..];
            if let Err(o) = self.write_row(fields, None, buf) {
                return o;
            }
            rows += 1;
        }
        Outcome::Rows(smallvec![PreChunk {
            columns: None,
            range: start..buf.len(),
            rows
        }])
    }

    fn encode_json<'a>(
        &self,
        payload: &'a [u8],
        buf: &mut Vec<u8>,
        fields: &mut Vec<Option<Cow<'a, str>>>,
    ) -> Outcome {
        // One pass over the message (message_fields); anything it does not read as objects goes
        // to message_objects, the text path's reader, for the same error or the empty message.
        let objects = match message_fields(payload) {
            Some(o) => o,
            None => match message_objects(payload) {
                Ok(o) if o.is_empty() => return Outcome::Empty,
                Ok(_) => return Outcome::Fallback,
                Err(e) => return json_rejected(e),
            },
        };
        if objects.is_empty() {
            return Outcome::Empty;
        }
        let mut chunks: SmallVec<[PreChunk; 1]> = SmallVec::new();
        for obj in &objects {
            fields.clear();
            let mut present: SmallVec<[usize; 16]> = SmallVec::new();
            for (i, c) in self.rows.columns.iter().enumerate() {
                let Some(raw) = obj.get(c.name.as_str()) else {
                    continue;
                };
                present.push(i);
                let v = raw.get();
                fields.push(match v.as_bytes().first() {
                    Some(b'n') => None,
                    // a string without escapes is its bytes between the quotes (valid JSON:
                    // message_fields checked it); with escapes, serde reads them
                    Some(b'"') if !v.contains('\\') => Some(Cow::Borrowed(&v[1..v.len() - 1])),
                    Some(b'"') => match serde_json::from_str::<Cow<str>>(v) {
                        Ok(s) => Some(s),
                        Err(e) => return json_rejected(JsonError::Invalid(e.to_string())),
                    },
                    _ => Some(Cow::Borrowed(v)),
                });
            }
            if present.is_empty() {
                return json_rejected(JsonError::NoMatchingField);
            }
            let at = buf.len();
            if let Err(o) = self.write_row(fields, Some(&present), buf) {
                return o;
            }
            let all = present.len() == self.rows.columns.len();
            add_row(&mut chunks, (!all).then_some(&present[..]), at..buf.len());
        }
        Outcome::Rows(chunks)
    }

    /// One tuple of `fields` (for the columns `present`, None = every column, in order).
    fn write_row(
        &self,
        fields: &[Option<Cow<str>>],
        present: Option<&[usize]>,
        buf: &mut Vec<u8>,
    ) -> Result<(), Outcome> {
        let n = present.map_or(self.rows.columns.len(), <[usize]>::len);
        if fields.len() > n {
            return Err(Outcome::Rejected(ConvError::new(
                "22P04",
                "extra data after last expected column",
            )));
        }
        buf.extend_from_slice(&(n as i16).to_be_bytes());
        for k in 0..n {
            let plan: &ColumnPlan = &self.rows.columns[present.map_or(k, |p| p[k])];
            let Some(field) = fields.get(k) else {
                return Err(Outcome::Rejected(ConvError::new(
                    "22P04",
                    format!("missing data for column \"{}\"", plan.name),
                )));
            };
            let Some(text) = field else {
                buf.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            };
            if text.as_bytes().contains(&0) {
                return Err(Outcome::Fallback);
            }
            match push_binary_field(plan, &Value::Text(Cow::Borrowed(text)), buf) {
                Ok(Encoded::Written) => {}
                Ok(Encoded::Fallback) => return Err(Outcome::Fallback),
                Err(e) => return Err(Outcome::Rejected(e)),
            }
        }
        Ok(())
    }
}

fn json_rejected(e: JsonError) -> Outcome {
    // The sqlstates the text path's preparation gives (prepare.rs).
    let sqlstate = match e {
        JsonError::Invalid(_) => "22032",
        _ => "22P02",
    };
    Outcome::Rejected(ConvError::new(sqlstate, e.to_string()))
}

/// A COPY text line's fields (CopyReadAttributesText): split at the delimiter, `\N` (before
/// unescaping) is NULL, backslash escapes read as COPY reads them. Returns where the line ends
/// (after its newline), or None to decline (an escape giving a byte that is not plain ASCII, or
/// `\.`).
fn split_text<'a>(
    s: &'a str,
    delimiter: u8,
    fields: &mut Vec<Option<Cow<'a, str>>>,
) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut start = 0;
    let mut owned: Option<String> = None;
    loop {
        let c = b.get(i).copied();
        match c {
            None | Some(b'\n') => {
                push_text_field(s, start, i, owned.take(), fields);
                return Some(if c.is_some() { i + 1 } else { i });
            }
            Some(d) if d == delimiter => {
                push_text_field(s, start, i, owned.take(), fields);
                i += 1;
                start = i;
            }
            Some(b'\\') => {
                let o = owned.get_or_insert_with(|| s[start..i].to_string());
                let e = *b.get(i + 1)?;
                let (ch, used) = match e {
                    b'0'..=b'7' => {
                        let mut v = 0u32;
                        let mut k = 0;
                        while k < 3 && matches!(b.get(i + 1 + k), Some(b'0'..=b'7')) {
                            v = v * 8 + u32::from(b[i + 1 + k] - b'0');
                            k += 1;
                        }
                        (v & 0xff, k)
                    }
                    b'x' if b.get(i + 2).is_some_and(u8::is_ascii_hexdigit) => {
                        let mut v = 0u32;
                        let mut k = 0;
                        while k < 2 && b.get(i + 2 + k).is_some_and(u8::is_ascii_hexdigit) {
                            v = v * 16 + (b[i + 2 + k] as char).to_digit(16).unwrap();
                            k += 1;
                        }
                        (v, k + 1)
                    }
                    b'b' => (8, 1),
                    b'f' => (12, 1),
                    b'n' => (10, 1),
                    b'r' => (13, 1),
                    b't' => (9, 1),
                    b'v' => (11, 1),
                    b'.' => return None,
                    _ => {
                        // any other character stands for itself (a multi-byte one whole)
                        let ch = s[i + 1..].chars().next()?;
                        o.push(ch);
                        i += 1 + ch.len_utf8();
                        continue;
                    }
                };
                if ch == 0 || ch >= 0x80 {
                    return None;
                }
                o.push(ch as u8 as char);
                i += 1 + used;
            }
            Some(_) => {
                // a whole character (the delimiter and the specials are ASCII)
                let len = utf8_len(b[i]);
                if let Some(o) = owned.as_mut() {
                    o.push_str(&s[i..i + len]);
                }
                i += len;
            }
        }
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn push_text_field<'a>(
    s: &'a str,
    start: usize,
    end: usize,
    owned: Option<String>,
    fields: &mut Vec<Option<Cow<'a, str>>>,
) {
    let raw = &s[start..end];
    fields.push(if raw == "\\N" {
        None
    } else {
        Some(match owned {
            Some(o) => Cow::Owned(o),
            None => Cow::Borrowed(raw),
        })
    });
}

/// A csv line's fields (CopyReadAttributesCSV): quotes may open anywhere in a field, the escape
/// counts inside quotes before a quote or escape, an unquoted empty field is NULL and a quoted
/// one the empty string. Returns where the line ends, or None to decline (an unterminated quote).
fn split_csv<'a>(
    s: &'a str,
    delimiter: u8,
    quote: u8,
    escape: u8,
    fields: &mut Vec<Option<Cow<'a, str>>>,
) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        let mut saw_quote = false;
        let mut owned: Option<String> = None;
        let end;
        loop {
            match b.get(i).copied() {
                None | Some(b'\n') => {
                    end = i;
                    break;
                }
                Some(c) if c == delimiter => {
                    end = i;
                    break;
                }
                Some(c) if c == quote => {
                    saw_quote = true;
                    let o = owned.get_or_insert_with(|| s[start..i].to_string());
                    i += 1;
                    loop {
                        let c = *b.get(i)?;
                        if c == escape
                            && escape != quote
                            && matches!(b.get(i + 1), Some(&n) if n == quote || n == escape)
                        {
                            i += 1;
                            o.push(b[i] as char);
                            i += 1;
                            continue;
                        }
                        if c == quote {
                            if escape == quote && b.get(i + 1) == Some(&quote) {
                                o.push(quote as char);
                                i += 2;
                                continue;
                            }
                            i += 1;
                            break;
                        }
                        let len = utf8_len(c);
                        o.push_str(&s[i..i + len]);
                        i += len;
                    }
                }
                Some(c) => {
                    let len = utf8_len(c);
                    if let Some(o) = owned.as_mut() {
                        o.push_str(&s[i..i + len]);
                    }
                    i += len;
                }
            }
        }
        fields.push(match owned {
            Some(o) => Some(Cow::Owned(o)),
            None if !saw_quote && start == end => None,
            None => Some(Cow::Borrowed(&s[start..end])),
        });
        match b.get(end).copied() {
            Some(b'\n') => return Some(end + 1),
            None => return Some(end),
            _ => i = end + 1,
        }
    }
}

/// What became of one message on the fast path.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its rows, in chunks by the columns they fill (ranges into the buffer it was written to).
    Rows(SmallVec<[PreChunk; 1]>),
    /// No rows (an empty message; an empty json array).
    Empty,
    /// A dead letter, with the error the text path would have given it.
    Rejected(ConvError),
    /// The text path decides.
    Fallback,
}

/// Adds a row (at `range`, just after the last chunk's) filling `columns` (None: every column) to
/// a message's chunks: it extends the last chunk when that fills the same columns.
pub fn add_row(chunks: &mut SmallVec<[PreChunk; 1]>, columns: Option<&[usize]>, range: Range<usize>) {
    match chunks.last_mut() {
        Some(c) if c.columns.as_deref() == columns => {
            c.range.end = range.end;
            c.rows += 1;
        }
        _ => chunks.push(PreChunk { columns: columns.map(<[usize]>::to_vec), range, rows: 1 }),
    }
}

/// A run of one message's rows filling the same columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreChunk {
    /// Indexes into the plan's columns; None = every column.
    pub columns: Option<Vec<usize>>,
    pub range: Range<usize>,
    pub rows: usize,
}

/// A message as its source's reader made it ready: the rows in the buffer of its chunk of
/// messages (shared by them), or why not.
#[derive(Debug, Clone)]
pub enum Pre {
    Rows {
        plan: u64,
        buf: Arc<Vec<u8>>,
        chunks: SmallVec<[PreChunk; 1]>,
    },
    Empty {
        plan: u64,
    },
    Rejected {
        plan: u64,
        error: ConvError,
    },
    /// Not made ready (no plan, or declined): the text path.
    Fallback,
}

impl Pre {
    /// The plan the message was made with (None: none).
    pub fn plan(&self) -> Option<u64> {
        match self {
            Pre::Rows { plan, .. } | Pre::Empty { plan } | Pre::Rejected { plan, .. } => {
                Some(*plan)
            }
            Pre::Fallback => None,
        }
    }
}

/// Makes a chunk of payloads ready (the reader thread's step): one shared buffer for their rows.
pub fn prepare_chunk<'a>(
    plan: &FastPlan,
    payloads: impl Iterator<Item = Option<&'a [u8]>>,
    size_hint: usize,
) -> Vec<Pre> {
    let mut buf = Vec::with_capacity(size_hint);
    let outcomes: Vec<Option<Outcome>> = match &plan.typed {
        Some(typed) => {
            let payloads: Vec<Option<&[u8]>> = payloads.collect();
            typed.0.encode_chunk(plan, &payloads, &mut buf)
        }
        None => {
            let mut fields = Vec::with_capacity(plan.rows.columns.len());
            payloads
                .map(|p| {
                    fields.clear();
                    p.map(|p| plan.encode_with(p, &mut buf, &mut fields))
                })
                .collect()
        }
    };
    let buf = Arc::new(buf);
    outcomes
        .into_iter()
        .map(|o| match o {
            // a message without a value (a tombstone) holds no rows
            None | Some(Outcome::Empty) => Pre::Empty { plan: plan.id },
            Some(Outcome::Rows(chunks)) => Pre::Rows {
                plan: plan.id,
                buf: buf.clone(),
                chunks,
            },
            Some(Outcome::Rejected(error)) => Pre::Rejected {
                plan: plan.id,
                error,
            },
            Some(Outcome::Fallback) => Pre::Fallback,
        })
        .collect()
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
