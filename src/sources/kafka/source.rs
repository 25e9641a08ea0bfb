//! A worker's Kafka consumer as a pipeline `Source`: manual partition assignment from stored
//! offsets, bounded prefetch taken off librdkafka's queue by the reader thread (reader.rs); with a
//! group_id, committed offsets are also committed to the group coordinator for Kafka's lag tools.
//!
//! librdkafka runs its own threads; everything here is called from the worker's main thread and
//! never calls back into PostgreSQL from another thread.

use super::copy::KafkaMessage;
use super::probe::{offsets_at_time, topic_partitions, ProbeError};
use super::reader::{Delivery, Reader};
use super::settings::{create_consumer, Client};
use crate::sources::error::SourceError;
use crate::sources::kafka_brokers::BrokerRescue;
use crate::sources::Source;
use ingest_core::batch::{partitions_for_worker, Batch, KafkaPos, Limits};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

/// The consumer side of a worker: owns partitions p with p mod parallelism == index.
pub struct KafkaSource {
    consumer: Client,
    topic: String,
    parallelism: i32,
    index: i32,
    /// Next offset to read per owned partition; None = no stored offset (read from the start).
    positions: BTreeMap<i32, Option<i64>>,
    /// The reader thread wakes the main thread through this pipe.
    wake_fds: [i32; 2],
    /// Our reference to the consumer queue (the reader thread polls it).
    queue: *mut rdkafka_sys::rd_kafka_queue_t,
    /// Takes messages off the queue in a thread of its own (None only while starting).
    reader: Option<Reader>,
    /// Messages the reader handed over (in the current epoch) that did not fit in the last batch.
    pending: std::collections::VecDeque<KafkaMessage>,
    /// What the reader made ready of `pending` (one each, or empty: rows::fast).
    pending_pre: std::collections::VecDeque<ingest_core::rows::fast::Pre>,
    error: Option<String>,
    /// The last `fill` took everything the reader had: nothing more is available right now.
    drained: bool,
    metadata_timeout: Duration,
    /// Every partition of the topic, as last seen (for the supervisor, see `Source::all_streams`).
    all: Vec<i32>,
    /// consume_begin's start_time (ms since the Unix epoch): where partitions without a stored
    /// offset start (None: at their beginning).
    start_time_ms: Option<i64>,
    /// A group.id was given (consume_begin's group_id): offsets committed to PostgreSQL are also
    /// committed to the group coordinator.
    group_commits: bool,
    /// Re-adds the bootstrap servers when librdkafka has dropped every broker (kafka_brokers.rs).
    rescue: BrokerRescue,
}

impl KafkaSource {
    /// A worker's client: its partitions at their `stored` offsets; partitions without one start
    /// at the first message stamped at or after `start_time_ms` (None: at their beginning).
    /// Messages keep their headers only when `headers` (the consumer uses them).
    pub fn new(
        cfg: &ClientConfig,
        topic: &str,
        parallelism: i32,
        index: i32,
        stored: &BTreeMap<i32, i64>,
        max_bytes: usize,
        start_time_ms: Option<i64>,
        headers: bool,
    ) -> Result<KafkaSource, SourceError> {
        let mut cfg = cfg.clone();
        // Prefetch bounded by the batch size in bytes (librdkafka's default is 64 MB per partition).
        let kbytes = (max_bytes / 1024).clamp(1024, 2_097_151);
        cfg.set("queued.max.messages.kbytes", kbytes.to_string());
        // librdkafka prefetches up to 100,000 messages per partition by default, each with a few
        // hundred bytes of bookkeeping: for small messages that, not maxbytes, bounds the worker's
        // memory. The reader thread keeps the queue drained, so a smaller prefetch costs nothing.
        if cfg.get("queued.min.messages").is_none() {
            cfg.set("queued.min.messages", "20000");
        }
        let group_commits = cfg.get("group.id").is_some();
        if !group_commits {
            cfg.set("group.id", "pipeline_ingest");
        }
        let consumer = create_consumer(&cfg).map_err(|e| e.context("could not create Kafka consumer"))?;
        let mut fds = [-1i32; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(SourceError::System(format!("could not create a wakeup pipe: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: the client pointer is valid while `consumer` lives; the queue reference is kept in
        // the struct and released in Drop (before the consumer).
        let queue = unsafe {
            let rk = consumer.client().native_ptr();
            let q = rdkafka_sys::rd_kafka_queue_get_consumer(rk);
            if q.is_null() {
                return Err(SourceError::Internal("librdkafka has no consumer queue".to_string()));
            }
            q
        };
        let mut src = KafkaSource {
            consumer,
            topic: topic.to_string(),
            parallelism,
            index,
            positions: BTreeMap::new(),
            wake_fds: fds,
            queue,
            reader: None,
            pending: std::collections::VecDeque::new(),
            pending_pre: std::collections::VecDeque::new(),
            error: None,
            drained: false,
            metadata_timeout: Duration::from_secs(5),
            all: Vec::new(),
            start_time_ms,
            group_commits,
            rescue: BrokerRescue::new(cfg.get("bootstrap.servers")),
        };
        src.positions = stored.iter().map(|(p, o)| (*p, Some(*o))).collect();
        src.positions.retain(|p, _| p.rem_euclid(parallelism.max(1)) == index);
        src.reassign(None)?;
        let reader = Reader::start(queue, src.consumer.client().native_ptr(), fds[1], headers)
            .map_err(|e| SourceError::System(format!("could not start the Kafka reader thread: {e}")))?;
        src.reader = Some(reader);
        Ok(src)
    }

    /// Assigns the owned partitions at their positions. With `known`, the partition list is taken
    /// from there instead of asking the broker.
    fn reassign(&mut self, known: Option<Vec<i32>>) -> Result<(), SourceError> {
        let all = match known {
            Some(k) => k,
            None => self.partitions_now()?,
        };
        let mine = partitions_for_worker(&all, self.parallelism, self.index);
        self.all = all;
        for p in &mine {
            self.positions.entry(*p).or_insert(None);
        }
        // Partitions without a stored offset start at start_time when there is one, looked up
        // again at every assignment until a batch stores their offset (a message written since
        // with a timestamp >= start_time is then still read).
        let unstored: Vec<i32> = mine.iter().copied().filter(|p| self.positions[p].is_none()).collect();
        let by_time = match self.start_time_ms {
            Some(t) if !unstored.is_empty() => offsets_at_time(&self.consumer, &self.topic, &unstored, t, self.metadata_timeout)?,
            _ => BTreeMap::new(),
        };
        let mut tpl = TopicPartitionList::new();
        for p in &mine {
            let off = match (self.positions[p], self.start_time_ms) {
                (Some(o), _) => Offset::Offset(o),
                (None, None) => Offset::Beginning,
                (None, Some(_)) => match by_time.get(p) {
                    Some(Some(o)) => Offset::Offset(*o),
                    // No message that recent yet: from the end as it is now (every message from
                    // there on is newer); a concrete offset, so none written meanwhile is missed.
                    _ => match self.consumer.fetch_watermarks(&self.topic, *p, self.metadata_timeout) {
                        Ok((_, high)) => Offset::Offset(high),
                        Err(e) => return Err(SourceError::Unreachable(format!("could not get the end offset of partition {p}: {e}"))),
                    },
                },
            };
            tpl.add_partition_offset(&self.topic, *p, off).map_err(|e| SourceError::Internal(e.to_string()))?;
        }
        // Whatever the reader took before this assignment is read again from the assigned offsets
        // (the batch is empty when partitions are reassigned): its epoch ends here.
        let _paused = self.reader.as_ref().map(|r| r.pause());
        if let Some(r) = &self.reader {
            r.recycle(self.pending.drain(..).collect());
            self.pending_pre.clear();
        }
        self.consumer.assign(&tpl).map_err(|e| SourceError::Internal(format!("could not assign partitions: {e}")))?;
        Ok(())
    }

    /// The topic's partitions, asked of the broker.
    fn partitions_now(&self) -> Result<Vec<i32>, SourceError> {
        topic_partitions(&self.consumer, &self.topic, self.metadata_timeout).map_err(|e| match e {
            ProbeError::NoTopic => SourceError::NotFound(format!("topic \"{}\" does not exist", self.topic)),
            other => SourceError::from(other).context(format_args!("could not get metadata of topic \"{}\"", self.topic)),
        })
    }

    /// The high watermark librdkafka last saw for a partition (from fetch responses: no request).
    pub fn cached_high_watermark(&self, partition: i32) -> Option<i64> {
        let topic = std::ffi::CString::new(self.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: valid client pointer and C string; librdkafka writes the two integers.
        let err = unsafe {
            rdkafka_sys::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
    }

    pub fn assigned(&self) -> Vec<i32> {
        self.positions.keys().copied().collect()
    }

    /// Commits offsets PostgreSQL has committed (the next offset to read, as Kafka's committed
    /// offsets mean too) to the consumer group's coordinator, so that kafka-consumer-groups or
    /// Burrow show the lag. Asynchronous: the batch never waits for it, and the result is only for
    /// those tools. The offsets in PostgreSQL stay the truth: a worker starts from them, never from
    /// the group's.
    fn commit_to_group(&self, saved: &BTreeMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (p, next) in saved {
            if tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*next)).is_err() {
                return;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            // A lost group commit only makes external lag tools lag; the next batch commits again.
            pgrx::debug1!("pipeline_kafka: could not commit offsets of \"{}\" to its consumer group: {e}", self.topic);
        }
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // The reader thread polls the queue: it ends (joined) first.
        self.reader = None;
        // SAFETY: the reference taken in `new`, released once, no longer used by any thread.
        unsafe { rdkafka_sys::rd_kafka_queue_destroy(self.queue) };
        for fd in self.wake_fds {
            if fd >= 0 {
                // SAFETY: closing descriptors this struct created and owns.
                unsafe { libc::close(fd) };
            }
        }
    }
}

impl Source for KafkaSource {
    type Pos = KafkaPos;

    fn fill(&mut self, batch: &mut Batch<KafkaPos>, limits: &Limits) -> usize {
        let Some(reader) = &self.reader else { return 0 };
        reader.recycle(batch.take_spare());
        let epoch = reader.epoch();
        let mut added = 0;
        self.drained = false;
        while !batch.is_full(limits) {
            if let Some(m) = self.pending.pop_front() {
                match self.pending_pre.pop_front() {
                    Some(pre) => batch.push_pre(m, pre),
                    None => batch.push(m),
                }
                added += 1;
                continue;
            }
            match reader.try_next() {
                Ok(Some(Delivery::Messages(e, messages, pre))) if e == epoch => {
                    self.pending = messages.into();
                    self.pending_pre = pre.into();
                }
                // Read before the last reassignment: librdkafka delivers these again.
                Ok(Some(Delivery::Messages(_, messages, _))) => reader.recycle(messages),
                Ok(Some(Delivery::Error(e, text))) => {
                    if e == epoch {
                        self.error = Some(self.consumer.context().explain(text));
                    }
                }
                Ok(None) => {
                    self.drained = true;
                    break;
                }
                // Only a bug ends the reader early: exit, and the supervisor starts a new worker.
                Err(e) => pgrx::error!("pipeline_kafka: {e}"),
            }
        }
        added
    }

    fn set_fast_plan(&mut self, plan: Option<std::sync::Arc<ingest_core::rows::fast::FastPlan>>) {
        if let Some(r) = &self.reader {
            r.set_plan(plan);
        }
    }

    fn drained(&self) -> bool {
        self.drained
    }

    fn wait_fd(&self) -> Option<i32> {
        Some(self.wake_fds[0])
    }

    fn drain_wakeups(&mut self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a local buffer from the non-blocking pipe this struct owns.
        while unsafe { libc::read(self.wake_fds[0], buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }

    fn take_error(&mut self) -> Option<String> {
        self.rescue.look(self.consumer.client().native_ptr());
        self.error.take()
    }

    fn maintain(&mut self) -> Result<(), SourceError> {
        let all = self.partitions_now()?;
        let mine = partitions_for_worker(&all, self.parallelism, self.index);
        self.all.clone_from(&all);
        if mine.iter().any(|p| !self.positions.contains_key(p)) {
            pgrx::log!("pipeline_kafka: topic \"{}\" has new partitions, now reading {:?}", self.topic, mine);
            self.reassign(Some(all))?;
        }
        Ok(())
    }

    fn checkpoints(&self) -> BTreeMap<i32, Option<i64>> {
        self.positions.clone()
    }

    fn owned(&self) -> Vec<(i32, Option<i64>)> {
        self.positions.keys().map(|p| (*p, self.cached_high_watermark(*p))).collect()
    }

    fn all_streams(&self) -> Vec<i32> {
        self.all.clone()
    }

    fn committed(&mut self, saved: &BTreeMap<i32, i64>) {
        for (p, next) in saved {
            self.positions.insert(*p, Some(*next));
        }
        if self.group_commits && !saved.is_empty() {
            self.commit_to_group(saved);
        }
    }
}