//! Reading a shard, the decisions that need no network: where to (re)start it, which user records
//! a fetched record holds for us, and what the checkpoint of a shard is.
//!
//! A shard is (re)started from the last record this worker took from it, whether that record is
//! committed yet or only in the batch being built: from its checkpoint after a restart, from the
//! last record fetched when an iterator expired (the uncommitted batch already holds what came
//! before). Never from TRIM_HORIZON or LATEST once anything was read.

use super::kpl::{hash_key, partition_key_hash, Aggregate, Cursor, UserRecord};
use super::seqnum::{Resume, SeqNum, ShardPos};
use crate::batch::Message;
use crate::position::KinesisPos;
use std::collections::HashMap;
use std::time::SystemTime;

// Defined with the position, below the batch and this reader; named here too, where its users
// have always found it.
pub use crate::position::ShardCheckpoint;

/// Where to start reading a shard (GetShardIterator's types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    TrimHorizon,
    Latest,
    AtTimestamp(SystemTime),
    AtSequence(SeqNum),
    AfterSequence(SeqNum),
}

/// Where to take an iterator for a shard, and which records it returns that were already taken
/// (an aggregate read partly is read again from its start). `taken`: the last user record this
/// worker took from the shard (fetched, committed or not); `start_time`: where a shard with
/// nothing taken starts (None: TRIM_HORIZON).
pub fn start(taken: Option<&ShardPos>, start_time: Option<SystemTime>) -> (StartAt, Option<Resume>) {
    match taken.map(ShardPos::resume) {
        Some(Resume::After(seq)) => (StartAt::AfterSequence(seq.clone()), Some(Resume::After(seq))),
        Some(r @ Resume::AtSkipping { .. }) => {
            let Resume::AtSkipping { seq, .. } = &r else { unreachable!() };
            (StartAt::AtSequence(seq.clone()), Some(r))
        }
        None => match start_time {
            Some(t) => (StartAt::AtTimestamp(t), None),
            None => (StartAt::TrimHorizon, None),
        },
    }
}

/// Where to take an iterator for a shard that `pipeline_kinesis.seek` moved to `sought` (a record:
/// AT_SEQUENCE_NUMBER, or a time: AT_TIMESTAMP): there while nothing was taken from the shard
/// since, nothing of it skipped; once something was taken (and then committed, which makes it the
/// shard's checkpoint), from the last record taken, as `start` says.
pub fn start_sought(taken: Option<&ShardPos>, sought: Option<&StartAt>, start_time: Option<SystemTime>) -> (StartAt, Option<Resume>) {
    match (taken, sought) {
        (None, Some(at)) => (at.clone(), None),
        _ => start(taken, start_time),
    }
}

/// What becomes of the KPL user records of an aggregate whose hash key lies outside the range of
/// the shard it was read from (the consumer's `config` setting `kpl_records_outside_shard`).
///
/// The KPL aggregates user records by the shard map it knows; when that map is stale (after a
/// split or merge) it sends the records again to the right shard, so the KCL skips the copies that
/// landed outside their shard's range, and so does `Skip` (the default). Producers that aggregate
/// without the KPL (the kinesis-aggregation library) put a whole aggregate under one partition
/// key and never send its user records again: skipping them loses them, so `Keep` keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutsideShard {
    #[default]
    Skip,
    Keep,
}

impl OutsideShard {
    /// The name of the consumer's `config` setting.
    pub const SETTING: &'static str = "kpl_records_outside_shard";

    /// The setting's value ("skip" or "keep").
    pub fn parse(value: &str) -> Option<OutsideShard> {
        match value {
            "skip" => Some(OutsideShard::Skip),
            "keep" => Some(OutsideShard::Keep),
            _ => None,
        }
    }
}

/// The messages one fetched record holds for this shard, taken out one at a time: the record
/// itself (a plain record) or its KPL user records whose hash key lies in the shard's range, each
/// with its sub-sequence index (or all of them, whatever their hash key, with
/// `OutsideShard::Keep`); records and user records already taken (`skip`) are left out. How many
/// user records it leaves out for their hash key is `skipped_outside()`.
///
/// Nothing is copied before it is asked for: a user record's partition key and data are copied
/// when it becomes a message, so a batch's byte limit (or a preview's limit) stops the expansion
/// of an aggregate whose user records share a large key. What it keeps meanwhile is the record's
/// own bytes and the aggregate's key tables as ranges of them.
#[derive(Debug)]
pub struct Unpacked {
    shard: String,
    seq: SeqNum,
    partition_key: String,
    data: Vec<u8>,
    arrival_ms: Option<i64>,
    /// User records not taken yet that it leaves out because their hash key lies outside the
    /// shard's range.
    skipped_outside: u64,
    /// None: a plain record (boxed: a plain record, the common case, stays small to move).
    aggregate: Option<Box<InAggregate>>,
    /// The last message it holds (None: none).
    last: Option<ShardPos>,
    /// The last message was taken (or there is none).
    done: bool,
}

/// What taking an aggregate's user records apart needs.
#[derive(Debug)]
struct InAggregate {
    aggregate: Aggregate,
    at: Cursor,
    range: Option<(u128, u128)>,
    outside: OutsideShard,
    skip: Option<Resume>,
    /// Hash keys of long partition keys, by key table index (short ones are hashed again: cheap).
    long_key_hashes: HashMap<usize, u128>,
}

/// Partition keys at least this long have their hash key computed once per aggregate.
const LONG_KEY: usize = 64;

impl Unpacked {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shard: &str,
        seq: &SeqNum,
        partition_key: &str,
        data: Vec<u8>,
        arrival_ms: Option<i64>,
        range: Option<(u128, u128)>,
        outside: OutsideShard,
        skip: Option<&Resume>,
    ) -> Unpacked {
        Unpacked::from_record(shard, seq.clone(), partition_key.to_string(), data, arrival_ms, range, outside, skip)
    }

    /// `new` for a record the caller owns: a plain record's sequence number, partition key and
    /// data are moved into its message, not copied.
    #[allow(clippy::too_many_arguments)]
    pub fn from_record(
        shard: &str,
        seq: SeqNum,
        partition_key: String,
        data: Vec<u8>,
        arrival_ms: Option<i64>,
        range: Option<(u128, u128)>,
        outside: OutsideShard,
        skip: Option<&Resume>,
    ) -> Unpacked {
        let aggregate = Aggregate::parse(&data).map(|aggregate| {
            Box::new(InAggregate { aggregate, at: Cursor::default(), range, outside, skip: skip.cloned(), long_key_hashes: HashMap::new() })
        });
        let mut u = Unpacked { shard: shard.to_string(), seq, partition_key, data, arrival_ms, skipped_outside: 0, aggregate, last: None, done: false };
        u.last = match u.aggregate {
            None => {
                let taken = skip.is_some_and(|r| r.already_consumed(&u.seq, None));
                (!taken).then(|| ShardPos { seq: u.seq.clone(), sub: None })
            }
            Some(_) => u.find_last(),
        };
        u.done = u.last.is_none();
        u
    }

    /// The position of the last message it holds (None when it holds none): where the shard
    /// stands once all of them are taken. Found in one pass, copying nothing.
    pub fn last_pos(&self) -> Option<&ShardPos> {
        self.last.as_ref()
    }

    /// How many of its user records not taken yet it leaves out because their hash key lies
    /// outside the shard's range (always 0 with `OutsideShard::Keep`).
    pub fn skipped_outside(&self) -> u64 {
        self.skipped_outside
    }

    /// Every message it holds was taken (or it holds none).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The last user record of an aggregate it keeps.
    fn find_last(&mut self) -> Option<ShardPos> {
        let a = self.aggregate.as_deref_mut()?;
        let agg = &a.aggregate;
        let mut at = Cursor::default();
        let mut last = None;
        let mut filter = Filter { seq: &self.seq, skip: a.skip.as_ref(), range: a.range, outside: a.outside, hashes: &mut a.long_key_hashes };
        let mut skipped = 0;
        while let Some(u) = agg.next(&self.data, &mut at) {
            match filter.verdict(&u) {
                Verdict::Keep => last = Some(u.sub),
                Verdict::Outside => skipped += 1,
                Verdict::Taken => {}
            }
        }
        self.skipped_outside = skipped;
        last.map(|sub| ShardPos { seq: self.seq.clone(), sub: Some(sub) })
    }
}

/// A message of `shard` at (`seq`, `sub`); the key is copied.
fn message(shard: &str, seq: &SeqNum, sub: Option<u64>, key: &[u8], payload: Vec<u8>, arrival_ms: Option<i64>) -> Message<KinesisPos> {
    Message {
        pos: KinesisPos { shard: shard.to_string(), at: ShardPos { seq: seq.clone(), sub } },
        key: Some(key.to_vec()),
        payload: Some(payload),
        timestamp_ms: arrival_ms,
        headers: None,
    }
}

impl Iterator for Unpacked {
    type Item = Message<KinesisPos>;

    /// The next message, its key and data copied now.
    fn next(&mut self) -> Option<Message<KinesisPos>> {
        if self.done {
            return None;
        }
        let Some(a) = self.aggregate.as_deref_mut() else {
            // A plain record: its one message takes what it holds (`last` keeps its position).
            self.done = true;
            return Some(Message {
                pos: KinesisPos {
                    shard: std::mem::take(&mut self.shard),
                    at: ShardPos { seq: std::mem::replace(&mut self.seq, SeqNum::moved_out()), sub: None },
                },
                key: Some(std::mem::take(&mut self.partition_key).into_bytes()),
                payload: Some(std::mem::take(&mut self.data)),
                timestamp_ms: self.arrival_ms,
                headers: None,
            });
        };
        let mut filter = Filter { seq: &self.seq, skip: a.skip.as_ref(), range: a.range, outside: a.outside, hashes: &mut a.long_key_hashes };
        while let Some(u) = a.aggregate.next(&self.data, &mut a.at) {
            if filter.verdict(&u) == Verdict::Keep {
                self.done = self.last.as_ref().is_some_and(|l| l.sub == Some(u.sub));
                let payload = u.data.to_vec();
                return Some(message(&self.shard, &self.seq, Some(u.sub), u.partition_key.as_bytes(), payload, self.arrival_ms));
            }
        }
        self.done = true;
        None
    }
}

/// Which user records of an aggregate are for this shard and not taken yet.
struct Filter<'a> {
    seq: &'a SeqNum,
    skip: Option<&'a Resume>,
    range: Option<(u128, u128)>,
    outside: OutsideShard,
    hashes: &'a mut HashMap<usize, u128>,
}

/// What a `Filter` does with a user record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    /// Taken already (before the iterator's start).
    Taken,
    /// Left out: its hash key lies outside the shard's range.
    Outside,
}

impl Filter<'_> {
    fn verdict(&mut self, u: &UserRecord<'_>) -> Verdict {
        if self.skip.is_some_and(|r| r.already_consumed(self.seq, Some(u.sub))) {
            return Verdict::Taken;
        }
        match (self.range, self.outside) {
            (Some(range), OutsideShard::Skip) if !self.in_range(u, range) => Verdict::Outside,
            _ => Verdict::Keep,
        }
    }

    fn in_range(&mut self, u: &UserRecord<'_>, (lo, hi): (u128, u128)) -> bool {
        let hash = match u.explicit_hash_key {
            Some(k) => hash_key(Some(k), u.partition_key),
            // Hashing a long key for each of thousands of user records sharing it would cost
            // what copying it did.
            None if u.partition_key.len() >= LONG_KEY => {
                Some(*self.hashes.entry(u.key_index).or_insert_with(|| partition_key_hash(u.partition_key)))
            }
            None => Some(partition_key_hash(u.partition_key)),
        };
        hash.is_some_and(|h| lo <= h && h <= hi)
    }
}

/// A deterministic "equal jitter" for a backoff delay: half of it fixed, half spread by `random`
/// (any 64-bit value), so that retries of many shards or workers do not fall on the same instant
/// while each delay still grows with the backoff.
pub fn jitter(delay: std::time::Duration, random: u64) -> std::time::Duration {
    let half = delay / 2;
    let spread = half.as_nanos() as u64;
    let extra = if spread == 0 { 0 } else { random % (spread + 1) };
    half + std::time::Duration::from_nanos(extra)
}

/// A small xorshift generator for jitter (quality is not a concern; independence across
/// processes comes from the seed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinesis::kpl::MAGIC;
    use md5::{Digest, Md5};
    use std::time::Duration;

    fn s(x: &str) -> SeqNum {
        SeqNum::parse(x).unwrap()
    }

    fn messages(
        shard: &str,
        seq: &SeqNum,
        partition_key: &str,
        data: Vec<u8>,
        arrival_ms: Option<i64>,
        range: Option<(u128, u128)>,
        skip: Option<&Resume>,
    ) -> Vec<Message<KinesisPos>> {
        Unpacked::new(shard, seq, partition_key, data, arrival_ms, range, OutsideShard::Skip, skip).collect()
    }

    /// An aggregate of user records with partition keys k0, k1, ... (protobuf written by hand).
    fn aggregate(n: u64) -> Vec<u8> {
        fn field(num: u64, b: &[u8], out: &mut Vec<u8>) {
            out.push(((num << 3) | 2) as u8);
            out.push(b.len() as u8);
            out.extend_from_slice(b);
        }
        let mut body = Vec::new();
        for i in 0..n {
            field(1, format!("k{i}").as_bytes(), &mut body);
        }
        for i in 0..n {
            let mut rec = vec![0x08, i as u8];
            field(3, format!("v{i}").as_bytes(), &mut rec);
            field(3, &rec, &mut body);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(Md5::digest(&body).as_slice());
        out
    }

    #[test]
    fn a_shard_starts_where_this_worker_stopped_taking_never_at_the_edges() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(start(None, None).0, StartAt::TrimHorizon);
        assert_eq!(start(None, Some(t)).0, StartAt::AtTimestamp(t));
        let whole = ShardPos { seq: s("42"), sub: None };
        assert_eq!(start(Some(&whole), Some(t)), (StartAt::AfterSequence(s("42")), Some(Resume::After(s("42")))));
        // an aggregate read up to its user record 3: read it again, skipping 0..=3
        let part = ShardPos { seq: s("42"), sub: Some(3) };
        assert_eq!(start(Some(&part), None), (StartAt::AtSequence(s("42")), Some(Resume::AtSkipping { seq: s("42"), done: 3 })));
    }

    #[test]
    fn a_sought_shard_starts_where_seek_put_it_until_something_is_taken() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let at = StartAt::AtSequence(s("40"));
        // the record seek named is read again, whole (nothing of it skipped)
        assert_eq!(start_sought(None, Some(&at), Some(t)), (at.clone(), None));
        let when = StartAt::AtTimestamp(t);
        assert_eq!(start_sought(None, Some(&when), None), (when.clone(), None));
        // something taken since: from there, never back at the sought position
        let whole = ShardPos { seq: s("42"), sub: None };
        assert_eq!(start_sought(Some(&whole), Some(&at), None), start(Some(&whole), None));
        let part = ShardPos { seq: s("40"), sub: Some(1) };
        assert_eq!(start_sought(Some(&part), Some(&at), None).1, Some(Resume::AtSkipping { seq: s("40"), done: 1 }));
        // not sought: as before
        assert_eq!(start_sought(None, None, Some(t)), start(None, Some(t)));
    }

    #[test]
    fn records_become_messages_once() {
        let plain = messages("shardId-000000000001", &s("7"), "pk", b"hello".to_vec(), None, None, None);
        assert_eq!(plain.len(), 1);
        assert_eq!(plain[0].payload.as_deref(), Some(&b"hello"[..]));
        assert_eq!(plain[0].key.as_deref(), Some(&b"pk"[..]));
        assert_eq!(plain[0].pos.at, ShardPos { seq: s("7"), sub: None });

        let agg = messages("shardId-000000000001", &s("9"), "outer", aggregate(5), None, None, None);
        let subs: Vec<Option<u64>> = agg.iter().map(|m| m.pos.at.sub).collect();
        assert_eq!(subs, vec![Some(0), Some(1), Some(2), Some(3), Some(4)]);
        assert_eq!(agg[2].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(agg[2].payload.as_deref(), Some(&b"v2"[..]));

        // resumed inside the aggregate after user record 2: only 3 and 4 again
        let skip = Resume::AtSkipping { seq: s("9"), done: 2 };
        let rest = messages("shardId-000000000001", &s("9"), "outer", aggregate(5), None, None, Some(&skip));
        assert_eq!(rest.iter().map(|m| m.pos.at.sub).collect::<Vec<_>>(), vec![Some(3), Some(4)]);
        // a later record is not affected by the skip; an earlier one is dropped
        assert_eq!(messages("x", &s("10"), "p", b"a".to_vec(), None, None, Some(&skip)).len(), 1);
        assert!(messages("x", &s("8"), "p", b"a".to_vec(), None, None, Some(&Resume::After(s("9")))).is_empty());
    }

    /// An aggregate of `n` user records (data "v0", "v1", ...) all naming partition key `key`,
    /// which the aggregate's table holds once.
    fn shared_key_aggregate(key: &str, n: usize) -> Vec<u8> {
        fn varint(mut v: u64, out: &mut Vec<u8>) {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        fn field(num: u64, b: &[u8], out: &mut Vec<u8>) {
            varint((num << 3) | 2, out);
            varint(b.len() as u64, out);
            out.extend_from_slice(b);
        }
        let mut body = Vec::new();
        field(1, key.as_bytes(), &mut body);
        for i in 0..n {
            let mut rec = vec![0x08, 0];
            field(3, format!("v{i}").as_bytes(), &mut rec);
            field(3, &rec, &mut body);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(Md5::digest(&body).as_slice());
        out
    }

    /// A 150 KB aggregate of 5,000 user records sharing one 100 KB partition key: copying the key
    /// into every user record before any limit applied made 500 MB. Taken apart lazily, one
    /// message costs one copy of the key, and a batch of 1 MB stops the expansion at 1 MB.
    #[test]
    fn an_aggregate_sharing_a_large_key_is_expanded_only_as_far_as_asked() {
        use crate::batch::{Batch, Limits};
        use crate::test_alloc::peak_during;
        let key = "k".repeat(100_000);
        let n = 5_000;
        let data = shared_key_aggregate(&key, n);
        assert!(data.len() < 160_000, "{}", data.len());
        let everything = Some((0, u128::MAX));
        let ((first, last), peak) = peak_during(|| {
            let mut u = Unpacked::new("shardId-1", &s("9"), "outer", data.clone(), None, everything, OutsideShard::Skip, None);
            (u.next().unwrap(), u.last_pos().cloned())
        });
        assert!(peak < 600_000, "one message of the aggregate held {peak} bytes at its peak");
        assert_eq!(first.key.as_deref(), Some(key.as_bytes()));
        assert_eq!((first.pos.at.sub, first.payload.as_deref()), (Some(0), Some(&b"v0"[..])));
        assert_eq!(last, Some(ShardPos { seq: s("9"), sub: Some(n as u64 - 1) }));

        let limits = Limits { max_messages: 100_000, max_bytes: 1 << 20, max_wait: Duration::from_secs(1) };
        let mut u = Unpacked::new("shardId-1", &s("9"), "outer", data.clone(), None, everything, OutsideShard::Skip, None);
        let (taken, peak) = peak_during(|| {
            let mut batch: Batch<KinesisPos> = Batch::default();
            while !batch.is_full(&limits) {
                match u.next() {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            (batch.len(), batch.bytes())
        });
        assert_eq!(taken.0, 11, "a 1 MB batch holds 11 user records of 100 KB");
        assert!(taken.1 >= 1 << 20);
        assert!(peak < 3 << 20, "a batch of 1 MB held {peak} bytes at its peak");
        assert!(!u.is_done());
        // The rest, once each and in order; the last one ends it.
        let rest: Vec<Option<u64>> = u.by_ref().map(|m| m.pos.at.sub).collect();
        assert_eq!(rest, (11..n as u64).map(Some).collect::<Vec<_>>());
        assert!(u.is_done() && u.next().is_none());

        // Resumed inside the aggregate: only what follows, and the same last position.
        let skip = Resume::AtSkipping { seq: s("9"), done: 4_990 };
        let u = Unpacked::new("shardId-1", &s("9"), "outer", data.clone(), None, everything, OutsideShard::Skip, Some(&skip));
        assert_eq!(u.last_pos().and_then(|l| l.sub), Some(n as u64 - 1));
        assert_eq!(u.count(), 9);
        // A shard whose hash range excludes the key: nothing, and no position.
        let h = crate::kinesis::kpl::partition_key_hash(&key);
        let other = if h == 0 { (1, u128::MAX) } else { (0, h - 1) };
        let mut u = Unpacked::new("shardId-1", &s("9"), "outer", data, None, Some(other), OutsideShard::Skip, None);
        assert!(u.last_pos().is_none() && u.is_done() && u.next().is_none());
    }

    /// User records whose hash key lies outside the shard's range: skipped and counted by
    /// default (as the KCL does: the KPL sends them again to their shard), taken with
    /// `OutsideShard::Keep` (producers aggregating without the KPL never send them again).
    #[test]
    fn user_records_outside_the_shard_are_counted_when_skipped_and_taken_when_kept() {
        let data = aggregate(6);
        let hashes: Vec<u128> = (0..6).map(|i| crate::kinesis::kpl::partition_key_hash(&format!("k{i}"))).collect();
        // The shard's range holds k2's hash key and as few others as can be.
        let h = hashes[2];
        let range = Some((h, h));
        let inside = hashes.iter().filter(|&&x| x == h).count() as u64;
        let outside = 6 - inside;
        assert!(outside >= 5);

        let u = Unpacked::new("shardId-1", &s("9"), "outer", data.clone(), None, range, OutsideShard::Skip, None);
        assert_eq!(u.skipped_outside(), outside);
        let subs: Vec<Option<u64>> = u.map(|m| m.pos.at.sub).collect();
        assert_eq!(subs, vec![Some(2)]);

        let u = Unpacked::new("shardId-1", &s("9"), "outer", data.clone(), None, range, OutsideShard::Keep, None);
        assert_eq!(u.skipped_outside(), 0);
        assert_eq!(u.last_pos(), Some(&ShardPos { seq: s("9"), sub: Some(5) }));
        let kept: Vec<(Option<u64>, Vec<u8>)> = u.map(|m| (m.pos.at.sub, m.payload.unwrap())).collect();
        assert_eq!(kept, (0..6u64).map(|i| (Some(i), format!("v{i}").into_bytes())).collect::<Vec<_>>());

        // Resumed after user record 3: those taken already are not counted again.
        let skip = Resume::AtSkipping { seq: s("9"), done: 3 };
        let u = Unpacked::new("shardId-1", &s("9"), "outer", data.clone(), None, range, OutsideShard::Skip, Some(&skip));
        assert_eq!(u.skipped_outside(), 2);
        let u = Unpacked::new("shardId-1", &s("9"), "outer", data, None, range, OutsideShard::Keep, Some(&skip));
        assert_eq!(u.map(|m| m.pos.at.sub).collect::<Vec<_>>(), vec![Some(4), Some(5)]);
        // A plain record is never outside (it is the shard's own record).
        let u = Unpacked::new("shardId-1", &s("10"), "pk", b"x".to_vec(), None, range, OutsideShard::Skip, None);
        assert_eq!((u.skipped_outside(), u.count()), (0, 1));
        assert_eq!(OutsideShard::parse("keep"), Some(OutsideShard::Keep));
        assert_eq!(OutsideShard::parse("skip"), Some(OutsideShard::Skip));
        assert_eq!(OutsideShard::parse("Keep"), None);
    }

    #[test]
    fn jitter_stays_within_half_and_whole_delay() {
        let mut rng = Rng::new(12345);
        let d = Duration::from_millis(1000);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let j = jitter(d, rng.next_u64());
            assert!(j >= d / 2 && j <= d, "{j:?}");
            seen.insert(j.as_millis() / 100);
        }
        assert!(seen.len() >= 4, "spread out: {seen:?}");
        assert_eq!(jitter(Duration::ZERO, 99), Duration::ZERO);
    }
}
