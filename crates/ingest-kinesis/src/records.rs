//! GetRecords' answer read without the SDK's deserializer.
//!
//! The SDK still builds, signs, sends and retries the call; an interceptor (`TakeBody`) takes the
//! body of a successful answer before the SDK deserializes it (leaving it an empty answer), and
//! `parse` reads it here straight into `RawRecord`s: one pass over the bytes, each string copied
//! once, where the SDK's schema-driven deserializer made a `Record` of owned strings and a blob
//! per record that were copied again. The profile of a worker ingesting from kinesalite had the
//! SDK's GetRecords call at a third of the worker's CPU, its deserialization alone at a fifth
//! (BENCHMARKS.md, "Kinesis: where the worker's time goes").
//!
//! The values are the SDK's: the same base64 decoder, JSON unescaping and epoch-seconds
//! conversion (`aws_smithy_types`, `aws_smithy_json`); a differential test (records_tests.rs)
//! reads the same answers both ways.

use crate::{Fetched, KinesisError, RawRecord};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::date_time::{DateTime, Format};
use ingest_core::kinesis::seqnum::SeqNum;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// What the SDK deserializes instead of a successful answer that `TakeBody` took.
const EMPTY_ANSWER: &str = r#"{"Records":[]}"#;

/// Takes the body of a successful GetRecords answer for `parse`, before the SDK deserializes it.
/// Error answers are left to the SDK (their classification is its).
#[derive(Debug, Clone, Default)]
pub(crate) struct TakeBody(Arc<Mutex<Option<SdkBody>>>);

impl TakeBody {
    /// The body taken from the last successful answer, if any.
    pub(crate) fn take(&self) -> Option<SdkBody> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

impl Intercept for TakeBody {
    fn name(&self) -> &'static str {
        "pipeline_ingest::TakeBody"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response_mut();
        if response.status().is_success() {
            let body = std::mem::replace(response.body_mut(), SdkBody::from(EMPTY_ANSWER));
            *self.0.lock().map_err(|_| "TakeBody: poisoned")? = Some(body);
        }
        Ok(())
    }
}

/// Reads a taken body into `buf` (cleared first; its capacity is kept between calls).
pub(crate) async fn read_body(mut body: SdkBody, buf: &mut Vec<u8>) -> Result<(), KinesisError> {
    use http_body::Body;
    buf.clear();
    if let Some(b) = body.bytes() {
        buf.extend_from_slice(b);
        return Ok(());
    }
    loop {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            None => return Ok(()),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    buf.extend_from_slice(data);
                }
            }
            Some(Err(e)) => {
                return Err(KinesisError::Unavailable(format!("reading the GetRecords answer failed: {}", crate::describe(&*e))))
            }
        }
    }
}

/// A GetRecords answer (awsJson1.1) read into records: `Records` (SequenceNumber, Data,
/// PartitionKey, ApproximateArrivalTimestamp), `NextShardIterator` and `MillisBehindLatest`;
/// anything else (ChildShards, EncryptionType, members added later) is skipped.
pub(crate) fn parse(body: &[u8]) -> Result<Fetched, KinesisError> {
    let mut p = Parser { b: body, i: 0, depth: 0 };
    let mut out = Fetched { records: Vec::new(), next_iterator: None, millis_behind_latest: None };
    p.object(|p, key| {
        match key {
            b"Records" => {
                if !p.null() {
                    // (a record takes 130 bytes of an answer at least, with real sequence numbers; 10,000 at most)
                    out.records.reserve((body.len() / 130).min(10_000));
                    p.array(|p| {
                        let r = p.record()?;
                        out.records.push(r);
                        Ok(())
                    })?;
                }
            }
            b"NextShardIterator" => out.next_iterator = p.opt_string()?.map(Cow::into_owned),
            b"MillisBehindLatest" => {
                out.millis_behind_latest = if p.null() { None } else { Some(p.integer()?) };
            }
            _ => p.skip()?,
        }
        Ok(())
    })
    .map_err(|e| match e {
        Bad::Json(what, at) => KinesisError::Refused(format!("Kinesis returned a GetRecords answer that is not valid: {what} at byte {at}")),
        Bad::Kinesis(k) => k,
    })?;
    Ok(out)
}

enum Bad {
    Json(&'static str, usize),
    Kinesis(KinesisError),
}

/// The JSON nesting depth skipped values may have (the SDK's deserializer stops at 128 too).
const MAX_DEPTH: usize = 128;

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn bad(&self, what: &'static str) -> Bad {
        Bad::Json(what, self.i)
    }

    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    fn eat(&mut self, c: u8, what: &'static str) -> Result<(), Bad> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.bad(what))
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    /// A `null` (consumed) or not (nothing consumed).
    fn null(&mut self) -> bool {
        self.peek() == Some(b'n') && self.literal(b"null")
    }

    /// A string's bytes between its quotes, and whether it holds escapes.
    fn raw_string(&mut self) -> Result<(&'a [u8], bool), Bad> {
        self.eat(b'"', "expected a string")?;
        let start = self.i;
        let mut escaped = false;
        loop {
            match quote_or_backslash(&self.b[self.i..]) {
                Some(k) if self.b[self.i + k] == b'\\' => {
                    escaped = true;
                    self.i += k + 2;
                    if self.i > self.b.len() {
                        return Err(self.bad("unterminated string"));
                    }
                }
                Some(k) => {
                    let raw = &self.b[start..self.i + k];
                    self.i += k + 1;
                    return Ok((raw, escaped));
                }
                None => return Err(self.bad("unterminated string")),
            }
        }
    }

    fn string(&mut self) -> Result<Cow<'a, str>, Bad> {
        let (raw, escaped) = self.raw_string()?;
        let s = std::str::from_utf8(raw).map_err(|_| self.bad("a string that is not UTF-8"))?;
        if !escaped {
            return Ok(Cow::Borrowed(s));
        }
        aws_smithy_json::deserialize::EscapedStr::new(s)
            .to_unescaped()
            .map(|u| Cow::Owned(u.into_owned()))
            .map_err(|_| self.bad("a bad escape in a string"))
    }

    fn opt_string(&mut self) -> Result<Option<Cow<'a, str>>, Bad> {
        if self.null() {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    /// A number's text.
    fn number(&mut self) -> Result<&'a str, Bad> {
        self.peek();
        let start = self.i;
        while self.b.get(self.i).is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
            self.i += 1;
        }
        if start == self.i {
            return Err(self.bad("expected a number"));
        }
        // (ASCII only, checked above)
        Ok(std::str::from_utf8(&self.b[start..self.i]).unwrap_or(""))
    }

    fn integer(&mut self) -> Result<i64, Bad> {
        self.number()?.parse().map_err(|_| self.bad("expected an integer"))
    }

    /// A member's name: its bytes as written (the names read here are ASCII, compared as
    /// bytes), unescaped first if it holds escapes.
    fn key(&mut self) -> Result<Cow<'a, [u8]>, Bad> {
        let (raw, escaped) = self.raw_string()?;
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        let s = std::str::from_utf8(raw).map_err(|_| self.bad("a string that is not UTF-8"))?;
        aws_smithy_json::deserialize::EscapedStr::new(s)
            .to_unescaped()
            .map(|u| Cow::Owned(u.into_owned().into_bytes()))
            .map_err(|_| self.bad("a bad escape in a string"))
    }

    /// An object, each member's value read by `member` (given the member's name).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Result<(), Bad>) -> Result<(), Bad> {
        self.enter()?;
        self.eat(b'{', "expected an object")?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            let key = self.key()?;
            self.eat(b':', "expected ':'")?;
            member(self, &key)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.bad("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Result<(), Bad>) -> Result<(), Bad> {
        self.enter()?;
        self.eat(b'[', "expected an array")?;
        if self.peek() == Some(b']') {
            self.i += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            element(self)?;
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    self.depth -= 1;
                    return Ok(());
                }
                _ => return Err(self.bad("expected ',' or ']'")),
            }
        }
    }

    fn enter(&mut self) -> Result<(), Bad> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.bad("nested too deeply"));
        }
        Ok(())
    }

    /// Skips any value.
    fn skip(&mut self) -> Result<(), Bad> {
        match self.peek() {
            Some(b'"') => self.raw_string().map(drop),
            Some(b'{') => self.object(|p, _| p.skip()),
            Some(b'[') => self.array(Parser::skip),
            Some(b't') if self.literal(b"true") => Ok(()),
            Some(b'f') if self.literal(b"false") => Ok(()),
            Some(b'n') if self.literal(b"null") => Ok(()),
            _ => self.number().map(drop),
        }
    }

    /// One record of `Records`.
    fn record(&mut self) -> Result<RawRecord, Bad> {
        let mut seq: Option<SeqNum> = None;
        let mut partition_key = String::new();
        let mut data = Vec::new();
        let mut arrival_ms = None;
        self.object(|p, key| {
            match key {
                b"SequenceNumber" => {
                    if !p.null() {
                        seq = Some(match p.raw_string()? {
                            (raw, false) => SeqNum::parse_bytes(raw),
                            (raw, true) => {
                                // (an escaped digit: unheard of, read as the SDK would)
                                let s = std::str::from_utf8(raw).map_err(|_| p.bad("a string that is not UTF-8"))?;
                                let s = aws_smithy_json::deserialize::EscapedStr::new(s).to_unescaped().map_err(|_| p.bad("a bad escape in a string"))?;
                                SeqNum::parse(&s)
                            }
                        }
                        .map_err(bad_seq)?);
                    }
                }
                b"Data" => {
                    data = if p.null() {
                        Vec::new()
                    } else {
                        // (the decoder under aws_smithy_types::base64::decode, from the bytes: base64
                        // is ASCII, no need to check them for UTF-8 first)
                        let (raw, escaped) = p.raw_string()?;
                        let decoded = if escaped {
                            let s = std::str::from_utf8(raw).map_err(|_| p.bad("a string that is not UTF-8"))?;
                            let s = aws_smithy_json::deserialize::EscapedStr::new(s).to_unescaped().map_err(|_| p.bad("a bad escape in a string"))?;
                            base64_simd::STANDARD.decode_to_vec(s.as_bytes())
                        } else {
                            base64_simd::STANDARD.decode_to_vec(raw)
                        };
                        decoded.map_err(|_| p.bad("Data that is not base64"))?
                    }
                }
                b"PartitionKey" => partition_key = p.opt_string()?.map(Cow::into_owned).unwrap_or_default(),
                b"ApproximateArrivalTimestamp" => arrival_ms = p.timestamp()?.and_then(|t| t.to_millis().ok()),
                _ => p.skip()?,
            }
            Ok(())
        })?;
        // (a record without one: what the SDK's path said of the empty sequence number it gave)
        let seq = match seq {
            Some(s) => s,
            None => SeqNum::parse("").map_err(bad_seq)?,
        };
        Ok(RawRecord { seq, partition_key, data, arrival_ms })
    }

    /// An epoch-seconds timestamp as the SDK reads one: a number with a fraction or an exponent
    /// through f64, a whole number exactly; a string (never sent by Kinesis) in the ISO 8601 or
    /// HTTP date forms.
    fn timestamp(&mut self) -> Result<Option<DateTime>, Bad> {
        match self.peek() {
            Some(b'n') if self.null() => Ok(None),
            Some(b'"') => {
                let s = self.string()?;
                DateTime::from_str(&s, Format::DateTimeWithOffset)
                    .or_else(|_| DateTime::from_str(&s, Format::HttpDate))
                    .map(Some)
                    .map_err(|_| self.bad("a bad timestamp"))
            }
            _ => {
                let text = self.number()?;
                if text.contains(['.', 'e', 'E']) {
                    let f: f64 = text.parse().map_err(|_| self.bad("a bad timestamp"))?;
                    Ok(Some(DateTime::from_secs_f64(f)))
                } else {
                    let n: i64 = text.parse().map_err(|_| self.bad("a bad timestamp"))?;
                    Ok(Some(DateTime::from_secs(n)))
                }
            }
        }
    }
}

/// Where the first '"' or '\\' is: word by word through a short string's bytes (most are: keys,
/// sequence numbers, small records' data), memchr past 64 bytes.
fn quote_or_backslash(b: &[u8]) -> Option<usize> {
    // Eight bytes at a time: a byte of `w` is '"' or '\\' where (w ^ pattern) has a zero byte.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut k = 0;
    while k + 8 <= b.len().min(64) {
        let w = u64::from_le_bytes([b[k], b[k + 1], b[k + 2], b[k + 3], b[k + 4], b[k + 5], b[k + 6], b[k + 7]]);
        let hit = zero_byte(w ^ (ONES * u64::from(b'"'))) | zero_byte(w ^ (ONES * u64::from(b'\\')));
        if hit != 0 {
            // (the lowest flagged byte is a true match; flags above it may be false ones)
            return Some(k + (hit.trailing_zeros() / 8) as usize);
        }
        k += 8;
    }
    if k >= 64 {
        return memchr::memchr2(b'"', b'\\', &b[k..]).map(|j| j + k);
    }
    b[k..].iter().position(|&c| c == b'"' || c == b'\\').map(|j| j + k)
}

fn bad_seq(e: ingest_core::kinesis::seqnum::SeqNumError) -> Bad {
    Bad::Kinesis(KinesisError::Refused(format!("Kinesis returned a bad sequence number: {e}")))
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
