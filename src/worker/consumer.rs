//! A consumer worker: poll -> batch -> COPY -> checkpoint, one batch per transaction.
//!
//! The rows of a batch and the next offsets of its partitions commit together, so a crash at
//! any moment replays exactly the uncommitted batch. Before writing, the batch transaction locks
//! the consumer row (its generation must be ours) and the offset rows (they must be where this
//! worker believes they are): a second worker on the same partitions, or a rewind by
//! `consume_begin`, makes the batch roll back and this worker exit instead of duplicating rows.
//! A failed batch is rolled back, its error recorded in `pipeline_kafka.consumers.last_error`,
//! and retried with backoff; offsets never move past rows that were not inserted.

use super::{reload_config_if_requested, shutdown_requested, wait};
use crate::catalog::kafka::{self as cat, Consumer};
use crate::error::raise;
use crate::sink::copy::copy_option_list;
use crate::sink::isolate::BatchSink;
use crate::sources::kafka::{client_config, KafkaSource};
use crate::sources::Source;
use crate::xact::{in_transaction, PgError};
use ingest_core::backoff::Backoff;
use ingest_core::batch::{Batch, Limits};
use ingest_core::format::{CopyOptions, Format};
use ingest_core::policy::{decide, Decision, OnError};
use ingest_core::prepare::prepare;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct WorkerArgs {
    dboid: pg_sys::Oid,
    consumer: i32,
    index: i32,
    generation: i64,
}

fn parse_extra(extra: &str) -> Option<WorkerArgs> {
    let mut it = extra.split_whitespace();
    Some(WorkerArgs {
        dboid: pg_sys::Oid::from(it.next()?.parse::<u32>().ok()?),
        consumer: it.next()?.parse().ok()?,
        index: it.next()?.parse().ok()?,
        generation: it.next()?.parse().ok()?,
    })
}

/// What a committed batch did, per partition.
#[derive(Default)]
struct PartitionStats {
    messages: i64,
    rows: i64,
    dead_letters: i64,
}

type BatchStats = BTreeMap<i32, PartitionStats>;

/// Why a batch did not commit.
enum BatchError {
    /// The consumer was changed or stopped, or another worker moved the offsets: exit.
    Superseded(String),
    /// The error policy says stop (on_error = 'stop', or more than max_dead_letters): the batch
    /// is rolled back, the consumer disabled with this error, and the worker exits.
    Stop(String),
    /// Anything else (not about the data): roll back, record, back off, retry.
    Failed(PgError),
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pipeline_kafka_worker_main(_arg: pg_sys::Datum) {
    super::setup_signals();
    let args = parse_extra(BackgroundWorker::get_extra()).expect("worker extra: dboid consumer index generation");
    // Connected as the bootstrap superuser for catalog access; rows are written as the owner.
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(args.dboid), None);

    let loaded = in_transaction(|| {
        if !crate::catalog::extension_exists() {
            return None;
        }
        let c = cat::consumer(args.consumer)?;
        // SAFETY: syscache lookup of a role oid, inside a transaction.
        let owner_is_superuser = unsafe { pg_sys::superuser_arg(c.owner) };
        let (brokers, broker_config) = cat::brokers();
        let stored = cat::stored_offsets(args.consumer);
        Some((c, owner_is_superuser, brokers, broker_config, stored))
    });
    let (consumer, owner_is_superuser, brokers, broker_config, stored) = match loaded {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(e) => {
            warning!("pipeline_kafka consumer {}: could not load its settings: {e}", args.consumer);
            return;
        }
    };
    if !consumer.enabled || consumer.generation != args.generation {
        return;
    }
    // consume_begin checked the settings already; checked again here in case the row was written
    // another way (e.g. by a release without the check): a consumer owned by a role that is not a
    // superuser, whose settings were not given by a superuser, gets no setting that runs commands,
    // loads code or reads files. It is stopped with the reason rather than run with some of its
    // settings left out.
    if let Err(e) = ingest_core::settings::check(&consumer.config, owner_is_superuser || consumer.config_by_superuser) {
        let why = format!("refused its client settings: {e}");
        warning!("pipeline_kafka consumer {}: {why}", consumer.id);
        if let Err(err) = in_transaction(|| cat::stop_with_error(consumer.id, &why)) {
            warning!("pipeline_kafka consumer {}: could not record its error: {err}", consumer.id);
        }
        return;
    }
    let mut worker = match Worker::new(args, consumer, brokers, broker_config, stored) {
        Some(w) => w,
        None => return,
    };
    worker.run();
}

struct Worker {
    args: WorkerArgs,
    consumer: Consumer,
    opts: CopyOptions,
    on_error: OnError,
    limits: Limits,
    source: KafkaSource,
    error_shown: Option<String>,
    error_recorded_at: Option<Instant>,
}

impl Worker {
    fn new(
        args: WorkerArgs,
        consumer: Consumer,
        brokers: Vec<String>,
        broker_config: serde_json::Map<String, serde_json::Value>,
        stored: BTreeMap<i32, i64>,
    ) -> Option<Worker> {
        let opts = match CopyOptions::new(&consumer.format, consumer.delimiter.clone(), consumer.quote.clone(), consumer.escape.clone()) {
            Ok(o) => o,
            Err(e) => {
                record_error(consumer.id, &format!("invalid format options: {e}"));
                return None;
            }
        };
        let on_error = match OnError::parse(&consumer.on_error) {
            Ok(p) => p,
            Err(e) => {
                record_error(consumer.id, &e.to_string());
                return None;
            }
        };
        let limits = Limits {
            max_messages: consumer.batchsize.max(1) as usize,
            max_bytes: consumer.maxbytes.max(1) as usize,
            max_wait: Duration::from_millis(consumer.timeout.max(1) as u64),
        };
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let source = loop {
            let made = client_config(&brokers, &[&broker_config, &consumer.config]).and_then(|mut cfg| {
                if let Some(g) = &consumer.group_id {
                    cfg.set("group.id", g);
                }
                KafkaSource::new(&cfg, &consumer.topic, consumer.parallelism, args.index, &stored, limits.max_bytes)
            });
            match made {
                Ok(s) => break s,
                Err(e) => {
                    warning!("pipeline_kafka consumer {}: {e}", consumer.id);
                    record_error(consumer.id, &e);
                    wait(backoff.next_delay(), None);
                    if shutdown_requested() {
                        return None;
                    }
                }
            }
        };
        log!(
            "pipeline_kafka consumer {} worker {} started: topic \"{}\", partitions {:?}",
            consumer.id,
            args.index,
            consumer.topic,
            source.assigned()
        );
        Some(Worker { args, consumer, opts, on_error, limits, source, error_shown: None, error_recorded_at: None })
    }

    fn run(&mut self) {
        let mut batch = Batch::default();
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut last_refresh = Instant::now();
        let mut last_publish = Instant::now();
        self.publish(&BatchStats::new());
        self.note_partitions();
        while !shutdown_requested() {
            reload_config_if_requested();
            if !batch.is_full(&self.limits) {
                self.source.fill(&mut batch, &self.limits);
            }
            if let Some(e) = self.source.take_error() {
                self.show_error(&e);
            }
            let now = Instant::now();
            let due = !batch.is_empty() && (batch.is_full(&self.limits) || batch.time_left(&self.limits, now) == Some(Duration::ZERO));
            if due {
                match self.flush(&batch) {
                    Ok((stats, relid)) => {
                        self.consumer.relid = relid;
                        self.source.committed(&batch.last_positions());
                        self.publish(&stats);
                        batch.clear();
                        backoff.reset();
                    }
                    Err(BatchError::Superseded(why)) | Err(BatchError::Stop(why)) => {
                        log!("pipeline_kafka consumer {} worker {} stops: {why}", self.consumer.id, self.args.index);
                        return;
                    }
                    Err(BatchError::Failed(e)) => {
                        let delay = backoff.next_delay();
                        let msg = format!("batch of {} messages failed: {e}", batch.len());
                        warning!(
                            "pipeline_kafka consumer {} ({} -> relation {}): {msg}; retrying in {} ms",
                            self.consumer.id,
                            self.consumer.topic,
                            self.consumer.relid.to_u32(),
                            delay.as_millis()
                        );
                        self.error_shown = None;
                        self.show_error(&msg);
                        wait(delay, None);
                    }
                }
                continue;
            }
            let refresh = Duration::from_secs(crate::guc::METADATA_REFRESH_S.get().max(1) as u64);
            if batch.is_empty() && last_refresh.elapsed() >= refresh {
                last_refresh = Instant::now();
                let result = self.source.maintain();
                self.note_partitions();
                match result {
                    Err(e) => self.show_error(&e),
                    // A broker round trip worked and no batch is pending (the batch is empty), so a
                    // connection error shown earlier is over even if no message came since.
                    Ok(()) if self.error_shown.is_some() && !self.source_error_pending() => self.clear_error(),
                    Ok(()) => {}
                }
            }
            if last_publish.elapsed() >= Duration::from_secs(1) {
                last_publish = Instant::now();
                self.publish(&BatchStats::new());
            }
            let timeout = batch.time_left(&self.limits, now).unwrap_or(Duration::from_secs(1));
            wait(timeout, self.source.wait_fd());
            self.source.drain_wakeups();
        }
    }

    /// Makes every partition of the topic known in shared memory, so that the supervisor starts
    /// the worker of a partition added after consume_begin (it has no stored offset yet and
    /// another worker index may own it). Existing slots are left as they are.
    fn note_partitions(&self) {
        for p in self.source.partitions() {
            crate::shmem::update_partition(self.args.dboid, self.consumer.id, *p, |_| {});
        }
    }

    /// Publishes progress to shared memory for `pipeline_kafka.consumer_status`: the batch's
    /// counts (if any), this worker's pid and the cached high watermark of every owned partition.
    fn publish(&self, stats: &BatchStats) {
        // SAFETY: plain call in a backend.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let pid = super::my_pid();
        for p in self.source.assigned() {
            let hw = self.source.cached_high_watermark(p);
            let st = stats.get(&p);
            crate::shmem::update_partition(self.args.dboid, self.consumer.id, p, |slot| {
                slot.worker_pid = pid;
                if let Some(h) = hw {
                    slot.high_watermark = h;
                }
                if let Some(st) = st {
                    slot.messages += st.messages;
                    slot.rows += st.rows;
                    slot.dead_letters += st.dead_letters;
                    slot.batches += 1;
                    slot.last_batch_at = now;
                }
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
        match in_transaction(|| cat::set_last_error(self.consumer.id, None)) {
            Ok(()) => self.error_shown = None,
            Err(e) => warning!("pipeline_kafka consumer {}: could not clear its error: {e}", self.consumer.id),
        }
    }

    /// Logs and records an error once per distinct message (and again after a minute).
    fn show_error(&mut self, e: &str) {
        let fresh = self.error_shown.as_deref() != Some(e) || self.error_recorded_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60));
        if fresh {
            if self.error_shown.as_deref() != Some(e) {
                warning!("pipeline_kafka consumer {}: {e}", self.consumer.id);
            }
            record_error(self.consumer.id, e);
            self.error_shown = Some(e.to_string());
            self.error_recorded_at = Some(Instant::now());
        }
    }

    /// Commits a batch; returns what it did and the relation it went into.
    fn flush(&mut self, batch: &Batch) -> Result<(BatchStats, pg_sys::Oid), BatchError> {
        let consumer = &self.consumer;
        let generation = self.args.generation;
        let opts = &self.opts;
        let on_error = self.on_error;
        let positions = self.source.positions().clone();
        let next = batch.next_offsets();
        let clear_error = self.error_shown.is_some();
        let result = crate::xact::try_in_transaction(|| {
            match cat::lock_consumer(consumer.id) {
                Some(g) if g == generation => {}
                _ => return Err(BatchError::Superseded("the consumer was stopped or changed".to_string())),
            }
            let parts: Vec<i32> = next.keys().copied().collect();
            let stored = cat::lock_offsets(consumer.id, &parts);
            for p in &parts {
                let believed = positions.get(p).copied().flatten();
                if stored.get(p).copied() != believed {
                    return Err(BatchError::Superseded(format!(
                        "the stored offset of partition {p} is {:?}, not {:?}: another worker or a rewind moved it",
                        stored.get(p),
                        believed
                    )));
                }
            }
            let relid = match cat::current_relation(consumer.id, consumer.relid, consumer.owner) {
                Ok(oid) => oid,
                Err(cat::RelationProblem::OtherOwner(why)) => return Err(BatchError::Stop(why)),
                Err(cat::RelationProblem::Missing(name)) => raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                    format!("relation \"{name}\" (oid {}) no longer exists; create it again to resume", consumer.relid.to_u32()),
                ),
            };
            let consumer = &Consumer { relid, ..consumer.clone() };
            let columns = if opts.format == Format::Json { crate::catalog::insertable_columns(relid) } else { Vec::new() };
            // text/csv with a column list: one column set naming them, by their names
            let columns = match (&consumer.columns, opts.format) {
                (Some(list), Format::Text | Format::Csv) => list.clone(),
                _ => columns,
            };
            let payloads = batch.messages.iter().map(|m| m.payload.as_deref());
            let (prepared, mut rejected) =
                prepare(payloads, opts, &columns, consumer.columns.is_some(), batch.bytes() + batch.len());
            let sink = BatchSink {
                relid,
                owner: consumer.owner,
                format: opts.format,
                columns: &columns,
                copy_options: copy_option_list(opts),
                prepared: &prepared,
            };
            match sink.insert_isolating(&prepared.items) {
                Ok(more) => rejected.extend(more),
                Err(e) => return Err(BatchError::Failed(e)),
            }
            if !rejected.is_empty() {
                rejected.sort_by_key(|r| r.msg);
                let first = &rejected[0];
                let m = &batch.messages[first.msg];
                let summary = format!(
                    "{} bad message(s), first at partition {} offset {}: {} [SQLSTATE {}]",
                    rejected.len(),
                    m.pos.partition,
                    m.pos.offset,
                    first.error,
                    first.sqlstate
                );
                if let Decision::Stop(why) = decide(on_error, consumer.max_dead_letters, rejected.len(), &summary) {
                    return Err(BatchError::Stop(why));
                }
                if on_error == OnError::Skip {
                    for r in &rejected {
                        let m = &batch.messages[r.msg];
                        warning!(
                            "pipeline_kafka consumer {}: skipped the message at partition {} offset {} of topic \"{}\": {} [SQLSTATE {}]",
                            consumer.id, m.pos.partition, m.pos.offset, consumer.topic, r.error, r.sqlstate
                        );
                    }
                } else {
                    let letters: Vec<cat::DeadLetter> = rejected
                        .iter()
                        .map(|r| {
                            let m = &batch.messages[r.msg];
                            cat::DeadLetter {
                                partition: m.pos.partition,
                                offset: m.pos.offset,
                                key: m.key.as_deref(),
                                value: m.payload.as_deref(),
                                error: r.error.clone(),
                                sqlstate: r.sqlstate.clone(),
                            }
                        })
                        .collect();
                    cat::insert_dead_letters(consumer.id, &consumer.topic, &letters);
                }
            }
            cat::save_offsets(consumer.id, &next);
            if clear_error {
                cat::set_last_error(consumer.id, None);
            }
            let mut stats = BatchStats::new();
            for m in &batch.messages {
                stats.entry(m.pos.partition).or_default().messages += 1;
            }
            for p in &prepared.items {
                let m = &batch.messages[p.msg];
                if !rejected.iter().any(|r| r.msg == p.msg) {
                    stats.entry(m.pos.partition).or_default().rows += p.rows() as i64;
                }
            }
            if on_error == OnError::DeadLetter {
                for r in &rejected {
                    stats.entry(batch.messages[r.msg].pos.partition).or_default().dead_letters += 1;
                }
            }
            Ok((stats, relid))
        });
        match result {
            Ok(Ok(done)) => {
                self.error_shown = None;
                Ok(done)
            }
            Ok(Err(BatchError::Stop(why))) => {
                if let Err(e) = in_transaction(|| cat::stop_with_error(consumer.id, &why)) {
                    warning!("pipeline_kafka consumer {}: could not record that it stops: {e}", consumer.id);
                }
                warning!("pipeline_kafka consumer {} stops: {why}", consumer.id);
                Err(BatchError::Superseded(why))
            }
            Ok(Err(other)) => Err(other),
            Err(e) => Err(BatchError::Failed(e)),
        }
    }
}

/// Records the error in the catalog in its own transaction (the batch's was rolled back).
fn record_error(consumer_id: i32, e: &str) {
    if let Err(err) = in_transaction(|| cat::set_last_error(consumer_id, Some(e))) {
        warning!("pipeline_kafka consumer {consumer_id}: could not record its error: {err}");
    }
}
