//! Reading a shard, the decisions that need no network: where to (re)start it, which user records
//! a fetched record holds for us, and what the checkpoint of a shard is.
//!
//! A shard is (re)started from the last record this worker took from it, whether that record is
//! committed yet or only in the batch being built: from its checkpoint after a restart, from the
//! last record fetched when an iterator expired (the uncommitted batch already holds what came
//! before). Never from TRIM_HORIZON or LATEST once anything was read.

use super::kpl::{deaggregate, Records};
use super::seqnum::{Resume, SeqNum, ShardPos};
use crate::batch::{KinesisPos, Message};
use std::time::SystemTime;

/// Where to start reading a shard (GetShardIterator's types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    TrimHorizon,
    Latest,
    AtTimestamp(SystemTime),
    AtSequence(SeqNum),
    AfterSequence(SeqNum),
}

/// What a shard's checkpoint holds: the last user record consumed (None: nothing yet) and whether
/// the shard was read to SHARD_END (committed with its last rows: its children may be read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardCheckpoint {
    pub last: Option<ShardPos>,
    pub finished: bool,
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

/// The messages one fetched record holds for this shard: itself (a plain record) or its KPL user
/// records whose hash key lies in the shard's range, each with its sub-sequence index; records
/// and user records already taken (`skip`) are left out.
pub fn messages(
    shard: &str,
    seq: &SeqNum,
    partition_key: &str,
    data: Vec<u8>,
    arrival_ms: Option<i64>,
    range: Option<(u128, u128)>,
    skip: Option<&Resume>,
) -> Vec<Message<KinesisPos>> {
    let taken = |sub: Option<u64>| skip.is_some_and(|r| r.already_consumed(seq, sub));
    let pos = |sub: Option<u64>| KinesisPos { shard: shard.to_string(), at: ShardPos { seq: seq.clone(), sub } };
    match deaggregate(&data, range) {
        Records::Plain if taken(None) => Vec::new(),
        Records::Plain => vec![Message {
            pos: pos(None),
            key: Some(partition_key.as_bytes().to_vec()),
            payload: Some(data),
            timestamp_ms: arrival_ms,
            headers: None,
        }],
        Records::Aggregated(users) => users
            .into_iter()
            .filter(|u| !taken(Some(u.sub)))
            .map(|u| Message {
                pos: pos(Some(u.sub)),
                key: Some(u.partition_key.into_bytes()),
                payload: Some(u.data),
                timestamp_ms: arrival_ms,
                headers: None,
            })
            .collect(),
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
