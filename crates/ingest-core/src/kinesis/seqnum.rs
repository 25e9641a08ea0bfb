//! Kinesis sequence numbers and the position of a consumer in a shard.
//!
//! Sequence numbers are decimal strings of up to 128 digits (far beyond 128 bits: real ones have
//! about 56), so they are kept as normalised text and compared as numbers: by length, then by
//! digits. A record of a KPL aggregate also has a sub-sequence number (its index in the aggregate).

use std::cmp::Ordering;
use std::fmt;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SeqNumError {
    #[error("a Kinesis sequence number must be 1 to 128 decimal digits, got \"{0}\"")]
    Invalid(String),
}

/// A sequence number, without leading zeros ("0" for zero).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeqNum(String);

impl SeqNum {
    pub fn parse(s: &str) -> Result<SeqNum, SeqNumError> {
        if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SeqNumError::Invalid(s.chars().take(140).collect()));
        }
        let trimmed = s.trim_start_matches('0');
        Ok(SeqNum(if trimmed.is_empty() { "0".to_string() } else { trimmed.to_string() }))
    }

    /// `parse` of bytes (as a JSON answer has them): the same checks and value, without a UTF-8
    /// pass first.
    pub fn parse_bytes(s: &[u8]) -> Result<SeqNum, SeqNumError> {
        if s.is_empty() || s.len() > 128 || !s.iter().all(u8::is_ascii_digit) {
            return Err(SeqNumError::Invalid(String::from_utf8_lossy(s).chars().take(140).collect()));
        }
        let digits = match s.iter().position(|&c| c != b'0') {
            Some(k) => &s[k..],
            None => b"0",
        };
        // (ASCII digits: valid UTF-8, checked word by word)
        std::str::from_utf8(digits).map(|d| SeqNum(d.to_owned())).map_err(|_| SeqNumError::Invalid(String::from_utf8_lossy(s).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What is left where a sequence number was moved out (not a sequence number).
    pub(crate) fn moved_out() -> SeqNum {
        SeqNum(String::new())
    }
}

impl Ord for SeqNum {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SeqNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The last record consumed from a shard: its sequence number and, for a record of a KPL
/// aggregate, the index of the last user record taken from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardPos {
    pub seq: SeqNum,
    pub sub: Option<u64>,
}

/// Where reading a shard starts again after a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// AFTER_SEQUENCE_NUMBER: the checkpointed record was taken whole.
    After(SeqNum),
    /// AT_SEQUENCE_NUMBER, then drop the user records of that aggregate with an index <= `done`
    /// (a crash may have come between two user records of one aggregate).
    AtSkipping { seq: SeqNum, done: u64 },
}

impl ShardPos {
    pub fn resume(&self) -> Resume {
        match self.sub {
            None => Resume::After(self.seq.clone()),
            Some(done) => Resume::AtSkipping { seq: self.seq.clone(), done },
        }
    }
}

impl Resume {
    /// Whether a user record (sequence number and sub-sequence index, None for a plain record)
    /// read after resuming was already consumed before the checkpoint.
    pub fn already_consumed(&self, seq: &SeqNum, sub: Option<u64>) -> bool {
        match self {
            Resume::After(s) => seq <= s,
            Resume::AtSkipping { seq: s, done } => match seq.cmp(s) {
                Ordering::Less => true,
                Ordering::Equal => sub.is_none_or(|i| i <= *done),
                Ordering::Greater => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> SeqNum {
        SeqNum::parse(x).unwrap()
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        let a = s("49590338271490256608559692538361571095921575989136588898");
        let b = s("49590338271490256608559692538361571095921575989136588899");
        assert!(a < b);
        assert!(s("9") < s("10"), "text order would say otherwise");
        assert_eq!(s("007"), s("7"));
        assert_eq!(s("000").as_str(), "0");
        assert!(SeqNum::parse("").is_err());
        assert!(SeqNum::parse("12a").is_err());
        assert!(SeqNum::parse("-1").is_err());
        assert!(SeqNum::parse(&"1".repeat(129)).is_err());
        assert!(SeqNum::parse(&"1".repeat(128)).is_ok());
    }

    #[test]
    fn bytes_parse_as_text_does() {
        let long = "1".repeat(129);
        let max = "9".repeat(128);
        for x in ["49590338271490256608559692538361571095921575989136588898", "007", "000", "0", "", "12a", "-1", " 1", "١", &long, &max] {
            assert_eq!(SeqNum::parse_bytes(x.as_bytes()), SeqNum::parse(x), "{x}");
        }
        assert!(SeqNum::parse_bytes(b"1\xff").is_err());
    }

    #[test]
    fn resuming_skips_exactly_what_was_consumed() {
        let whole = ShardPos { seq: s("100"), sub: None }.resume();
        assert_eq!(whole, Resume::After(s("100")));
        assert!(whole.already_consumed(&s("100"), None));
        assert!(!whole.already_consumed(&s("101"), None));

        let partial = ShardPos { seq: s("100"), sub: Some(2) }.resume();
        assert_eq!(partial, Resume::AtSkipping { seq: s("100"), done: 2 });
        for i in 0..=2 {
            assert!(partial.already_consumed(&s("100"), Some(i)));
        }
        assert!(!partial.already_consumed(&s("100"), Some(3)));
        assert!(!partial.already_consumed(&s("101"), Some(0)));
        assert!(partial.already_consumed(&s("99"), None));
    }
}
