//! Message formats (`text`, `csv`, `json`, `raw`) and how a message's bytes become COPY input.
//!
//! A Kafka or Kinesis message always holds whole rows: for `text` and `csv` one or more lines (a
//! final newline is added when missing), for `json` one object or an array of objects. Before a
//! message joins a COPY stream it is checked so it yields exactly the rows COPY would read from
//! that message alone as a file, or is rejected (a dead letter): an unterminated CSV quote or a
//! `\.` end-of-data line would otherwise merge or truncate rows, a text-format `\.` at the end of a
//! line would silently vanish, and a lone carriage return is a line end or an error depending on
//! what came before it in the stream. A `raw` message is one value, whatever its bytes (prepare.rs
//! encodes it).

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Csv,
    Json,
    /// The whole message value is one column's value.
    Raw,
    /// Avro in the schema registry's framing: records' fields fill columns by name (decode.rs).
    Avro,
    /// Protobuf in the schema registry's framing (message indexes after the id), as Avro.
    Protobuf,
    /// Debezium change events, JSON converter (with or without the schema/payload wrapper),
    /// applied to a keyed table.
    Debezium,
    /// Debezium change events in Avro through the schema registry.
    DebeziumAvro,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, FormatError> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "raw" => Ok(Format::Raw),
            "avro" => Ok(Format::Avro),
            "protobuf" => Ok(Format::Protobuf),
            "debezium" => Ok(Format::Debezium),
            "debezium-avro" => Ok(Format::DebeziumAvro),
            _ => Err(FormatError::UnknownFormat(s.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Raw => "raw",
            Format::Avro => "avro",
            Format::Protobuf => "protobuf",
            Format::Debezium => "debezium",
            Format::DebeziumAvro => "debezium-avro",
        }
    }

    /// The formats whose messages name a schema in a schema registry (consume_begin's
    /// `schema_registry`), decoded by a `decode::TypedDecoder`.
    pub fn needs_registry(self) -> bool {
        matches!(self, Format::Avro | Format::Protobuf | Format::DebeziumAvro)
    }

    /// Change events (insert/update/delete of a keyed row), not rows to append.
    pub fn change_events(self) -> bool {
        matches!(self, Format::Debezium | Format::DebeziumAvro)
    }

    /// A format whose messages are decoded into values rather than read as COPY text: no COPY
    /// options (delimiter, quote, escape) apply.
    pub fn decoded(self) -> bool {
        !matches!(self, Format::Text | Format::Csv)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("unknown format \"{0}\" (expected text, csv, json, raw, avro, protobuf, debezium or debezium-avro)")]
    UnknownFormat(String),
    #[error("{0} must be a single one-byte character")]
    NotOneByte(&'static str),
    #[error("{0} is available only in csv format")]
    CsvOnly(&'static str),
    #[error("json format takes no {0}")]
    NotForJson(&'static str),
    #[error("raw format takes no {0} (the whole message is one value)")]
    NotForRaw(&'static str),
    #[error("{0} format takes no {1} (its messages are decoded, not read as COPY text)")]
    NotForDecoded(&'static str, &'static str),
    #[error("delimiter \"{0}\" cannot be used in text format (COPY would read it as part of an escape, \\N or \\.)")]
    TextDelimiter(char),
    #[error("delimiter and quote must be different")]
    DelimiterIsQuote,
    #[error("delimiter cannot be newline, carriage return or backslash")]
    BadDelimiter,
    #[error("message ends inside a quoted CSV field")]
    UnterminatedQuote,
    #[error("message contains a line \"\\.\" (end-of-data marker), which would end the COPY early")]
    EndOfDataMarker,
    #[error("message contains \"\\.\" (COPY's end-of-data marker) outside a line of its own; text format cannot read it as data (write a period as \".\" and a backslash as \"\\\\\")")]
    BackslashPeriod,
    #[error("message contains a carriage return that does not end a line in \"\\r\\n\" (write it as \"\\r\" in text format, or inside a quoted csv field)")]
    BareCarriageReturn,
    #[error("message ends with a backslash that escapes its final newline")]
    TrailingBackslash,
}

/// COPY options of a consumer, as given to `consume_begin`. `None` = COPY's default for the format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: Format,
    pub delimiter: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
}

fn one_byte(v: &Option<String>, what: &'static str) -> Result<Option<u8>, FormatError> {
    match v {
        None => Ok(None),
        Some(s) if s.len() == 1 => Ok(Some(s.as_bytes()[0])),
        Some(_) => Err(FormatError::NotOneByte(what)),
    }
}

impl CopyOptions {
    /// Checks the options the way COPY would, so a mistake is an error at `consume_begin`.
    pub fn new(
        format: &str,
        delimiter: Option<String>,
        quote: Option<String>,
        escape: Option<String>,
    ) -> Result<CopyOptions, FormatError> {
        let format = Format::parse(format)?;
        let opts = CopyOptions { format, delimiter, quote, escape };
        let d = one_byte(&opts.delimiter, "delimiter")?;
        let q = one_byte(&opts.quote, "quote")?;
        one_byte(&opts.escape, "escape")?;
        if format == Format::Raw {
            for (v, what) in [(&opts.delimiter, "delimiter"), (&opts.quote, "quote"), (&opts.escape, "escape")] {
                if v.is_some() {
                    return Err(FormatError::NotForRaw(what));
                }
            }
        }
        if matches!(format, Format::Avro | Format::Protobuf | Format::Debezium | Format::DebeziumAvro) {
            for (v, what) in [(&opts.delimiter, "delimiter"), (&opts.quote, "quote"), (&opts.escape, "escape")] {
                if v.is_some() {
                    return Err(FormatError::NotForDecoded(format.name(), what));
                }
            }
        }
        if format != Format::Csv {
            if opts.quote.is_some() {
                return Err(FormatError::CsvOnly("quote"));
            }
            if opts.escape.is_some() {
                return Err(FormatError::CsvOnly("escape"));
            }
        }
        if format == Format::Json && opts.delimiter.is_some() {
            return Err(FormatError::NotForJson("delimiter"));
        }
        if let Some(d) = d {
            if d == b'\n' || d == b'\r' || d == b'\\' {
                return Err(FormatError::BadDelimiter);
            }
            // COPY's text format refuses what an escape (`\t`, `\101`), `\.` or `\N` could mean.
            // consume_begin asks PostgreSQL itself; this keeps a worker from starting with such a
            // consumer stored by an older version.
            if format == Format::Text && (d == b'.' || d == b'N' || d.is_ascii_lowercase() || d.is_ascii_digit()) {
                return Err(FormatError::TextDelimiter(d as char));
            }
            if Some(d) == q.or(if format == Format::Csv { Some(b'"') } else { None }) {
                return Err(FormatError::DelimiterIsQuote);
            }
        }
        Ok(opts)
    }

    fn quote_byte(&self) -> u8 {
        self.quote.as_ref().map(|s| s.as_bytes()[0]).unwrap_or(b'"')
    }

    fn escape_byte(&self) -> u8 {
        self.escape.as_ref().map(|s| s.as_bytes()[0]).unwrap_or_else(|| self.quote_byte())
    }

    /// Checks one `text` or `csv` message and returns how many rows it holds.
    pub fn check_message(&self, msg: &[u8]) -> Result<usize, FormatError> {
        match self.format {
            Format::Text => check_text(msg),
            Format::Csv => check_csv(msg, self.quote_byte(), self.escape_byte()),
            _ => unreachable!("only text and csv messages are checked; the others are converted"),
        }
    }

    /// As `push_message`, with `suffix` (the metadata columns' values, each after a delimiter)
    /// written at the end of every row the message holds.
    pub fn push_message_with(&self, buf: &mut Vec<u8>, msg: &[u8], suffix: &[u8]) -> Result<usize, FormatError> {
        if suffix.is_empty() {
            return self.push_message(buf, msg);
        }
        let body = normalize_line_ends(msg, self.format, self.quote_byte(), self.escape_byte());
        let rows = self.check_message(&body)?;
        buf.reserve(body.len() + rows * (suffix.len() + 1));
        let mut start = 0;
        for end in self.row_ends(&body) {
            buf.extend_from_slice(&body[start..end]);
            buf.extend_from_slice(suffix);
            buf.push(b'\n');
            start = end + 1;
        }
        if start < body.len() {
            buf.extend_from_slice(&body[start..]);
            buf.extend_from_slice(suffix);
            buf.push(b'\n');
        }
        Ok(rows)
    }

    /// The positions of the newlines that end rows in a checked message (text: not escaped by a
    /// backslash; csv: outside quotes), as `check_message` counts them.
    fn row_ends<'m>(&self, msg: &'m [u8]) -> impl Iterator<Item = usize> + 'm {
        let (csv, quote, escape) = (self.format == Format::Csv, self.quote_byte(), self.escape_byte());
        let mut i = 0;
        let mut in_quotes = false;
        std::iter::from_fn(move || {
            while i < msg.len() {
                let b = msg[i];
                if !csv {
                    if b == b'\\' {
                        i += 2;
                        continue;
                    }
                } else if in_quotes {
                    if b == escape && escape != quote && i + 1 < msg.len() && (msg[i + 1] == quote || msg[i + 1] == escape) {
                        i += 2;
                        continue;
                    }
                    if b == quote {
                        if escape == quote && i + 1 < msg.len() && msg[i + 1] == quote {
                            i += 2;
                            continue;
                        }
                        in_quotes = false;
                    }
                } else if b == quote {
                    in_quotes = true;
                }
                i += 1;
                if b == b'\n' && !in_quotes {
                    return Some(i - 1);
                }
            }
            None
        })
    }

    /// Checks one `text` or `csv` message and appends it to a COPY stream with `\n` line ends:
    /// COPY fixes the line-ending style from the first line it reads, so a `\r\n` message next to
    /// a `\n` one would fail the whole stream. `\r\n` inside a quoted csv field is data and kept.
    /// Returns the rows the message holds; on error nothing is appended.
    pub fn push_message(&self, buf: &mut Vec<u8>, msg: &[u8]) -> Result<usize, FormatError> {
        let body = normalize_line_ends(msg, self.format, self.quote_byte(), self.escape_byte());
        let rows = self.check_message(&body)?;
        append_message(buf, &body);
        Ok(rows)
    }
}

fn is_marker(line: &[u8]) -> bool {
    line == b"\\." || line == b"\\.\r"
}

/// Text format: lines end at every `\n` not escaped by a backslash (a backslash takes the next
/// byte as data, so `\` + newline continues the row, as in COPY). A backslash-period ends COPY's
/// data wherever it stands (PostgreSQL 15's CopyReadLineText; at the end of a line COPY drops it
/// and reads on, so `9\tmid\.` would be stored as `mid`): it cannot be data, so it is refused.
fn check_text(msg: &[u8]) -> Result<usize, FormatError> {
    let mut rows = 0;
    let mut i = 0;
    while i < msg.len() {
        match msg[i] {
            b'\\' => match msg.get(i + 1) {
                // The newline appended after the message would be escaped and join the next one.
                None => return Err(FormatError::TrailingBackslash),
                Some(b'\n') if i + 2 == msg.len() => return Err(FormatError::TrailingBackslash),
                Some(b'.') if line_is_marker(msg, i) => return Err(FormatError::EndOfDataMarker),
                Some(b'.') => return Err(FormatError::BackslashPeriod),
                Some(_) => i += 2,
            },
            b'\n' => {
                rows += 1;
                i += 1;
            }
            // `\r\n` line ends were turned into `\n` before; a carriage return left here is bare.
            b'\r' => return Err(FormatError::BareCarriageReturn),
            _ => i += 1,
        }
    }
    if msg.last().is_some_and(|b| *b != b'\n') {
        rows += 1;
    }
    Ok(rows)
}

/// Whether the `\.` at `at` is alone on its line (COPY's classic end-of-data line).
fn line_is_marker(msg: &[u8], at: usize) -> bool {
    let line_start = msg[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    line_start == at && matches!(msg.get(at + 2), None | Some(b'\n'))
}

fn check_csv(msg: &[u8], quote: u8, escape: u8) -> Result<usize, FormatError> {
    if msg.is_empty() {
        return Ok(0);
    }
    let mut rows = 0;
    let mut in_quotes = false;
    let mut line_start = 0;
    let mut i = 0;
    while i < msg.len() {
        let b = msg[i];
        if in_quotes {
            if b == escape && escape != quote && i + 1 < msg.len() && (msg[i + 1] == quote || msg[i + 1] == escape) {
                i += 2;
                continue;
            }
            if b == quote {
                if escape == quote && i + 1 < msg.len() && msg[i + 1] == quote {
                    i += 2;
                    continue;
                }
                in_quotes = false;
            }
        } else if b == quote {
            in_quotes = true;
        } else if b == b'\r' {
            // `\r\n` outside quotes was turned into `\n` before; this one is bare.
            return Err(FormatError::BareCarriageReturn);
        } else if b == b'\n' {
            if is_marker(&msg[line_start..i]) {
                return Err(FormatError::EndOfDataMarker);
            }
            rows += 1;
            line_start = i + 1;
        }
        i += 1;
    }
    if in_quotes {
        return Err(FormatError::UnterminatedQuote);
    }
    if line_start < msg.len() {
        if is_marker(&msg[line_start..]) {
            return Err(FormatError::EndOfDataMarker);
        }
        rows += 1;
    }
    Ok(rows)
}

/// `msg` with every `\r\n` that ends a line turned into `\n` (borrowed when there is no `\r`).
fn normalize_line_ends(msg: &[u8], format: Format, quote: u8, escape: u8) -> std::borrow::Cow<'_, [u8]> {
    if !msg.contains(&b'\r') {
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut out = Vec::with_capacity(msg.len());
    let mut in_quotes = false;
    let mut i = 0;
    while i < msg.len() {
        let b = msg[i];
        if format == Format::Text && b == b'\\' {
            // An escaped byte is data: `\\\r\n` is a carriage return in a value, then a line end.
            out.extend_from_slice(&msg[i..(i + 2).min(msg.len())]);
            i += 2;
            continue;
        }
        if format == Format::Csv {
            if in_quotes {
                if b == escape && escape != quote && i + 1 < msg.len() && (msg[i + 1] == quote || msg[i + 1] == escape) {
                    out.extend_from_slice(&msg[i..i + 2]);
                    i += 2;
                    continue;
                }
                if b == quote {
                    if escape == quote && i + 1 < msg.len() && msg[i + 1] == quote {
                        out.extend_from_slice(&msg[i..i + 2]);
                        i += 2;
                        continue;
                    }
                    in_quotes = false;
                }
            } else if b == quote {
                in_quotes = true;
            }
        }
        if b == b'\r' && !in_quotes && msg.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Appends a checked message to a COPY stream, ending it with a newline.
pub fn append_message(buf: &mut Vec<u8>, msg: &[u8]) {
    if msg.is_empty() {
        return;
    }
    buf.extend_from_slice(msg);
    if msg.last() != Some(&b'\n') {
        buf.push(b'\n');
    }
}

/// Appends `value` to a text-format COPY line, escaping what text format treats specially.
pub fn push_text_field(buf: &mut Vec<u8>, value: &str) {
    push_text_bytes(buf, value.as_bytes())
}

/// `push_text_field` for bytes (tab-delimited text format).
pub fn push_text_bytes(buf: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            _ => buf.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(f: &str) -> CopyOptions {
        CopyOptions::new(f, None, None, None).unwrap()
    }

    #[test]
    fn options_are_validated_like_copy() {
        assert!(CopyOptions::new("TEXT", Some("|".into()), None, None).is_ok());
        assert_eq!(Format::parse("xml"), Err(FormatError::UnknownFormat("xml".into())));
        assert_eq!(CopyOptions::new("text", Some("||".into()), None, None), Err(FormatError::NotOneByte("delimiter")));
        assert_eq!(CopyOptions::new("text", None, Some("'".into()), None), Err(FormatError::CsvOnly("quote")));
        assert_eq!(CopyOptions::new("text", None, None, Some("\\".into())), Err(FormatError::CsvOnly("escape")));
        assert_eq!(CopyOptions::new("csv", Some("\"".into()), None, None), Err(FormatError::DelimiterIsQuote));
        assert_eq!(CopyOptions::new("csv", Some("\n".into()), None, None), Err(FormatError::BadDelimiter));
        assert_eq!(CopyOptions::new("json", Some(",".into()), None, None), Err(FormatError::NotForJson("delimiter")));
        assert!(CopyOptions::new("csv", Some(";".into()), Some("'".into()), Some("\\".into())).is_ok());
        for d in [".", "N", "a", "z", "0", "9"] {
            assert_eq!(CopyOptions::new("text", Some(d.into()), None, None), Err(FormatError::TextDelimiter(d.chars().next().unwrap())));
        }
        assert!(CopyOptions::new("csv", Some(".".into()), None, None).is_ok());
        assert!(CopyOptions::new("text", Some("A".into()), None, None).is_ok());
    }

    #[test]
    fn text_messages_count_lines_and_reject_markers() {
        let t = opts("text");
        assert_eq!(t.check_message(b"1\ta"), Ok(1));
        assert_eq!(t.check_message(b"1\ta\n2\tb\n"), Ok(2));
        assert_eq!(t.check_message(b""), Ok(0));
        assert_eq!(t.check_message(b"1\n\\.\n2"), Err(FormatError::EndOfDataMarker));
        assert_eq!(t.check_message(b"a\\"), Err(FormatError::TrailingBackslash));
        assert_eq!(t.check_message(b"a\\\\"), Ok(1));
    }

    #[test]
    fn text_backslash_period_is_refused_wherever_it_stands() {
        // Issue 11 item 11: COPY drops a `\.` that ends a non-empty line and reads on, so this
        // message was stored as (9, 'mid'). Checked against PostgreSQL 15.20 COPY FROM a file.
        let t = opts("text");
        assert_eq!(t.check_message(b"9\tmid\\."), Err(FormatError::BackslashPeriod));
        assert_eq!(t.check_message(b"9\tmid\\.\n10\tafter\n"), Err(FormatError::BackslashPeriod));
        // In the middle of a field COPY raises "end-of-copy marker corrupt": refused here already.
        assert_eq!(t.check_message(b"9\tmi\\.d"), Err(FormatError::BackslashPeriod));
        assert_eq!(t.check_message(b"\\.x\t1"), Err(FormatError::BackslashPeriod));
        assert_eq!(t.check_message(b"\\."), Err(FormatError::EndOfDataMarker));
        // An escaped backslash before a period is data: `\\.` is the text `\.`.
        assert_eq!(t.check_message(b"9\tmid\\\\."), Ok(1));
        assert_eq!(t.check_message(b"9\t\\\\.\n"), Ok(1));
    }

    #[test]
    fn text_escaped_newlines_continue_the_row_as_in_copy() {
        let t = opts("text");
        // COPY reads `1<TAB>a\<LF>b` as one row whose value holds a newline.
        assert_eq!(t.check_message(b"1\ta\\\nb\n2\tc"), Ok(2));
        assert_eq!(t.check_message(b"1\ta\\\n"), Err(FormatError::TrailingBackslash));
        assert_eq!(t.check_message(b"1\ta\\\\\n"), Ok(1));
    }

    #[test]
    fn bare_carriage_returns_are_refused() {
        // COPY takes a lone CR as the line end only when it comes first in the stream, and
        // raises "literal carriage return found in data" otherwise: its meaning would depend on
        // the neighbours. `\r\n` line ends and an escaped CR (`\` + CR, data) are fine.
        let t = opts("text");
        let mut buf = Vec::new();
        assert_eq!(t.push_message(&mut buf, b"1\ta\r2\tb"), Err(FormatError::BareCarriageReturn));
        assert_eq!(t.push_message(&mut buf, b"1\ta\r"), Err(FormatError::BareCarriageReturn));
        assert!(buf.is_empty());
        assert_eq!(t.push_message(&mut buf, b"1\ta\\\r\n2\tb\r\n"), Ok(2));
        assert_eq!(buf, b"1\ta\\\r\n2\tb\n".to_vec());
        let c = opts("csv");
        let mut buf = Vec::new();
        assert_eq!(c.push_message(&mut buf, b"1,a\r2,b"), Err(FormatError::BareCarriageReturn));
        assert_eq!(c.push_message(&mut buf, b"1,\"a\rb\"\r\n"), Ok(1));
        assert_eq!(buf, b"1,\"a\rb\"\n".to_vec());
    }

    #[test]
    fn csv_messages_keep_quoted_newlines_inside_one_row() {
        let c = opts("csv");
        assert_eq!(c.check_message(b"1,\"a\nb\"\n2,c"), Ok(2));
        assert_eq!(c.check_message(b"1,\"a\"\"b\""), Ok(1));
        assert_eq!(c.check_message(b"1,\"open"), Err(FormatError::UnterminatedQuote));
        assert_eq!(c.check_message(b"1,a\n\\.\n"), Err(FormatError::EndOfDataMarker));
        assert_eq!(c.check_message(b"1,\"\n\\.\n\""), Ok(1));
        let custom = CopyOptions::new("csv", None, Some("'".into()), Some("\\".into())).unwrap();
        assert_eq!(custom.check_message(b"1,'it\\'s'\n"), Ok(1));
        assert_eq!(custom.check_message(b"1,'it\\'s"), Err(FormatError::UnterminatedQuote));
    }

    #[test]
    fn crlf_line_ends_become_lf_outside_quotes() {
        let t = opts("text");
        let mut buf = Vec::new();
        assert_eq!(t.push_message(&mut buf, b"1\ta\r\n2\tb"), Ok(2));
        assert_eq!(t.push_message(&mut buf, b"3\tc\n"), Ok(1));
        assert_eq!(t.push_message(&mut buf, b"4\td\r\n"), Ok(1));
        assert_eq!(buf, b"1\ta\n2\tb\n3\tc\n4\td\n".to_vec());
        let c = opts("csv");
        let mut buf = Vec::new();
        assert_eq!(c.push_message(&mut buf, b"1,\"x\r\ny\"\r\n2,z\r\n"), Ok(2));
        assert_eq!(buf, b"1,\"x\r\ny\"\n2,z\n".to_vec());
        let mut untouched = b"keep".to_vec();
        assert_eq!(c.push_message(&mut untouched, b"1,\"open\r\n"), Err(FormatError::UnterminatedQuote));
        assert_eq!(untouched, b"keep".to_vec());
    }

    #[test]
    fn appended_messages_end_in_newline() {
        let mut buf = Vec::new();
        append_message(&mut buf, b"a");
        append_message(&mut buf, b"b\n");
        append_message(&mut buf, b"");
        assert_eq!(buf, b"a\nb\n");
    }

    #[test]
    fn text_fields_are_escaped() {
        let mut buf = Vec::new();
        push_text_field(&mut buf, "a\tb\nc\\d\re");
        assert_eq!(buf, b"a\\tb\\nc\\\\d\\re");
    }

    #[test]
    fn raw_takes_no_options() {
        assert_eq!(Format::parse("RAW"), Ok(Format::Raw));
        assert!(CopyOptions::new("raw", None, None, None).is_ok());
        assert_eq!(CopyOptions::new("raw", Some(",".into()), None, None), Err(FormatError::NotForRaw("delimiter")));
        assert_eq!(CopyOptions::new("raw", None, Some("'".into()), None), Err(FormatError::NotForRaw("quote")));
        assert_eq!(CopyOptions::new("raw", None, None, Some("\\".into())), Err(FormatError::NotForRaw("escape")));
    }

    #[test]
    fn a_suffix_goes_before_every_row_end() {
        let t = opts("text");
        let mut buf = Vec::new();
        // an escaped newline continues the row; \r\n ends become \n
        assert_eq!(t.push_message_with(&mut buf, b"1\ta\\\nb\r\n2\t\\\\\n3", b"|m"), Ok(3));
        assert_eq!(buf, b"1\ta\\\nb|m\n2\t\\\\|m\n3|m\n".to_vec());
        let c = CopyOptions::new("csv", None, Some("'".into()), Some("\\".into())).unwrap();
        let mut buf = Vec::new();
        assert_eq!(c.push_message_with(&mut buf, b"1,'a\nb\\'\n'\n2,c\n", b",m"), Ok(2));
        assert_eq!(buf, b"1,'a\nb\\'\n',m\n2,c,m\n".to_vec());
        let mut buf = b"keep".to_vec();
        assert_eq!(c.push_message_with(&mut buf, b"1,'open", b",m"), Err(FormatError::UnterminatedQuote));
        assert_eq!(buf, b"keep".to_vec());
    }
}
