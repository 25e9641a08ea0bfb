//! A batch of polled messages and its position bookkeeping: where each stream of the source (a
//! Kafka partition, a Kinesis shard) stands once the batch commits, and when the batch is due.
//! Generic over the source's position type.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

// The positions are defined below the batch (crate::position); named here too, where their
// users have always found them.
pub use crate::position::{KafkaPos, KinesisPos, Position};

/// One message from a source, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<P> {
    pub pos: P,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// Kafka: the message timestamp; Kinesis: the record's approximate arrival time (ms since the
    /// Unix epoch).
    pub timestamp_ms: Option<i64>,
    /// Kafka headers in order (a name may repeat; a value may be null); None when there are none.
    pub headers: Option<Vec<(String, Option<Vec<u8>>)>>,
}

impl<P> Message<P> {
    /// What the message counts for in a batch's bytes: its key, payload and headers (a message may
    /// carry a megabyte of headers and no value).
    pub fn size(&self) -> usize {
        self.payload.as_ref().map_or(0, Vec::len)
            + self.key.as_ref().map_or(0, Vec::len)
            + crate::headers::headers_size(self.headers.as_deref())
    }
}

/// When a batch must be flushed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

#[derive(Debug)]
pub struct Batch<P> {
    pub messages: Vec<Message<P>>,
    bytes: usize,
    started: Option<Instant>,
    /// The messages of committed batches, kept so that the next batch's messages reuse their
    /// buffers (`push_with`) instead of allocating and freeing two buffers per message.
    spare: Vec<Message<P>>,
    /// What the source's reader made ready of each message for the fast path (rows::fast): empty,
    /// or one per message (`push` adds `Pre::Fallback` then).
    pre: Vec<crate::rows::fast::Pre>,
}

impl<P> Default for Batch<P> {
    fn default() -> Self {
        Batch {
            messages: Vec::new(),
            bytes: 0,
            started: None,
            spare: Vec::new(),
            pre: Vec::new(),
        }
    }
}

/// Replaces `slot`'s bytes with `data` (None: no value), reusing its buffer.
pub fn refill(slot: &mut Option<Vec<u8>>, data: Option<&[u8]>) {
    match (slot.as_mut(), data) {
        (Some(buf), Some(d)) => {
            buf.clear();
            buf.extend_from_slice(d);
        }
        (None, Some(d)) => *slot = Some(d.to_vec()),
        (_, None) => {
            // Keep no buffer: a tombstone's slot must read None.
            *slot = None;
        }
    }
}

impl<P: Position> Batch<P> {
    pub fn push(&mut self, m: Message<P>) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        self.bytes += m.size();
        self.messages.push(m);
        if !self.pre.is_empty() {
            self.pre.push(crate::rows::fast::Pre::Fallback);
        }
    }

    /// Adds a message with what the reader made ready of it (rows::fast).
    pub fn push_pre(&mut self, m: Message<P>, pre: crate::rows::fast::Pre) {
        if self.pre.len() < self.messages.len() {
            self.pre
                .resize(self.messages.len(), crate::rows::fast::Pre::Fallback);
        }
        self.pre.push(pre);
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        self.bytes += m.size();
        self.messages.push(m);
    }

    /// Makes the messages from index `from` on ready with `make` (a source without a reader
    /// thread, Kinesis: on the main thread, while the batch fills).
    pub fn prepare_tail(&mut self, from: usize, make: impl FnOnce(&[Message<P>]) -> Vec<crate::rows::fast::Pre>) {
        if from >= self.messages.len() {
            return;
        }
        let made = make(&self.messages[from..]);
        if made.len() == self.messages.len() - from {
            self.pre.resize(from, crate::rows::fast::Pre::Fallback);
            self.pre.extend(made);
        }
    }

    /// One entry per message when the source made them ready for the fast path, else None.
    pub fn pre(&self) -> Option<&[crate::rows::fast::Pre]> {
        (!self.pre.is_empty() && self.pre.len() == self.messages.len()).then_some(&self.pre[..])
    }

    /// Adds a message made by `fill_in` in a recycled message when there is one (its fields still
    /// hold an earlier message: `fill_in` must set every field, e.g. with `refill`), else in
    /// `blank`.
    pub fn push_with(&mut self, blank: impl FnOnce() -> Message<P>, fill_in: impl FnOnce(&mut Message<P>)) {
        let mut m = self.spare.pop().unwrap_or_else(blank);
        fill_in(&mut m);
        self.push(m);
    }

    /// The recycled messages, for a source that fills messages elsewhere (e.g. in a thread).
    pub fn take_spare(&mut self) -> Vec<Message<P>> {
        std::mem::take(&mut self.spare)
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Full by count or size: flush now.
    pub fn is_full(&self, l: &Limits) -> bool {
        self.messages.len() >= l.max_messages || self.bytes >= l.max_bytes
    }

    /// How long until the batch is due by time; None when empty.
    pub fn time_left(&self, l: &Limits, now: Instant) -> Option<Duration> {
        self.started.map(|s| (s + l.max_wait).saturating_duration_since(now))
    }

    /// The last message's position in each stream: where each stream stands once this batch has
    /// committed (sources deliver a stream's messages in order).
    pub fn last_positions(&self) -> BTreeMap<P::Stream, P> {
        // One map update per run of a stream's messages, not per message.
        let mut last = BTreeMap::new();
        for pair in self.messages.windows(2) {
            if pair[0].pos.stream() != pair[1].pos.stream() {
                last.insert(pair[0].pos.stream(), pair[0].pos.clone());
            }
        }
        if let Some(m) = self.messages.last() {
            last.insert(m.pos.stream(), m.pos.clone());
        }
        last
    }

    /// What the checkpoint of each stream the batch touched holds once it has committed.
    pub fn checkpoints(&self) -> BTreeMap<P::Stream, P::Checkpoint> {
        self.last_positions().into_iter().map(|(s, p)| (s, p.checkpoint())).collect()
    }

    pub fn clear(&mut self) {
        // At most one batch's worth is kept: messages a source did not take back since the last
        // batch are freed (a source that never recycles, as Kinesis's, kept every message it
        // ever delivered).
        if self.spare.is_empty() {
            std::mem::swap(&mut self.spare, &mut self.messages);
        }
        self.messages.clear();
        self.pre.clear();
        self.bytes = 0;
        self.started = None;
    }
}

/// The partitions a worker owns: partition p goes to worker p mod parallelism.
pub fn partitions_for_worker(partitions: &[i32], parallelism: i32, index: i32) -> Vec<i32> {
    let mut mine: Vec<i32> = partitions.iter().copied().filter(|p| p.rem_euclid(parallelism.max(1)) == index).collect();
    mine.sort_unstable();
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(p: i32, o: i64, len: usize) -> Message<KafkaPos> {
        Message { pos: KafkaPos { partition: p, offset: o }, key: None, payload: Some(vec![b'x'; len]), timestamp_ms: None, headers: None }
    }

    #[test]
    fn next_offsets_are_one_past_the_last_message_of_each_partition() {
        let mut b = Batch::default();
        for (p, o) in [(0, 5), (1, 9), (0, 6), (2, 0), (1, 10)] {
            b.push(msg(p, o, 1));
        }
        let want: BTreeMap<i32, i64> = [(0, 7), (1, 11), (2, 1)].into_iter().collect();
        assert_eq!(b.checkpoints(), want);
    }

    #[test]
    fn kinesis_positions_are_the_last_record_of_each_shard() {
        use crate::kinesis::seqnum::{SeqNum, ShardPos};
        let pos = |shard: &str, seq: &str, sub: Option<u64>| KinesisPos {
            shard: shard.to_string(),
            at: ShardPos { seq: SeqNum::parse(seq).unwrap(), sub },
        };
        let mut b: Batch<KinesisPos> = Batch::default();
        for p in [pos("shardId-1", "10", None), pos("shardId-2", "7", Some(0)), pos("shardId-2", "7", Some(1)), pos("shardId-1", "12", None)] {
            b.push(Message { pos: p, key: None, payload: Some(b"x".to_vec()), timestamp_ms: None, headers: None });
        }
        let last = b.last_positions();
        assert_eq!(last["shardId-1"], pos("shardId-1", "12", None));
        assert_eq!(last["shardId-2"], pos("shardId-2", "7", Some(1)));
        let want = crate::position::ShardCheckpoint { last: Some(ShardPos { seq: SeqNum::parse("7").unwrap(), sub: Some(1) }), finished: false };
        assert_eq!(b.checkpoints()["shardId-2"], want);
    }

    #[test]
    fn limits_by_count_bytes_and_time() {
        let l = Limits { max_messages: 3, max_bytes: 100, max_wait: Duration::from_millis(250) };
        let mut b = Batch::default();
        assert_eq!(b.time_left(&l, Instant::now()), None);
        b.push(msg(0, 0, 10));
        assert!(!b.is_full(&l));
        assert!(b.time_left(&l, Instant::now()).unwrap() <= Duration::from_millis(250));
        assert_eq!(b.time_left(&l, Instant::now() + Duration::from_secs(1)), Some(Duration::ZERO));
        b.push(msg(0, 1, 95));
        assert!(b.is_full(&l));
        b.clear();
        assert!(b.is_empty() && b.bytes() == 0);
        for o in 0..3 {
            b.push(msg(0, o, 1));
        }
        assert!(b.is_full(&l));
    }

    /// A message with an empty value and a 900 KB header counts its header: 1,200 of them under
    /// maxbytes 100000 made one batch of 1 GB when only keys and values counted.
    #[test]
    fn headers_count_toward_the_batch_bytes() {
        let l = Limits { max_messages: 100_000, max_bytes: 100_000, max_wait: Duration::from_secs(1) };
        let big = Message {
            pos: KafkaPos { partition: 0, offset: 0 },
            key: Some(b"k".to_vec()),
            payload: Some(Vec::new()),
            timestamp_ms: None,
            headers: Some(vec![("h".to_string(), Some(vec![b'x'; 900_000]))]),
        };
        assert_eq!(big.size(), 1 + 1 + 900_000 + crate::headers::HEADER_COST);
        let mut b = Batch::default();
        b.push(big);
        assert!(b.is_full(&l), "one such message fills the batch");
        // many empty headers count too (each costs its bookkeeping)
        let many = Message { headers: Some(vec![(String::new(), None); 2_000]), ..msg(0, 1, 0) };
        assert_eq!(many.size(), 2_000 * crate::headers::HEADER_COST);
        let mut b = Batch::default();
        b.push(many);
        assert!(b.is_full(&l));
    }

    #[test]
    fn recycled_messages_hold_only_the_new_values() {
        let mut b = Batch::default();
        b.push(Message { pos: KafkaPos { partition: 0, offset: 0 }, key: Some(b"key".to_vec()), payload: Some(b"long payload".to_vec()), timestamp_ms: Some(5), headers: None });
        b.clear();
        let fresh = || msg(9, 9, 0);
        b.push_with(fresh, |m| {
            m.pos = KafkaPos { partition: 1, offset: 7 };
            refill(&mut m.key, None);
            refill(&mut m.payload, Some(b"ab"));
            m.timestamp_ms = None;
            m.headers = None;
        });
        b.push_with(fresh, |m| {
            m.pos = KafkaPos { partition: 2, offset: 8 };
            refill(&mut m.payload, None);
        });
        assert_eq!(b.messages[0], Message { pos: KafkaPos { partition: 1, offset: 7 }, key: None, payload: Some(b"ab".to_vec()), timestamp_ms: None, headers: None });
        // The second came from `blank` (nothing left to recycle).
        assert_eq!(b.messages[1], Message { pos: KafkaPos { partition: 2, offset: 8 }, key: None, payload: None, timestamp_ms: None, headers: None });
        assert_eq!(b.bytes(), 2);
    }

    #[test]
    fn at_most_one_batch_is_kept_for_reuse() {
        let mut b = Batch::default();
        for round in 0..5 {
            for o in 0..100 {
                b.push(msg(0, round * 100 + o, 10));
            }
            b.clear();
        }
        // nobody took the spare messages back: only the first batch's are kept, not all 500
        assert_eq!(b.take_spare().len(), 100);
        assert!(b.take_spare().is_empty());
    }

    #[test]
    fn partitions_are_spread_round_robin() {
        let parts: Vec<i32> = (0..5).collect();
        assert_eq!(partitions_for_worker(&parts, 2, 0), vec![0, 2, 4]);
        assert_eq!(partitions_for_worker(&parts, 2, 1), vec![1, 3]);
        assert_eq!(partitions_for_worker(&parts, 1, 0), parts);
        assert_eq!(partitions_for_worker(&parts, 8, 7), Vec::<i32>::new());
    }
}
