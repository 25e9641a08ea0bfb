//! Kafka headers: grouped by name and written as a JSON object, in time linear in their number.
//!
//! A message may carry any number of headers (100,000 empty ones fit in 1 MB) and a name may
//! repeat: whatever groups them by name must not compare every header with every other (that took
//! a minute of uninterruptible CPU for one such message). `ByName` links each header to the next
//! one with the same name, through a hash map for many headers (std's, randomly keyed: names
//! chosen to collide do not degrade it) and a pairwise scan for the few a message usually has
//! (no allocation then).

use smallvec::{smallvec, SmallVec};
use std::collections::HashMap;

/// Kafka headers in order: (name, value or None for a null value).
pub type Headers = [(String, Option<Vec<u8>>)];

/// Up to this many headers are grouped by comparing names pairwise, on the stack.
const SMALL: usize = 16;
const NONE: u32 = u32::MAX;

/// Headers grouped by name: each name once, in order of first appearance, with its values in
/// order.
pub struct ByName<'a> {
    headers: &'a Headers,
    /// The index of the next header with the same name (NONE: it is the last of its name).
    next: SmallVec<[u32; SMALL]>,
    /// Whether a header is the first of its name.
    first: SmallVec<[bool; SMALL]>,
}

impl<'a> ByName<'a> {
    pub fn new(headers: &'a Headers) -> ByName<'a> {
        let n = headers.len();
        let mut next: SmallVec<[u32; SMALL]> = smallvec![NONE; n];
        let mut first: SmallVec<[bool; SMALL]> = smallvec![true; n];
        if n <= SMALL {
            for i in 0..n {
                if !first[i] {
                    continue;
                }
                let mut last = i;
                for j in i + 1..n {
                    if headers[j].0 == headers[i].0 {
                        next[last] = j as u32;
                        first[j] = false;
                        last = j;
                    }
                }
            }
        } else {
            // The last header seen of each name.
            let mut last: HashMap<&str, u32> = HashMap::with_capacity(n);
            for (i, (name, _)) in headers.iter().enumerate() {
                if let Some(prev) = last.insert(name.as_str(), i as u32) {
                    next[prev as usize] = i as u32;
                    first[i] = false;
                }
            }
        }
        ByName { headers, next, first }
    }

    /// Each name once, in order of first appearance, with its values.
    pub fn groups(&self) -> impl Iterator<Item = (&'a str, Group<'_, 'a>)> + '_ {
        (0..self.headers.len())
            .filter(|&i| self.first[i])
            .map(move |i| (self.headers[i].0.as_str(), Group { by: self, at: i as u32 }))
    }
}

/// The values of one header name, in order.
pub struct Group<'g, 'a> {
    by: &'g ByName<'a>,
    at: u32,
}

impl Group<'_, '_> {
    /// Whether the name has more than one header (its values then make an array).
    pub fn repeats(&self) -> bool {
        self.at != NONE && self.by.next[self.at as usize] != NONE
    }
}

impl<'a> Iterator for Group<'_, 'a> {
    type Item = &'a Option<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.at == NONE {
            return None;
        }
        let i = self.at as usize;
        self.at = self.by.next[i];
        Some(&self.by.headers[i].1)
    }
}

/// Emits `s` as a JSON string literal.
pub(crate) fn json_string(emit: &mut impl FnMut(&[u8]), s: &str) {
    emit(b"\"");
    let bytes = s.as_bytes();
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            c if c < 0x20 => &[b'\\', b'u', b'0', b'0', HEX[(c >> 4) as usize], HEX[(c & 15) as usize]],
            _ => continue,
        };
        emit(&bytes[plain..i]);
        emit(esc);
        plain = i + 1;
    }
    emit(&bytes[plain..]);
    emit(b"\"");
}

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

/// A header value as JSON: a string when it is UTF-8 without NUL (jsonb cannot hold `\u0000`),
/// null for a null value, and otherwise `{"hex": "<the bytes in hex>"}` (an object, so it can never
/// be mistaken for a string value).
fn header_value(emit: &mut impl FnMut(&[u8]), v: &Option<Vec<u8>>) {
    match v {
        None => emit(b"null"),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) if !b.contains(&0) => json_string(emit, s),
            _ => {
                emit(b"{\"hex\": \"");
                for &x in b {
                    emit(&[HEX[(x >> 4) as usize], HEX[(x & 15) as usize]]);
                }
                emit(b"\"}");
            }
        },
    }
}

/// Kafka headers as a JSON object, emitted piece by piece (so a COPY encoding can escape it on
/// the way, with no buffer of its own): each name once, in order of first appearance; a name that
/// repeats maps to an array of its values in order. No headers: `{}`.
pub fn emit_headers_json(headers: &Headers, emit: &mut impl FnMut(&[u8])) {
    emit(b"{");
    for (k, (name, mut values)) in ByName::new(headers).groups().enumerate() {
        if k > 0 {
            emit(b", ");
        }
        json_string(emit, name);
        emit(b": ");
        if values.repeats() {
            emit(b"[");
            for (j, v) in values.enumerate() {
                if j > 0 {
                    emit(b", ");
                }
                header_value(emit, v);
            }
            emit(b"]");
        } else if let Some(v) = values.next() {
            header_value(emit, v);
        }
    }
    emit(b"}");
}

/// Kafka headers as a JSON object (see `emit_headers_json`), appended to `out`.
pub fn headers_json(headers: &Headers, out: &mut Vec<u8>) {
    emit_headers_json(headers, &mut |b: &[u8]| out.extend_from_slice(b));
}

/// What a message's headers count for in a batch's bytes: their names and values, and the
/// bookkeeping each header costs besides (its name and value buffers).
pub fn headers_size(headers: Option<&Headers>) -> usize {
    headers.map_or(0, |h| h.iter().map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len) + HEADER_COST).sum())
}

/// Bytes of bookkeeping one header costs besides its name and value (the pair, two buffers).
pub const HEADER_COST: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn h(list: &[(&str, Option<&[u8]>)]) -> Vec<(String, Option<Vec<u8>>)> {
        list.iter().map(|(n, v)| (n.to_string(), v.map(<[u8]>::to_vec))).collect()
    }

    fn json(headers: &Headers) -> String {
        let mut out = Vec::new();
        headers_json(headers, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn few_and_many_headers_group_alike() {
        let few = h(&[("a", Some(b"1")), ("b", None), ("a", Some(b"2")), ("c", Some(b"x")), ("a", None)]);
        assert_eq!(json(&few), r#"{"a": ["1", "2", null], "b": null, "c": "x"}"#);
        // The same headers among 40 more: the hash-map path gives the same grouping and order.
        let mut many = few.clone();
        for i in 0..40 {
            many.push((format!("n{}", i % 20), Some(i.to_string().into_bytes())));
        }
        many.push(("b".to_string(), Some(b"late".to_vec())));
        let out = json(&many);
        assert!(out.starts_with(r#"{"a": ["1", "2", null], "b": [null, "late"], "c": "x", "n0": ["0", "20"], "n1": ["1", "21"]"#), "{out}");
        assert!(out.ends_with(r#""n19": ["19", "39"]}"#), "{out}");
        let groups: Vec<(&str, bool, usize)> = ByName::new(&many).groups().map(|(n, g)| (n, g.repeats(), g.count())).collect();
        assert_eq!(groups.len(), 23);
        assert_eq!(groups[0], ("a", true, 3));
        assert_eq!(groups[2], ("c", false, 1));
        assert_eq!(json(&[]), "{}");
    }

    /// 100,000 headers in one message (they fit in 1 MB): grouping them must be linear. Pairwise,
    /// distinct names took ~60 s here; the bound is loose (a debug build on a busy machine).
    #[test]
    fn a_hundred_thousand_headers_take_linear_time() {
        let n = 100_000;
        let distinct: Vec<(String, Option<Vec<u8>>)> = (0..n).map(|i| (format!("h{i}"), Some(b"v".to_vec()))).collect();
        let same: Vec<(String, Option<Vec<u8>>)> = (0..n).map(|_| ("h".to_string(), None)).collect();
        let mut mixed: Vec<(String, Option<Vec<u8>>)> = (0..n).map(|i| (format!("h{}", i % 1000), None)).collect();
        mixed.push(("last".to_string(), Some(Vec::new())));
        for headers in [&distinct, &same, &mixed] {
            let started = Instant::now();
            let out = json(headers);
            let took = started.elapsed();
            assert!(took < Duration::from_secs(2), "{took:?} for {n} headers");
            assert!(out.len() > n);
        }
        assert!(json(&same).starts_with(r#"{"h": [null, null"#));
        assert!(json(&mixed).ends_with(r#", "last": ""}"#));
        assert_eq!(headers_size(Some(&distinct)), distinct.iter().map(|(k, _)| k.len() + 1 + HEADER_COST).sum::<usize>());
    }
}
