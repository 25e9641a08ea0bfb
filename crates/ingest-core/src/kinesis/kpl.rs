//! De-aggregation of records written by the Kinesis Producer Library (KPL).
//!
//! An aggregated record is: the magic bytes F3 89 9A C2, a protobuf `AggregatedRecord`, and the
//! 16-byte MD5 digest of that protobuf. `AggregatedRecord` holds a table of partition keys (field
//! 1), a table of explicit hash keys (field 2) and the user records (field 3), each with the index
//! of its partition key (1), optionally of its explicit hash key (2), its data (3) and tags (4).
//! As the KCL does: a record without the magic bytes, too short, with a wrong digest or that does
//! not parse is a plain record and passes unchanged; after a reshard, user records whose hash key
//! lies outside the shard's hash key range belong to another shard and are dropped.

use md5::{Digest, Md5};

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Index in the aggregate (the sub-sequence number).
    pub sub: u64,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
}

/// A Kinesis record's data, de-aggregated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    /// Not an aggregate: the record itself.
    Plain,
    /// The user records of an aggregate that belong to the shard, in order.
    Aggregated(Vec<UserRecord>),
}

/// De-aggregates `data`. `range`: the shard's (starting, ending) hash keys, inclusive; None keeps
/// every user record.
pub fn deaggregate(data: &[u8], range: Option<(u128, u128)>) -> Records {
    if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC {
        return Records::Plain;
    }
    let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
    let digest = &data[data.len() - DIGEST_LEN..];
    if Md5::digest(body).as_slice() != digest {
        return Records::Plain;
    }
    let Some(records) = parse_aggregate(body) else { return Records::Plain };
    let kept = records
        .into_iter()
        .filter(|r| match range {
            None => true,
            Some((lo, hi)) => hash_key(r).is_some_and(|h| lo <= h && h <= hi),
        })
        .collect();
    Records::Aggregated(kept)
}

/// The 128-bit hash key that routes a user record: its explicit hash key, or the MD5 of its
/// partition key read as a big-endian number. None when the explicit key is not a number.
pub fn hash_key(r: &UserRecord) -> Option<u128> {
    match &r.explicit_hash_key {
        Some(k) => k.parse::<u128>().ok(),
        None => Some(partition_key_hash(&r.partition_key)),
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

fn parse_aggregate(body: &[u8]) -> Option<Vec<UserRecord>> {
    let mut keys: Vec<String> = Vec::new();
    let mut hash_keys: Vec<String> = Vec::new();
    let mut raw: Vec<(u64, Option<u64>, Vec<u8>)> = Vec::new();
    let mut r = Reader { buf: body, pos: 0 };
    while let Some(f) = r.field() {
        match f.ok()? {
            (1, Field::Bytes(b)) => keys.push(String::from_utf8(b.to_vec()).ok()?),
            (2, Field::Bytes(b)) => hash_keys.push(String::from_utf8(b.to_vec()).ok()?),
            (3, Field::Bytes(b)) => raw.push(parse_record(b)?),
            (1..=3, _) => return None,
            _ => {}
        }
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, (pk, ehk, data))| {
            Some(UserRecord {
                sub: i as u64,
                partition_key: keys.get(usize::try_from(pk).ok()?)?.clone(),
                explicit_hash_key: match ehk {
                    None => None,
                    Some(k) => Some(hash_keys.get(usize::try_from(k).ok()?)?.clone()),
                },
                data,
            })
        })
        .collect()
}

fn parse_record(b: &[u8]) -> Option<(u64, Option<u64>, Vec<u8>)> {
    let mut pk = None;
    let mut ehk = None;
    let mut data = None;
    let mut r = Reader { buf: b, pos: 0 };
    while let Some(f) = r.field() {
        match f.ok()? {
            (1, Field::Varint(v)) => pk = Some(v),
            (2, Field::Varint(v)) => ehk = Some(v),
            (3, Field::Bytes(d)) => data = Some(d.to_vec()),
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

    #[test]
    fn aggregates_become_their_user_records_in_order() {
        let agg = aggregate(&["a", "b"], &[], &[(0, None, b"one"), (1, None, b"two"), (0, None, b"")]);
        let Records::Aggregated(rs) = deaggregate(&agg, None) else { panic!("not de-aggregated") };
        assert_eq!(rs.len(), 3);
        assert_eq!((rs[0].sub, rs[0].partition_key.as_str(), rs[0].data.as_slice()), (0, "a", &b"one"[..]));
        assert_eq!((rs[1].sub, rs[1].partition_key.as_str(), rs[1].data.as_slice()), (1, "b", &b"two"[..]));
        assert_eq!(rs[2].data, b"");
    }

    #[test]
    fn plain_or_damaged_records_pass_unchanged() {
        assert_eq!(deaggregate(b"1,hello", None), Records::Plain);
        assert_eq!(deaggregate(&MAGIC, None), Records::Plain);
        let mut agg = aggregate(&["a"], &[], &[(0, None, b"x")]);
        let last = agg.len() - 1;
        agg[last] ^= 1; // wrong digest
        assert_eq!(deaggregate(&agg, None), Records::Plain);
        // a good digest over a body that is not an AggregatedRecord (index out of the key table)
        let bad = aggregate(&["a"], &[], &[(5, None, b"x")]);
        assert_eq!(deaggregate(&bad, None), Records::Plain);
        // truncated protobuf with a matching digest
        let body = [0x1a, 0x05, 0x08];
        let mut t = MAGIC.to_vec();
        t.extend_from_slice(&body);
        t.extend_from_slice(Md5::digest(body).as_slice());
        assert_eq!(deaggregate(&t, None), Records::Plain);
    }

    #[test]
    fn records_outside_the_shard_hash_range_are_dropped() {
        let low = "0";
        let high = u128::MAX.to_string();
        let agg = aggregate(&["k1", "k2"], &[low, &high], &[(0, Some(0), b"low"), (1, Some(1), b"high"), (0, None, b"md5")]);
        let half = u128::MAX / 2;
        let Records::Aggregated(rs) = deaggregate(&agg, Some((0, half))) else { panic!() };
        let mut expect = vec![b"low".to_vec()];
        if partition_key_hash("k1") <= half {
            expect.push(b"md5".to_vec());
        }
        assert_eq!(rs.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), expect);
        let Records::Aggregated(rs) = deaggregate(&agg, Some((half + 1, u128::MAX))) else { panic!() };
        assert!(rs.iter().any(|r| r.data == b"high"));
        assert!(rs.iter().all(|r| r.data != b"low"));
        // sub-sequence numbers are the index in the whole aggregate, not among those kept
        assert_eq!(rs.iter().find(|r| r.data == b"high").unwrap().sub, 1);
    }

    #[test]
    fn partition_key_hash_is_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(partition_key_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }
}
