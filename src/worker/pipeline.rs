//! The pipeline every consumer worker runs, whatever the source: poll -> batch -> prepare ->
//! COPY (bad messages isolated) -> checkpoint -> commit, one batch per transaction.
//!
//! The rows of a batch and its streams' checkpoints commit together, so a crash at any moment
//! replays exactly the uncommitted batch. Before writing, the batch transaction locks the consumer
//! row (its generation must be ours) and the checkpoint rows (they must say what this worker
//! believes): a second worker on the same streams, or a rewind by `consume_begin`, makes the batch
//! roll back and this worker exit instead of duplicating rows. A failed batch is rolled back, its
//! error recorded in the consumer's `last_error`, and retried with backoff; checkpoints never move
//! past rows that were not inserted.
//!
//! What differs per source lives behind two traits: `Source` (polling) and `ConsumerCatalog`
//! (the consumer's rows: generation, checkpoints, dead letters, errors, its relation).

use super::{reload_config_if_requested, shutdown_requested, wait};
use crate::catalog::consumers::{self, RelationProblem};
use crate::catalog::Features;
use crate::error::raise;
use crate::sources::error::SourceError;
use crate::sources::Source;
use crate::xact::{in_transaction, PgError};
use ingest_core::backoff::Backoff;
use ingest_core::batch::{Batch, Limits, Message, Position};
use ingest_core::format::CopyOptions;
use ingest_core::policy::{decide, Decision, OnError};
use ingest_core::position::System;
use ingest_core::prepare::Rejected;
use ingest_core::rows::fast::FastPlan;
use pgrx::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use super::pipeline_stats::{add_in_runs, BatchStats};
use std::time::{Duration, Instant};

type Stream<P> = <P as Position>::Stream;
type Checkpoint<P> = <P as Position>::Checkpoint;

/// A consumer's rows in the catalog, for one source. Every method runs inside the caller's
/// transaction (the batch's, or one of its own for errors).
pub trait ConsumerCatalog {
    type Pos: Position;
    /// Which system's consumer this is (its id is unique within that system): its positions'.
    const SOURCE: System = <Self::Pos as Position>::SYSTEM;

    /// How logs name the consumer, e.g. `pipeline_kafka consumer 3`.
    fn label(&self) -> String;
    /// The consumer's id (unique within `SOURCE`).
    fn consumer_id(&self) -> i32;
    /// The consumer's owner (its relation's owner when consume_begin ran): rows are written as it.
    fn owner(&self) -> pg_sys::Oid;
    /// Locks and returns the stored checkpoints of some streams.
    fn lock_checkpoints(&self, streams: &[Stream<Self::Pos>]) -> BTreeMap<Stream<Self::Pos>, Checkpoint<Self::Pos>>;
    fn save_checkpoints(&self, checkpoints: &BTreeMap<Stream<Self::Pos>, Checkpoint<Self::Pos>>);
    fn insert_dead_letters(&self, letters: &[(&Message<Self::Pos>, &Rejected)]);

    // The consumers tables of both systems hold these alike (crate::catalog::consumers).

    /// Locks the consumer row for the transaction; its generation if it is still enabled.
    fn lock_consumer(&self) -> Option<i64> {
        consumers::lock_consumer(Self::SOURCE, self.consumer_id())
    }
    /// Where rows go now (a recreated table is adopted only under the owner rule).
    fn current_relation(&self, relid: pg_sys::Oid) -> Result<pg_sys::Oid, RelationProblem> {
        consumers::current_relation(Self::SOURCE, self.consumer_id(), relid, self.owner())
    }
    fn set_last_error(&self, error: Option<&str>) {
        consumers::set_last_error(Self::SOURCE, self.consumer_id(), error)
    }
    /// Disables the consumer with the reason (error policy `stop`, too many dead letters).
    fn stop_with_error(&self, error: &str) {
        consumers::stop_with_error(Self::SOURCE, self.consumer_id(), error)
    }
    /// A message's place, for errors and logs, e.g. `partition 2 offset 17`.
    fn describe(pos: &Self::Pos) -> String;
}

/// What a consumer writes and how: defined with the sink that writes it.
pub use crate::sink::target::Target;

/// A consumer worker's start arguments (bgw_extra): "dboid consumer index generation".
pub struct WorkerArgs {
    pub dboid: pg_sys::Oid,
    pub consumer: i32,
    pub index: i32,
    pub generation: i64,
}

impl WorkerArgs {
    pub fn parse(extra: &str) -> Option<WorkerArgs> {
        let mut it = extra.split_whitespace();
        Some(WorkerArgs {
            dboid: pg_sys::Oid::from(it.next()?.parse::<u32>().ok()?),
            consumer: it.next()?.parse().ok()?,
            index: it.next()?.parse().ok()?,
            generation: it.next()?.parse().ok()?,
        })
    }
}

/// The stored settings a `Target` is made of (both systems' consumers have them).
pub struct TargetSettings<'a> {
    pub relid: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub format: &'a str,
    pub delimiter: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    pub columns: Option<Vec<String>>,
    pub on_error: &'a str,
    pub max_dead_letters: Option<i32>,
    pub batchsize: i32,
    pub maxbytes: i32,
    pub timeout: i32,
    pub source_name: &'a str,
    pub features: &'a Features,
    pub partitioned: bool,
}

/// The consumer's target as the pipeline needs it; None (the error recorded) when its settings
/// are not usable.
pub fn target_of<C: ConsumerCatalog>(catalog: &C, args: &WorkerArgs, s: TargetSettings) -> Option<Target> {
    match make_target(args, s) {
        Ok(t) => Some(t),
        Err(e) => {
            record_error(catalog, &e.to_string());
            None
        }
    }
}

/// Why a consumer's stored settings make no target (a row written past consume_begin's checks).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid format options: {0}")]
    Format(#[from] ingest_core::format::FormatError),
    #[error("{0}")]
    OnError(#[from] ingest_core::policy::UnknownPolicy),
}

/// The `Target` of the consumer `args` names, with the stored settings `s` (the workers' and
/// retry_dead_letters'); Err says which setting is not usable.
pub fn make_target(args: &WorkerArgs, s: TargetSettings) -> Result<Target, TargetError> {
    let opts = CopyOptions::new(s.format, s.delimiter, s.quote, s.escape)?;
    let on_error = OnError::parse(s.on_error)?;
    Ok(Target {
        dboid: args.dboid,
        consumer_id: args.consumer,
        index: args.index,
        generation: args.generation,
        relid: s.relid,
        owner: s.owner,
        columns: s.columns,
        on_error,
        max_dead_letters: s.max_dead_letters,
        limits: Limits {
            max_messages: s.batchsize.max(1) as usize,
            max_bytes: s.maxbytes.max(1) as usize,
            max_wait: Duration::from_millis(s.timeout.max(1) as u64),
        },
        source_name: s.source_name.to_string(),
        features: s.features.clone(),
        partitioned: s.partitioned,
        typed: crate::sink::typed::Typed::for_format(opts.format, s.features.key_format.as_deref()),
        opts,
    })
}

/// Makes the worker's source, retrying with backoff (the error shown) until it works or the
/// worker is asked to stop.
pub fn connect_with_retry<C: ConsumerCatalog, T>(catalog: &C, mut make: impl FnMut() -> Result<T, SourceError>) -> Option<T> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        match make() {
            Ok(s) => return Some(s),
            Err(e) => {
                warning!("{}: {e}", catalog.label());
                record_error(catalog, &e.to_string());
                wait(backoff.next_delay(), None);
                if shutdown_requested() {
                    return None;
                }
            }
        }
    }
}


/// What a committed batch did, its relation, and the fast path's plan if it changed (sink::fast).
type Flushed<P> = (BatchStats<Stream<P>>, pg_sys::Oid, Option<Option<FastPlan>>);

/// Why a batch did not commit.
enum BatchError {
    /// The consumer was changed or stopped, or another worker moved the checkpoints: exit.
    Superseded(String),
    /// The error policy says stop (on_error = 'stop', or more than max_dead_letters): the batch
    /// is rolled back, the consumer disabled with this error, and the worker exits.
    Stop(String),
    /// Anything else (not about the data): roll back, record, back off, retry.
    Failed(PgError),
}

pub struct Pipeline<S: Source, C: ConsumerCatalog<Pos = S::Pos>> {
    pub target: Target,
    pub source: S,
    pub catalog: C,
    error_shown: Option<String>,
    error_recorded_at: Option<Instant>,
    /// The fast path's plan (sink::fast), as the source has it.
    fast: Option<Arc<FastPlan>>,
}

/// How long a worker goes on with a source that keeps failing (its errors, or its periodic
/// metadata check) without a batch committed, before it leaves (logged) so that the supervisor
/// starts it again with a new client, which resumes from the committed offsets, so nothing is lost
/// or repeated. A last resort: the known cause of a client that never connects again after a
/// broker restart (librdkafka dropping every broker after a metadata response listing none) is
/// handled in place by the Kafka source (sources/kafka_brokers.rs). During a real outage the new
/// worker waits in its connect loop, showing the error, as before.
/// `pipeline_ingest.source_restart_after` (default 90 s).
fn source_restart_after() -> Duration {
    Duration::from_secs(crate::guc::SOURCE_RESTART_AFTER_S.get().max(1) as u64)
}

impl<S: Source, C: ConsumerCatalog<Pos = S::Pos>> Pipeline<S, C> {
    pub fn new(target: Target, source: S, catalog: C) -> Self {
        Pipeline { target, source, catalog, error_shown: None, error_recorded_at: None, fast: None }
    }

    /// Gives the source (its reader thread) the fast path's plan (sink::fast) when it changed.
    fn set_fast_plan(&mut self, plan: Option<FastPlan>) {
        if plan.as_ref().map(|p| p.id) != self.fast.as_ref().map(|p| p.id) {
            self.fast = plan.map(Arc::new);
            self.source.set_fast_plan(self.fast.clone());
        }
    }

    pub fn run(&mut self) {
        let mut batch: Batch<S::Pos> = Batch::default();
        let mut limits = self.target.limits_now();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut last_refresh = Instant::now();
        let mut last_publish = Instant::now();
        // Since when the source has been failing with no batch committed (None: it is fine).
        let mut failing_since: Option<Instant> = None;
        self.publish(&BatchStats::new());
        self.note_streams();
        let plan = crate::sink::fast::start_plan(&self.target, &self.catalog.label());
        self.set_fast_plan(plan);
        while !shutdown_requested() {
            if reload_config_if_requested() {
                limits = self.target.limits_now();
            }
            if !batch.is_full(&limits) {
                self.source.fill(&mut batch, &limits);
                self.publish_skipped();
            }
            if let Some(e) = self.source.take_error() {
                self.show_error(&e);
                failing_since.get_or_insert_with(Instant::now);
            }
            let restart_after = source_restart_after();
            if failing_since.is_some_and(|t| t.elapsed() >= restart_after) {
                log!(
                    "{} worker {}: its source has failed for {} s with no batch committed; leaving to start again with a new client",
                    self.catalog.label(),
                    self.target.index,
                    restart_after.as_secs()
                );
                return;
            }
            let now = Instant::now();
            let pending = self.source.pending_checkpoints();
            // A batch is due when full, when its timeout has passed, or (by default) as soon as
            // the source has nothing more at hand: a backlog then goes in full batches while a
            // slow stream is committed without waiting out the timeout. Messages arriving while a
            // batch commits make the next batch larger, so the commit rate adapts to the load.
            let due = if batch.is_empty() {
                !pending.is_empty()
            } else {
                batch.is_full(&limits)
                    || batch.time_left(&limits, now) == Some(Duration::ZERO)
                    || (crate::guc::FLUSH_WHEN_CAUGHT_UP.get() && self.source.drained())
            };
            if due {
                let mut next = batch.checkpoints();
                next.extend(pending);
                match self.flush(&batch, &next) {
                    Ok((stats, relid, plan)) => {
                        if let Some(p) = plan { self.set_fast_plan(p) }
                        self.target.relid = relid;
                        self.source.committed(&next);
                        self.publish(&stats);
                        batch.clear();
                        backoff.reset();
                        failing_since = None;
                    }
                    Err(BatchError::Superseded(why)) | Err(BatchError::Stop(why)) => {
                        log!("{} worker {} stops: {why}", self.catalog.label(), self.target.index);
                        return;
                    }
                    Err(BatchError::Failed(e)) => {
                        // A dropped table is looked for every second (logged once); others back off.
                        let missing = e.sqlstate == "42P01";
                        let delay = if missing { Duration::from_secs(1) } else { backoff.next_delay() };
                        let msg = format!("batch of {} messages failed: {e}", batch.len());
                        if !missing || self.error_shown.as_deref() != Some(msg.as_str()) {
                            warning!(
                                "{} (relation {}): {msg}; retrying in {} ms",
                                self.catalog.label(),
                                self.target.relid.to_u32(),
                                delay.as_millis()
                            );
                            self.error_shown = None;
                        }
                        self.show_error(&msg);
                        self.wait_publishing(delay);
                    }
                }
                continue;
            }
            let refresh = Duration::from_secs(crate::guc::METADATA_REFRESH_S.get().max(1) as u64);
            if batch.is_empty() && last_refresh.elapsed() >= refresh {
                last_refresh = Instant::now();
                let result = self.source.maintain();
                self.note_streams();
                match result {
                    Err(e) => {
                        self.show_error(&e.to_string());
                        failing_since.get_or_insert_with(Instant::now);
                    }
                    // A round trip to the server worked and no batch is pending (the batch is
                    // empty), so a connection error shown earlier is over even if nothing came since
                    // (unless the source reports one again).
                    Ok(()) if self.error_shown.is_some() => {
                        if !self.source_error_pending() {
                            self.clear_error();
                            failing_since = None;
                        }
                    }
                    Ok(()) => failing_since = None,
                }
            }
            if last_publish.elapsed() >= Duration::from_secs(1) {
                last_publish = Instant::now();
                self.publish(&BatchStats::new());
            }
            let mut timeout = batch.time_left(&limits, now).unwrap_or(Duration::from_secs(1));
            if let Some(w) = self.source.next_wakeup() {
                timeout = timeout.min(w);
            }
            wait(timeout, self.source.wait_fd());
            self.source.drain_wakeups();
        }
    }

    /// Makes every stream of the source known in shared memory, so that the supervisor starts
    /// the worker of a stream added after consume_begin (it has no checkpoint yet and another
    /// worker index may own it). Existing slots are left as they are.
    fn note_streams(&self) {
        for s in self.source.all_streams() {
            crate::shmem::update_partition(self.target.dboid, C::SOURCE, self.target.consumer_id, slot_key::<S::Pos>(&s), |_| {});
        }
    }

    /// Waits out a retry delay, publishing the latest positions every second (true lag in error).
    fn wait_publishing(&self, delay: Duration) {
        let until = Instant::now() + delay;
        while !shutdown_requested() {
            self.publish(&BatchStats::new());
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            wait(left.min(Duration::from_secs(1)), None);
        }
    }

    /// Publishes progress to shared memory for the status view: the batch's counts (if any), this
    /// worker's pid and the latest position the source reported for every owned stream.
    fn publish(&self, stats: &BatchStats<Stream<S::Pos>>) {
        // SAFETY: plain call in a backend.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let pid = super::my_pid();
        for (stream, latest) in self.source.owned() {
            let st = stats.get(&stream);
            let key = slot_key::<S::Pos>(&stream);
            let mut run = None;
            crate::shmem::update_partition(self.target.dboid, C::SOURCE, self.target.consumer_id, key, |slot| {
                slot.worker_pid = pid;
                if let Some(h) = latest {
                    slot.high_watermark = h;
                }
                if let Some(st) = st {
                    slot.messages += st.messages;
                    slot.rows += st.rows;
                    slot.dead_letters += st.dead_letters;
                    slot.batches += 1;
                    slot.last_batch_at = now;
                    let change = slot.recent.record(now, st.messages, st.rows, st.dead_letters, super::health::RELOG_US);
                    run = Some((change, slot.recent));
                }
            });
            super::health::log_run_change(&self.catalog.label(), C::SOURCE, self.catalog.consumer_id(), key.0.as_str(), run);
        }
    }

    /// Adds what the source left out (see `Source::take_skipped`) to its streams' counters at once:
    /// records skipped are not in any batch, and may come while no batch commits.
    fn publish_skipped(&mut self) {
        for (stream, n) in self.source.take_skipped() {
            crate::shmem::update_partition(self.target.dboid, C::SOURCE, self.target.consumer_id, slot_key::<S::Pos>(&stream), |slot| {
                slot.skipped += n;
            });
        }
    }

    fn source_error_pending(&mut self) -> bool {
        match self.source.take_error() {
            Some(e) => {
                self.show_error(&e);
                true
            }
            None => false,
        }
    }

    fn clear_error(&mut self) {
        match in_transaction(|| self.catalog.set_last_error(None)) {
            Ok(()) => self.error_shown = None,
            Err(e) => warning!("{}: could not clear its error: {e}", self.catalog.label()),
        }
    }

    /// Logs and records an error once per distinct message (and again after a minute).
    fn show_error(&mut self, e: &str) {
        let fresh = self.error_shown.as_deref() != Some(e) || self.error_recorded_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60));
        if fresh {
            if self.error_shown.as_deref() != Some(e) {
                warning!("{}: {e}", self.catalog.label());
            }
            record_error(&self.catalog, e);
            self.error_shown = Some(e.to_string());
            self.error_recorded_at = Some(Instant::now());
        }
    }

    /// Commits a batch (possibly empty) with the checkpoints `next`; returns what it did and the
    /// relation it went into.
    fn flush(
        &mut self,
        batch: &Batch<S::Pos>,
        next: &BTreeMap<Stream<S::Pos>, Checkpoint<S::Pos>>,
    ) -> Result<Flushed<S::Pos>, BatchError> {
        let target = &self.target;
        let catalog = &self.catalog;
        let believed = self.source.checkpoints();
        let clear_error = self.error_shown.is_some();
        let fast = self.fast.as_deref();
        let result = crate::xact::try_in_transaction(|| {
            match catalog.lock_consumer() {
                Some(g) if g == target.generation => {}
                _ => return Err(BatchError::Superseded("the consumer was stopped or changed".to_string())),
            }
            let streams: Vec<Stream<S::Pos>> = next.keys().cloned().collect();
            let stored = catalog.lock_checkpoints(&streams);
            for s in &streams {
                let thought = believed.get(s).cloned().flatten();
                if stored.get(s).cloned() != thought {
                    return Err(BatchError::Superseded(format!(
                        "the stored position of {s:?} is {:?}, not {thought:?}: another worker or a rewind moved it",
                        stored.get(s)
                    )));
                }
            }
            let relid = match catalog.current_relation(target.relid) {
                Ok(oid) => oid,
                Err(RelationProblem::OtherOwner(why)) => return Err(BatchError::Stop(why)),
                Err(RelationProblem::Missing(name)) => raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                    format!("relation \"{name}\" (oid {}) no longer exists; create it again to resume", target.relid.to_u32()),
                ),
            };
            // A table made a Citus table of a kind not written (sink::citus) after consume_begin.
            if let Some(kind) = crate::citus::unsupported_kind(relid) {
                let name = crate::catalog::consumers::relation_name_and_owner(relid).map(|(n, _)| n).unwrap_or_default();
                return Err(BatchError::Stop(format!("{} [SQLSTATE {}]", crate::citus::refusal(&name, &kind), crate::citus::SQLSTATE)));
            }
            // The transform function consume_begin checked, not another of the same name.
            if !batch.messages.is_empty() {
                if let Err(why) = super::pin::check(C::SOURCE, catalog.consumer_id(), catalog.owner(), &target.features) {
                    return Err(BatchError::Stop(why.to_string()));
                }
            }
            let (result, replan) = crate::sink::fast::write_batch(target, relid, fast, &batch.messages, batch.pre());
            let written = match result {
                Ok(w) => w,
                Err(e) => return Err(BatchError::Failed(e)),
            };
            let mut rejected = written.rejected;
            if !rejected.is_empty() {
                rejected.sort_by_key(|r| r.msg);
                let first = &rejected[0];
                let summary = format!(
                    "{} bad message(s), first at {}: {} [SQLSTATE {}]",
                    rejected.len(),
                    C::describe(&batch.messages[first.msg].pos),
                    first.error,
                    first.sqlstate
                );
                if let Decision::Stop(why) = decide(target.on_error, target.max_dead_letters, rejected.len(), &summary) {
                    return Err(BatchError::Stop(why));
                }
                if target.on_error == OnError::Skip {
                    for r in &rejected {
                        warning!(
                            "{}: skipped the message at {}: {} [SQLSTATE {}]",
                            catalog.label(),
                            C::describe(&batch.messages[r.msg].pos),
                            r.error,
                            r.sqlstate
                        );
                    }
                } else {
                    let letters: Vec<(&Message<S::Pos>, &Rejected)> =
                        rejected.iter().map(|r| (&batch.messages[r.msg], r)).collect();
                    catalog.insert_dead_letters(&letters);
                }
            }
            catalog.save_checkpoints(next);
            if clear_error {
                catalog.set_last_error(None);
            }
            let key = |i: usize| batch.messages[i].pos.stream();
            let mut stats = BatchStats::new();
            add_in_runs(&mut stats, (0..batch.messages.len()).map(|i| (key(i), 1)), |s, n| s.messages += n);
            // `rejected` is sorted by message.
            let written_rows = written
                .rows
                .iter()
                .filter(|(msg, _)| rejected.binary_search_by_key(msg, |r| r.msg).is_err())
                .map(|&(msg, rows)| (key(msg), rows as i64));
            add_in_runs(&mut stats, written_rows, |s, n| s.rows += n);
            if target.on_error == OnError::DeadLetter {
                for r in &rejected {
                    stats.entry(key(r.msg)).or_default().dead_letters += 1;
                }
            }
            Ok((stats, relid, replan))
        });
        match result {
            Ok(Ok(done)) => {
                self.error_shown = None;
                Ok(done)
            }
            Ok(Err(BatchError::Stop(why))) => {
                if let Err(e) = in_transaction(|| catalog.stop_with_error(&why)) {
                    warning!("{}: could not record that it stops: {e}", catalog.label());
                }
                warning!("{} stops: {why}", catalog.label());
                Err(BatchError::Superseded(why))
            }
            Ok(Err(other)) => Err(other),
            Err(e) => Err(BatchError::Failed(e)),
        }
    }
}

/// The key of a stream's status slot, and the number it is shown under.
fn slot_key<P: Position>(stream: &P::Stream) -> (ingest_core::position::StreamKey, i32) {
    (P::stream_key(stream), P::stream_number(stream))
}

/// Records an error in the catalog in its own transaction (the batch's was rolled back).
pub fn record_error<C: ConsumerCatalog>(catalog: &C, e: &str) {
    if let Err(err) = in_transaction(|| catalog.set_last_error(Some(e))) {
        warning!("{}: could not record its error: {err}", catalog.label());
    }
}
