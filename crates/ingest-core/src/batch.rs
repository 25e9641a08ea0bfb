//! A batch of polled messages and its offset bookkeeping: what the next offset of each partition
//! is once the batch commits, and when the batch is due.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One message from a source, owned. `partition` is a Kafka partition or a Kinesis shard index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// When a batch must be flushed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_messages: usize,
    pub max_bytes: usize,
    pub max_wait: Duration,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub messages: Vec<Message>,
    bytes: usize,
    started: Option<Instant>,
}

impl Batch {
    pub fn push(&mut self, m: Message) {
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
        self.bytes += m.payload.as_ref().map_or(0, |p| p.len()) + m.key.as_ref().map_or(0, |k| k.len());
        self.messages.push(m);
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

    /// The next offset to read per partition once this batch has committed.
    pub fn next_offsets(&self) -> BTreeMap<i32, i64> {
        let mut next = BTreeMap::new();
        for m in &self.messages {
            let e = next.entry(m.partition).or_insert(m.offset + 1);
            if *e < m.offset + 1 {
                *e = m.offset + 1;
            }
        }
        next
    }

    pub fn clear(&mut self) {
        self.messages.clear();
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

    fn msg(p: i32, o: i64, len: usize) -> Message {
        Message { partition: p, offset: o, key: None, payload: Some(vec![b'x'; len]) }
    }

    #[test]
    fn next_offsets_are_one_past_the_last_message_of_each_partition() {
        let mut b = Batch::default();
        for (p, o) in [(0, 5), (1, 9), (0, 6), (2, 0), (1, 10)] {
            b.push(msg(p, o, 1));
        }
        let want: BTreeMap<i32, i64> = [(0, 7), (1, 11), (2, 1)].into_iter().collect();
        assert_eq!(b.next_offsets(), want);
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

    #[test]
    fn partitions_are_spread_round_robin() {
        let parts: Vec<i32> = (0..5).collect();
        assert_eq!(partitions_for_worker(&parts, 2, 0), vec![0, 2, 4]);
        assert_eq!(partitions_for_worker(&parts, 2, 1), vec![1, 3]);
        assert_eq!(partitions_for_worker(&parts, 1, 0), parts);
        assert_eq!(partitions_for_worker(&parts, 8, 7), Vec::<i32>::new());
    }
}
