//! De-aggregation of records written by the Kinesis Producer Library (KPL).
//!
//! An aggregated record is: the magic bytes F3 89 9A C2, a protobuf `AggregatedRecord`, and the
//! 16-byte MD5 digest of that protobuf. `AggregatedRecord` holds a table of partition keys (field
//! 1), a table of explicit hash keys (field 2) and the user records (field 3), each with the index
//! of its partition key (1), optionally of its explicit hash key (2), its data (3) and tags (4).
//! As the KCL does: a record without the magic bytes, too short, with a wrong digest or that does
//! not parse is a plain record and passes unchanged; after a reshard, user records whose hash key
//! (`hash_key`) lies outside the shard's hash key range belong to another shard and are dropped
//! (`kinesis::read::Unpacked`).

use md5::{Digest, Md5};

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// One user record of an aggregate, borrowed from the aggregate's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRecord<'a> {
    /// Index in the aggregate (the sub-sequence number).
    pub sub: u64,
    /// Index of its partition key in the aggregate's key table (user records share keys).
    pub key_index: usize,
    pub partition_key: &'a str,
    pub explicit_hash_key: Option<&'a str>,
    pub data: &'a [u8],
}

/// An aggregate, checked whole but not copied: its key tables are ranges of its bytes, and its
/// user records are read one at a time (`Cursor`). Taking the user records apart lazily matters:
/// a 1 MB aggregate may hold 5,000 user records sharing one 100 KB partition key, and copying the
/// key into each before any batch or preview limit applied made 500 MB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// The protobuf `AggregatedRecord` within the record's bytes.
    body: (usize, usize),
    /// The partition key and explicit hash key tables, as (start, end) in the record's bytes.
    keys: Vec<(u32, u32)>,
    hash_keys: Vec<(u32, u32)>,
    /// How many user records it holds.
    pub count: u64,
}

/// Where reading an aggregate's user records stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Byte offset in the body.
    pos: usize,
    /// The next user record's index.
    sub: u64,
}

impl Aggregate {
    /// `data` as a KPL aggregate, or None when it is a plain record: as the KCL does, a record
    /// without the magic bytes, too short, with a wrong digest or that does not parse (a user
    /// record naming a key the tables do not have, a key that is not UTF-8) is plain. Checks every
    /// field once, copying nothing but the key tables' ranges.
    pub fn parse(data: &[u8]) -> Option<Aggregate> {
        if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC || u32::try_from(data.len()).is_err() {
            return None;
        }
        let body = (MAGIC.len(), data.len() - DIGEST_LEN);
        let bytes = &data[body.0..body.1];
        if Md5::digest(bytes).as_slice() != &data[body.1..] {
            return None;
        }
        let range_of = |b: &[u8]| {
            let start = b.as_ptr() as usize - data.as_ptr() as usize;
            (start as u32, (start + b.len()) as u32)
        };
        let mut agg = Aggregate { body, keys: Vec::new(), hash_keys: Vec::new(), count: 0 };
        let (mut max_key, mut max_hash_key) = (None::<u64>, None::<u64>);
        let mut r = Reader { buf: bytes, pos: 0 };
        while let Some(f) = r.field() {
            match f.ok()? {
                (1, Field::Bytes(b)) => {
                    std::str::from_utf8(b).ok()?;
                    agg.keys.push(range_of(b));
                }
                (2, Field::Bytes(b)) => {
                    std::str::from_utf8(b).ok()?;
                    agg.hash_keys.push(range_of(b));
                }
                (3, Field::Bytes(b)) => {
                    let (pk, ehk, _) = parse_record(b)?;
                    max_key = max_key.max(Some(pk));
                    max_hash_key = max_hash_key.max(ehk);
                    agg.count += 1;
                }
                (1..=3, _) => return None,
                _ => {}
            }
        }
        // Every user record's indexes must lie in the tables (which may come after the records).
        let fits = |max: Option<u64>, len: usize| max.is_none_or(|m| usize::try_from(m).is_ok_and(|m| m < len));
        (fits(max_key, agg.keys.len()) && fits(max_hash_key, agg.hash_keys.len())).then_some(agg)
    }

    /// The next user record after `at` (None after the last), moving `at` past it. `data` must be
    /// the bytes `parse` accepted.
    pub fn next<'a>(&self, data: &'a [u8], at: &mut Cursor) -> Option<UserRecord<'a>> {
        let mut r = Reader { buf: &data[self.body.0..self.body.1], pos: at.pos };
        let text = |(start, end): (u32, u32)| std::str::from_utf8(&data[start as usize..end as usize]).unwrap_or_default();
        while let Some(f) = r.field() {
            let (pk, ehk, d) = match f {
                Ok((3, Field::Bytes(b))) => parse_record(b)?,
                Ok(_) => continue,
                Err(()) => break,
            };
            let sub = at.sub;
            at.pos = r.pos;
            at.sub += 1;
            let key_index = pk as usize;
            return Some(UserRecord {
                sub,
                key_index,
                partition_key: text(self.keys[key_index]),
                explicit_hash_key: ehk.map(|k| text(self.hash_keys[k as usize])),
                data: d,
            });
        }
        at.pos = r.pos;
        None
    }

    /// How many distinct partition keys the aggregate's table holds.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// The 128-bit hash key that routes a user record: its explicit hash key, or the MD5 of its
/// partition key read as a big-endian number. None when the explicit key is not a number.
pub fn hash_key(explicit_hash_key: Option<&str>, partition_key: &str) -> Option<u128> {
    match explicit_hash_key {
        Some(k) => k.parse::<u128>().ok(),
        None => Some(partition_key_hash(partition_key)),
    }
}

/// The hash key Kinesis derives from a partition key.
pub fn partition_key_hash(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

// ------------------------------------------------------------------ protobuf, just enough

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// The next (field number, value), None at the end; Some(Err) when malformed.
    fn field(&mut self) -> Option<Result<(u64, Field<'a>), ()>> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let Some(tag) = self.varint() else { return Some(Err(())) };
        let value = match tag & 7 {
            0 => self.varint().map(Field::Varint),
            1 => self.skip(8),
            2 => self.varint().and_then(|n| usize::try_from(n).ok()).and_then(|n| {
                let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len())?;
                let bytes = &self.buf[self.pos..end];
                self.pos = end;
                Some(Field::Bytes(bytes))
            }),
            5 => self.skip(4),
            _ => None,
        };
        Some(value.map(|v| (tag >> 3, v)).ok_or(()))
    }

    fn skip(&mut self, n: usize) -> Option<Field<'a>> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len())?;
        self.pos = end;
        Some(Field::Other)
    }
}

/// A user record's (partition key index, explicit hash key index, data).
fn parse_record(b: &[u8]) -> Option<(u64, Option<u64>, &[u8])> {
    let mut pk = None;
    let mut ehk = None;
    let mut data = None;
    let mut r = Reader { buf: b, pos: 0 };
    while let Some(f) = r.field() {
        match f.ok()? {
            (1, Field::Varint(v)) => pk = Some(v),
            (2, Field::Varint(v)) => ehk = Some(v),
            (3, Field::Bytes(d)) => data = Some(d),
            (1..=3, _) => return None,
            _ => {}
        }
    }
    Some((pk?, ehk, data?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    /// Builds an aggregate the way the KPL lays it out (the tests' own encoder).
    fn aggregate(keys: &[&str], hash_keys: &[&str], records: &[(u64, Option<u64>, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for k in keys {
            bytes_field(1, k.as_bytes(), &mut body);
        }
        for k in hash_keys {
            bytes_field(2, k.as_bytes(), &mut body);
        }
        for (pk, ehk, data) in records {
            let mut rec = Vec::new();
            varint(1 << 3, &mut rec);
            varint(*pk, &mut rec);
            if let Some(e) = ehk {
                varint(2 << 3, &mut rec);
                varint(*e, &mut rec);
            }
            bytes_field(3, data, &mut rec);
            bytes_field(4, b"\x0a\x01t", &mut rec); // a tag, ignored
            bytes_field(3, &rec, &mut body);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(Md5::digest(&body).as_slice());
        out
    }

    /// The user records of `data` (None: a plain record) as (sub, key, data), those whose hash
    /// key lies in `range` (None: all).
    fn users(data: &[u8], range: Option<(u128, u128)>) -> Option<Vec<(u64, String, Vec<u8>)>> {
        let agg = Aggregate::parse(data)?;
        let mut at = Cursor::default();
        let mut out = Vec::new();
        while let Some(u) = agg.next(data, &mut at) {
            let keep = match range {
                None => true,
                Some((lo, hi)) => hash_key(u.explicit_hash_key, u.partition_key).is_some_and(|h| lo <= h && h <= hi),
            };
            if keep {
                out.push((u.sub, u.partition_key.to_string(), u.data.to_vec()));
            }
        }
        assert_eq!(at.sub, agg.count);
        Some(out)
    }

    #[test]
    fn aggregates_become_their_user_records_in_order() {
        let agg = aggregate(&["a", "b"], &[], &[(0, None, b"one"), (1, None, b"two"), (0, None, b"")]);
        let rs = users(&agg, None).expect("de-aggregated");
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[0], (0, "a".to_string(), b"one".to_vec()));
        assert_eq!(rs[1], (1, "b".to_string(), b"two".to_vec()));
        assert_eq!(rs[2].2, b"");
        let parsed = Aggregate::parse(&agg).unwrap();
        assert_eq!((parsed.count, parsed.key_count()), (3, 2));
        // user records share their key: the table's index says which
        let mut at = Cursor::default();
        let keys: Vec<usize> = std::iter::from_fn(|| parsed.next(&agg, &mut at)).map(|u| u.key_index).collect();
        assert_eq!(keys, vec![0, 1, 0]);
    }

    #[test]
    fn plain_or_damaged_records_pass_unchanged() {
        assert_eq!(users(b"1,hello", None), None);
        assert_eq!(users(&MAGIC, None), None);
        let mut agg = aggregate(&["a"], &[], &[(0, None, b"x")]);
        let last = agg.len() - 1;
        agg[last] ^= 1; // wrong digest
        assert_eq!(users(&agg, None), None);
        // a good digest over a body that is not an AggregatedRecord (index out of the key table)
        let bad = aggregate(&["a"], &[], &[(5, None, b"x")]);
        assert_eq!(users(&bad, None), None);
        let bad = aggregate(&["a"], &["1"], &[(0, Some(1), b"x")]);
        assert_eq!(users(&bad, None), None);
        // truncated protobuf with a matching digest
        let body = [0x1a, 0x05, 0x08];
        let mut t = MAGIC.to_vec();
        t.extend_from_slice(&body);
        t.extend_from_slice(Md5::digest(body).as_slice());
        assert_eq!(users(&t, None), None);
        // a partition key that is not UTF-8
        let mut body = Vec::new();
        bytes_field(1, b"\xff", &mut body);
        let mut t = MAGIC.to_vec();
        t.extend_from_slice(&body);
        t.extend_from_slice(Md5::digest(&body).as_slice());
        assert_eq!(users(&t, None), None);
    }

    #[test]
    fn records_outside_the_shard_hash_range_are_dropped() {
        let low = "0";
        let high = u128::MAX.to_string();
        let agg = aggregate(&["k1", "k2"], &[low, &high], &[(0, Some(0), b"low"), (1, Some(1), b"high"), (0, None, b"md5")]);
        let half = u128::MAX / 2;
        let rs = users(&agg, Some((0, half))).unwrap();
        let mut expect = vec![b"low".to_vec()];
        if partition_key_hash("k1") <= half {
            expect.push(b"md5".to_vec());
        }
        assert_eq!(rs.iter().map(|r| r.2.clone()).collect::<Vec<_>>(), expect);
        let rs = users(&agg, Some((half + 1, u128::MAX))).unwrap();
        assert!(rs.iter().any(|r| r.2 == b"high"));
        assert!(rs.iter().all(|r| r.2 != b"low"));
        // sub-sequence numbers are the index in the whole aggregate, not among those kept
        assert_eq!(rs.iter().find(|r| r.2 == b"high").unwrap().0, 1);
    }

    #[test]
    fn partition_key_hash_is_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(partition_key_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }
}
