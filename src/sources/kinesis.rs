//! A Kinesis stream as a pipeline source: the shards one worker owns, read in lineage order.
//!
//! Shards come from ListShards (listed again every pipeline_ingest.metadata_refresh and after
//! every SHARD_END). A worker owns the shards whose number modulo `parallelism` is its index, and
//! reads an owned shard only once every listed parent is finished: read to SHARD_END with that
//! end committed (`ShardCheckpoint::finished`, in the same transaction as the parent's last rows).
//! A shard read to its end becomes a pending checkpoint that the pipeline commits, with the next
//! batch or alone; only then are its children read, from TRIM_HORIZON (or the consumer's
//! start_time, which is earlier than any child created after consume_begin).
//!
//! Each shard has its own iterator, poll schedule (one GetRecords per poll_interval at most, so a
//! shard stays within the service's 5 calls per second) and exponential backoff with jitter for
//! throttling and outages. An expired iterator is taken again from the last record taken. KPL
//! aggregates become their user records one at a time, as batches have room
//! (`ingest_core::kinesis::read::Unpacked`). User records whose hash key lies outside the shard's
//! range are skipped (counted, and logged once per GetRecords) or kept, as the consumer's config
//! `kpl_records_outside_shard` says (`OutsideShard`).
//!
//! The SDK runs on a current-thread runtime on the worker's main thread; every call is bounded
//! by pipeline_ingest.broker_timeout. What the source needs of the catalog and of the worker that
//! runs it comes through `KinesisHost`, which the worker implements.

use super::error::SourceError;
use crate::xact::PgError;
use ingest_core::backoff::Backoff;
use ingest_core::batch::{Batch, KinesisPos, Limits};
use ingest_core::kinesis::lineage::{readable, waiting_for_parents, worker_of, Progress, Shard};
use ingest_core::kinesis::read::{jitter, start_sought, OutsideShard, Rng, ShardCheckpoint, StartAt, Unpacked};
use ingest_core::kinesis::seqnum::{Resume, ShardPos};
use ingest_kinesis::{Kinesis, KinesisError, Recovery};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

/// How often a worker whose shards wait for parents read by another worker looks whether they
/// finished.
const PARENT_CHECK: Duration = Duration::from_secs(1);

/// What the Kinesis source asks of the worker that runs it: the catalog's record of its consumer's
/// shards (pipeline_kinesis.seqnums, each call in a transaction of its own) and whether the worker
/// is asked to stop.
pub trait KinesisHost {
    /// Records the lineage of the listed shards this worker owns.
    fn note_lineage(&self, shards: &[&Shard]) -> Result<(), PgError>;
    /// The committed checkpoint of every shard of the consumer.
    fn stored(&self) -> Result<BTreeMap<String, ShardCheckpoint>, PgError>;
    /// The worker is asked to stop: make no more calls that wait.
    fn stop_requested(&self) -> bool;
}

/// One shard being read.
struct Reader {
    range: (u128, u128),
    iterator: Option<String>,
    /// The last user record taken from the shard (buffered, in the batch or committed).
    taken: Option<ShardPos>,
    /// Records of the iterator's start that were taken already (an aggregate read partly).
    skip: Option<Resume>,
    /// Fetched records whose user records are not all in a batch yet (none is done): taken
    /// apart one user record at a time as batches have room (`Unpacked`), so what a fetch holds
    /// is its records' bytes, not their expansion.
    buffer: VecDeque<Unpacked>,
    /// GetRecords returned no next iterator: SHARD_END.
    ended: bool,
    next_poll: Instant,
    backoff: Backoff,
    millis_behind: Option<i64>,
}

pub struct KinesisSource {
    client: Kinesis,
    host: Box<dyn KinesisHost>,
    consumer_id: i32,
    stream: String,
    parallelism: i32,
    index: i32,
    start_time: Option<SystemTime>,
    /// Shards pipeline_kinesis.seek moved, with no checkpoint since: where they start.
    sought: BTreeMap<String, StartAt>,
    limit: i32,
    poll_interval: Duration,
    retry_max: Duration,
    outside: OutsideShard,
    /// KPL user records skipped for lying outside their shard's range, per shard, not yet
    /// published (`take_skipped`).
    skipped: BTreeMap<String, i64>,
    shards: Vec<Shard>,
    /// Committed checkpoints, of this worker's shards and (for lineage) of others'.
    progress: BTreeMap<String, ShardCheckpoint>,
    readers: BTreeMap<String, Reader>,
    error: Option<String>,
    rng: Rng,
    /// List the shards again at the next fill (after a shard end or a shard gone), not before
    /// `relist_at` (a failed listing backs off like a failed read).
    relist: bool,
    relist_at: Instant,
    list_backoff: Backoff,
    parents_checked: Instant,
    /// The fast path's plan (rows::fast): records are made ready as they go into a batch.
    fast: Option<std::sync::Arc<ingest_core::rows::fast::FastPlan>>,
}

/// How a Kinesis consumer reads, from its catalog row.
pub struct ReadSettings {
    pub stream: String,
    pub parallelism: i32,
    pub index: i32,
    pub start_time: Option<SystemTime>,
    /// Shards pipeline_kinesis.seek moved and not read since (`pipeline_kinesis.seeks`).
    pub sought: BTreeMap<String, StartAt>,
    pub batchsize: i32,
    pub poll_interval: Duration,
    pub retry_max: Duration,
    pub outside: OutsideShard,
}

impl KinesisSource {
    pub fn new(
        client: Kinesis,
        host: Box<dyn KinesisHost>,
        consumer_id: i32,
        s: &ReadSettings,
        progress: BTreeMap<String, ShardCheckpoint>,
    ) -> Result<KinesisSource, SourceError> {
        let mut source = KinesisSource {
            client,
            host,
            consumer_id,
            stream: s.stream.clone(),
            parallelism: s.parallelism.max(1),
            index: s.index,
            start_time: s.start_time,
            sought: s.sought.clone(),
            limit: s.batchsize.clamp(1, 10_000),
            poll_interval: s.poll_interval,
            retry_max: s.retry_max,
            outside: s.outside,
            skipped: BTreeMap::new(),
            shards: Vec::new(),
            progress,
            readers: BTreeMap::new(),
            error: None,
            rng: Rng::new(u64::from(std::process::id()) ^ (SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64))),
            relist: false,
            relist_at: Instant::now(),
            list_backoff: Backoff::new(Duration::from_millis(500), s.retry_max),
            parents_checked: Instant::now(),
            fast: None,
        };
        source.list()?;
        Ok(source)
    }

    /// The shards this worker reads now.
    pub fn reading(&self) -> Vec<String> {
        self.readers.keys().cloned().collect()
    }

    fn describe(&self, e: &KinesisError) -> String {
        format!("stream \"{}\": {e}", self.stream)
    }

    /// A failed call on the stream, by its cause.
    fn stream_error(&self, e: KinesisError) -> SourceError {
        SourceError::from(e).context(format_args!("stream \"{}\"", self.stream))
    }

    /// Lists the shards, records their lineage in the catalog and starts reading the shards that
    /// became readable.
    fn list(&mut self) -> Result<(), SourceError> {
        let shards = self.client.list_shards(&self.stream).map_err(|e| self.stream_error(e))?;
        self.relist = false;
        let mine: Vec<&Shard> = shards.iter().filter(|s| worker_of(&s.id, self.parallelism) == self.index).collect();
        if let Err(e) = self.host.note_lineage(&mine) {
            pgrx::warning!("pipeline_kinesis consumer {}: could not record shard lineage: {e}", self.consumer_id);
        }
        self.shards = shards;
        self.start_readable();
        Ok(())
    }

    fn lineage_progress(&self) -> BTreeMap<String, Progress> {
        self.progress.iter().map(|(k, v)| (k.clone(), Progress { finished: v.finished })).collect()
    }

    /// Adds a reader for every owned shard that may be read now.
    fn start_readable(&mut self) {
        let now = Instant::now();
        for id in readable(&self.shards, &self.lineage_progress(), self.parallelism, self.index) {
            if self.readers.contains_key(&id) {
                continue;
            }
            let range = self.shards.iter().find(|s| s.id == id).map_or((0, u128::MAX), |s| s.hash_range);
            let taken = self.progress.get(&id).and_then(|c| c.last.clone());
            self.readers.insert(
                id,
                Reader {
                    range,
                    iterator: None,
                    taken,
                    skip: None,
                    buffer: VecDeque::new(),
                    ended: false,
                    next_poll: now,
                    backoff: Backoff::new(Duration::from_millis(200), self.retry_max),
                    millis_behind: None,
                },
            );
        }
    }

    /// Owned shards that wait for a parent another worker reads.
    fn waiting_on_others(&self) -> bool {
        self.parallelism > 1
            && waiting_for_parents(&self.shards, &self.lineage_progress())
                .iter()
                .any(|id| worker_of(id, self.parallelism) == self.index)
    }

    /// Reads the committed progress of every shard again (parents finished by other workers).
    fn reload_progress(&mut self) {
        match self.host.stored() {
            Ok(stored) => {
                for (id, cp) in stored {
                    // This worker's own shards: what it committed itself is as new as the catalog.
                    if !self.readers.contains_key(&id) {
                        self.progress.insert(id, cp);
                    }
                }
                self.start_readable();
            }
            Err(e) => pgrx::warning!("pipeline_kinesis consumer {}: could not read shard progress: {e}", self.consumer_id),
        }
    }

    /// One GetRecords call on a shard (taking an iterator first when it has none).
    fn poll(&mut self, id: &str) {
        let now = Instant::now();
        let stream = self.stream.clone();
        let Some(r) = self.readers.get_mut(id) else { return };
        if r.iterator.is_none() {
            let (at, skip) = start_sought(r.taken.as_ref(), self.sought.get(id), self.start_time);
            match self.client.iterator(&stream, id, &at) {
                Ok(it) => {
                    r.iterator = Some(it);
                    r.skip = skip;
                }
                Err(e) => return self.failed(id, e),
            }
        }
        let Some(iterator) = r.iterator.clone() else { return };
        match self.client.get_records(&iterator, self.limit) {
            Ok(fetched) => {
                r.backoff.reset();
                r.millis_behind = fetched.millis_behind_latest;
                let mut skipped = 0;
                let mut took = false;
                r.buffer.reserve(fetched.records.len());
                for rec in fetched.records {
                    // past the record the iterator was taken at: nothing more to skip after it
                    let past = r.skip.as_ref().is_some_and(|s| !s.already_consumed(&rec.seq, Some(u64::MAX)));
                    let unpacked = Unpacked::from_record(
                        id,
                        rec.seq,
                        rec.partition_key,
                        rec.data,
                        rec.arrival_ms,
                        Some(r.range),
                        self.outside,
                        r.skip.as_ref(),
                    );
                    if past {
                        r.skip = None;
                    }
                    skipped += unpacked.skipped_outside();
                    if unpacked.last_pos().is_some() {
                        took = true;
                        r.buffer.push_back(unpacked);
                    }
                }
                if took {
                    // the last user record taken from the shard: the last one of this answer
                    r.taken = r.buffer.back().and_then(Unpacked::last_pos).cloned();
                }
                match fetched.next_iterator {
                    Some(next) => r.iterator = Some(next),
                    None => {
                        r.iterator = None;
                        r.ended = true;
                    }
                }
                r.next_poll = now + self.poll_interval;
                if skipped > 0 {
                    self.note_skipped(id, skipped);
                }
            }
            Err(e) => self.failed(id, e),
        }
    }

    /// Counts (for consumer_status) and logs the KPL user records of one GetRecords answer that
    /// were skipped for lying outside the shard's hash key range: one line per answer.
    fn note_skipped(&mut self, id: &str, n: u64) {
        *self.skipped.entry(id.to_string()).or_default() += n as i64;
        pgrx::log!(
            "pipeline_kinesis consumer {}: skipped {n} KPL user record(s) of shard {id} of stream \"{}\" whose hash key lies outside the shard's range (the KPL sends again what it aggregated against a stale shard map); config {} = \"keep\" ingests them",
            self.consumer_id,
            self.stream,
            OutsideShard::SETTING
        );
    }

    fn failed(&mut self, id: &str, e: KinesisError) {
        let now = Instant::now();
        let text = format!("shard {id}: {}", self.describe(&e));
        let random = self.rng.next_u64();
        let Some(r) = self.readers.get_mut(id) else { return };
        if e == KinesisError::Interrupted {
            // The worker is asked to stop (or another interrupt is due): the pipeline's next wait
            // services it; the call is simply made again if the worker goes on.
            r.next_poll = now;
            return;
        }
        match e.recovery() {
            Recovery::Retake => {
                // Not an outage: take a new iterator from the last record taken, at once.
                r.iterator = None;
                r.next_poll = now;
                pgrx::log!("pipeline_kinesis consumer {}: {text}; taking a new iterator", self.consumer_id);
                return;
            }
            Recovery::Relist => {
                self.relist = true;
                r.iterator = None;
            }
            Recovery::BackoffRetake => r.iterator = None,
            Recovery::Backoff => {}
        }
        r.next_poll = now + jitter(r.backoff.next_delay(), random);
        self.error = Some(text);
    }
}

impl super::Source for KinesisSource {
    type Pos = KinesisPos;

    fn fill(&mut self, batch: &mut Batch<KinesisPos>, limits: &Limits) -> usize {
        // Messages are made anew from fetched records: the last batch's are not reused.
        drop(batch.take_spare());
        if self.relist && Instant::now() >= self.relist_at {
            match self.list() {
                Ok(()) => self.list_backoff.reset(),
                Err(e) => {
                    self.relist_at = Instant::now() + jitter(self.list_backoff.next_delay(), self.rng.next_u64());
                    self.error = Some(e.to_string());
                }
            }
        }
        if self.waiting_on_others() && self.parents_checked.elapsed() >= PARENT_CHECK {
            self.parents_checked = Instant::now();
            self.reload_progress();
        }
        let now = Instant::now();
        let due: Vec<String> = self
            .readers
            .iter()
            .filter(|(_, r)| r.buffer.is_empty() && !r.ended && r.next_poll <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if batch.is_full(limits) || self.host.stop_requested() {
                break;
            }
            self.poll(&id);
        }
        let mut added = 0;
        let from = batch.len();
        for r in self.readers.values_mut() {
            // One user record at a time, each counted against the batch's limits before the next
            // is copied out of its aggregate.
            while !batch.is_full(limits) {
                let Some(front) = r.buffer.front_mut() else { break };
                if let Some(m) = front.next() {
                    batch.push(m);
                    added += 1;
                }
                if front.is_done() {
                    r.buffer.pop_front();
                }
            }
        }
        if let Some(plan) = &self.fast {
            batch.prepare_tail(from, |ms| {
                let bytes = ms.iter().map(|m| m.payload.as_ref().map_or(0, Vec::len) + 16).sum();
                ingest_core::rows::fast::prepare_chunk(plan, ms.iter().map(|m| m.payload.as_deref()), bytes)
            });
        }
        added
    }

    fn set_fast_plan(&mut self, plan: Option<std::sync::Arc<ingest_core::rows::fast::FastPlan>>) {
        self.fast = plan;
    }

    fn drained(&self) -> bool {
        // Every shard's records are in the batch; the next GetRecords of a shard waits for its
        // poll interval anyway.
        self.readers.values().all(|r| r.buffer.is_empty())
    }

    fn wait_fd(&self) -> Option<i32> {
        None
    }

    fn drain_wakeups(&mut self) {}

    fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    fn maintain(&mut self) -> Result<(), SourceError> {
        self.list()
    }

    fn checkpoints(&self) -> BTreeMap<String, Option<ShardCheckpoint>> {
        self.readers.keys().map(|id| (id.clone(), self.progress.get(id).cloned())).collect()
    }

    fn take_skipped(&mut self) -> Vec<(String, i64)> {
        std::mem::take(&mut self.skipped).into_iter().collect()
    }

    fn owned(&self) -> Vec<(String, Option<i64>)> {
        self.readers.iter().map(|(id, r)| (id.clone(), r.millis_behind)).collect()
    }

    fn all_streams(&self) -> Vec<String> {
        self.shards.iter().map(|s| s.id.clone()).collect()
    }

    fn pending_checkpoints(&self) -> BTreeMap<String, ShardCheckpoint> {
        self.readers
            .iter()
            .filter(|(_, r)| r.ended && r.buffer.is_empty())
            .map(|(id, r)| {
                let last = r.taken.clone().or_else(|| self.progress.get(id).and_then(|c| c.last.clone()));
                (id.clone(), ShardCheckpoint { last, finished: true })
            })
            .collect()
    }

    fn next_wakeup(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next = self
            .readers
            .values()
            .filter(|r| r.buffer.is_empty() && !r.ended)
            .map(|r| r.next_poll.saturating_duration_since(now))
            .min();
        let mut soonest = |at: Instant| {
            let d = at.saturating_duration_since(now);
            next = Some(next.map_or(d, |n| n.min(d)));
        };
        if self.waiting_on_others() {
            soonest(self.parents_checked + PARENT_CHECK);
        }
        if self.relist {
            soonest(self.relist_at);
        }
        next
    }

    fn committed(&mut self, saved: &BTreeMap<String, ShardCheckpoint>) {
        let mut ended = false;
        for (id, cp) in saved {
            self.progress.insert(id.clone(), cp.clone());
            if cp.finished {
                self.readers.remove(id);
                ended = true;
            }
        }
        if ended {
            // Its children may be listed by now (a split or merge): list again at the next fill.
            self.relist = true;
            self.start_readable();
        }
    }
}
