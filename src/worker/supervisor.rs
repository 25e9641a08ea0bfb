//! A database's supervisor: reads the desired consumers of both systems from the catalog and
//! keeps exactly one worker running per (system, consumer, worker index) at the consumer's
//! current generation. A worker of an old generation is stopped, and its successor starts only
//! once it is gone, so two workers never read the same partitions or shards at once.
//!
//! Slots are spent only on work: a consumer gets workers only for the indexes that own a
//! partition or shard (stream number N belongs to index N mod parallelism; streams are known from
//! the stored offsets / seqnums and from what running workers saw of their topic or stream, so
//! index 0, which owns stream 0 of every source, is always started and notices streams added
//! later), the producer runs only while the outbox has rows, and one database runs at most
//! `pipeline_ingest.max_workers_per_database` of them. A consumer that cannot get a worker shows
//! why in `last_error` (state 'waiting' in consumer_status) until it gets one.

use super::{reload_config_if_requested, shutdown_requested, wait, Handle, Status};
use crate::catalog::kafka::all_consumers;
use crate::shmem::SourceKind;
use crate::xact::in_transaction;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How soon a worker that stopped on its own is started again.
const RESTART_DELAY: Duration = Duration::from_secs(5);

/// What `last_error` of a consumer waiting for a worker starts with (consumer_status shows such a
/// consumer as 'waiting', see sql/finalize.sql).
pub const WAITING_PREFIX: &str = "waiting for a worker";

/// A worker the supervisor keeps running: a consumer's worker `index` (consumer ids are unique
/// per source system), or (Kafka consumer 0) the database's producer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
struct Key {
    source: SourceKind,
    consumer: i32,
    index: i32,
}

const PRODUCER: Key = Key { source: SourceKind::Kafka, consumer: 0, index: 0 };

struct Running {
    generation: i64,
    handle: Handle,
    stopping: bool,
}

thread_local! {
    /// The workers this supervisor started. Kept outside the main function so that the exit
    /// callback can stop them: SIGTERM ends the process with FATAL from wherever it waits, and
    /// FATAL runs exit callbacks, not Rust destructors.
    static RUNNING: RefCell<HashMap<Key, Running>> = RefCell::new(HashMap::new());
}

/// Stops this supervisor's workers when it exits (a successor would start its own, and two
/// workers must never read the same partitions).
#[pg_guard]
unsafe extern "C-unwind" fn stop_workers_at_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    RUNNING.with(|r| {
        if let Ok(running) = r.try_borrow() {
            for w in running.values().filter(|w| !w.stopping) {
                w.handle.terminate();
            }
        }
    });
}

/// A consumer of either system, as the supervisor needs it.
struct Wanted {
    source: SourceKind,
    id: i32,
    enabled: bool,
    generation: i64,
    /// The worker indexes that own at least one known partition or shard (always 0).
    indexes: BTreeSet<i32>,
}

/// What one pass reads from the catalog.
struct Desired {
    consumers: Vec<Wanted>,
    outbox_pending: bool,
}

/// (consumer id, stream) pairs of a query, grouped by consumer.
fn streams_by_consumer<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(query: &str) -> HashMap<i32, Vec<T>> {
    crate::catalog::spi(Spi::connect(|c| {
        let t = c.select(query, None, &[])?;
        let mut out: HashMap<i32, Vec<T>> = HashMap::new();
        for row in t {
            if let (Some(id), Some(s)) = (row.get::<i32>(1)?, row.get::<T>(2)?) {
                out.entry(id).or_default().push(s);
            }
        }
        Ok(out)
    }))
}

/// The tables are read in the order they were created (consumers, offsets, outbox, Kinesis
/// endpoints and consumers, seqnums), which is the order DROP EXTENSION locks them in: the other
/// order deadlocked with it.
fn read_desired(dboid: pg_sys::Oid) -> Desired {
    let mut consumers = Vec::new();
    follow_renames(SourceKind::Kafka);
    let kafka_consumers = all_consumers();
    // Kafka: partitions with a stored offset, and those running workers saw in their topic (new
    // ones have no stored offset yet). Partition p belongs to index p mod parallelism.
    let mut partitions = streams_by_consumer::<i32>("SELECT consumer_id, \"partition\" FROM pipeline_kafka.offsets");
    for slot in crate::shmem::partitions_of(dboid, SourceKind::Kafka) {
        partitions.entry(slot.consumer_id).or_default().push(slot.partition);
    }
    let outbox_pending =
        crate::catalog::read_one::<bool>("SELECT EXISTS (SELECT 1 FROM pipeline_kafka.outbox)", &[]).unwrap_or(false);
    for c in kafka_consumers {
        // (a spread consumer's node reads only its share: see citus::spread_worker)
        let spread = crate::citus::spread_of(SourceKind::Kafka, c.id);
        let known = partitions.get(&c.id).into_iter().flatten().copied();
        let known = known.filter_map(|p| crate::citus::local_index(c.parallelism, |n| p.rem_euclid(n), spread));
        consumers.push(Wanted {
            source: SourceKind::Kafka,
            id: c.id,
            enabled: c.enabled,
            generation: c.generation,
            indexes: indexes_owning(c.parallelism, known),
        });
    }
    // Kinesis: shards in seqnums and those running workers saw (their status slots are keyed by
    // shard id); the shard id decides the index.
    let kinesis_consumers = crate::catalog::kinesis::all_consumers();
    // After that read, which locks the endpoints first (the order DROP EXTENSION takes).
    follow_renames(SourceKind::Kinesis);
    let mut shards = streams_by_consumer::<String>("SELECT consumer_id, shard_id FROM pipeline_kinesis.seqnums");
    for slot in crate::shmem::partitions_of(dboid, SourceKind::Kinesis) {
        shards.entry(slot.consumer_id).or_default().push(slot.stream.as_str().to_string());
    }
    for c in kinesis_consumers {
        let p = c.parallelism.max(1);
        let spread = crate::citus::spread_of(SourceKind::Kinesis, c.id);
        let by_id = shards
            .get(&c.id)
            .into_iter()
            .flatten()
            .filter_map(|s| crate::citus::local_index(p, |n| ingest_core::kinesis::lineage::worker_of(s, n), spread));
        consumers.push(Wanted {
            source: SourceKind::Kinesis,
            id: c.id,
            enabled: c.enabled,
            generation: c.generation,
            indexes: indexes_owning(p, by_id),
        });
    }
    Desired { consumers, outbox_pending }
}

/// Keeps each consumer's stored relation name (`relname`) the name of its relation as it is now,
/// so that once the relation is dropped, consumer_status, errors and consume_end know it by its
/// last name (a table created again under that name is the one adopted). Writes only rows whose
/// relation was renamed (or moved to another schema).
fn follow_renames(source: SourceKind) {
    let renamed = "FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
         WHERE r.oid = k.relation AND k.relname IS DISTINCT FROM pg_catalog.format('%I.%I', n.nspname, r.relname)";
    let t = source.consumers();
    // Looked for first, read-only: an UPDATE through SPI, even of no row, assigns an xid, and this
    // runs every second in every database (see error::read_one).
    let any = crate::catalog::read_one::<bool>(&format!("SELECT EXISTS (SELECT 1 FROM {t} k, LATERAL (SELECT 1 {renamed}) x)"), &[]);
    if any == Some(true) {
        crate::catalog::spi(Spi::run(&format!("UPDATE {t} k SET relname = pg_catalog.format('%I.%I', n.nspname, r.relname) {renamed}")));
    }
}

/// The worker indexes that own at least one of `known` (stream numbers, taken modulo
/// parallelism), and always 0: index 0 owns stream 0 of every source and notices new streams.
fn indexes_owning(parallelism: i32, known: impl Iterator<Item = i32>) -> BTreeSet<i32> {
    let parallelism = parallelism.max(1);
    let mut out: BTreeSet<i32> = known.map(|p| p.rem_euclid(parallelism)).collect();
    out.insert(0);
    out
}

/// Sets (Some) or clears (None, only if it is still the waiting message) a consumer's waiting
/// message.
fn show_waiting(source: SourceKind, consumer_id: i32, why: Option<&str>) {
    let r = in_transaction(|| match why {
        Some(w) => crate::catalog::consumers::set_last_error(source, consumer_id, Some(w)),
        None => {
            let t = source.consumers();
            let args = [consumer_id.into(), WAITING_PREFIX.into()];
            // read first: an UPDATE through SPI assigns an xid even when it changes nothing
            if crate::catalog::read_one::<bool>(&format!("SELECT EXISTS (SELECT 1 FROM {t} WHERE id = $1 AND starts_with(last_error, $2))"), &args)
                == Some(true)
            {
                crate::catalog::spi(Spi::run_with_args(
                    &format!("UPDATE {t} SET last_error = NULL, last_error_at = NULL WHERE id = $1 AND starts_with(last_error, $2)"),
                    &args,
                ))
            }
        }
    });
    if let Err(e) = r {
        warning!("pipeline_ingest supervisor could not update {source:?} consumer {consumer_id}: {e}");
    }
}

/// Whether a database with nothing to do lets its supervisor go: no enabled consumer, no outbox
/// row, no worker of its own. Worker slots are shared with parallel query (`max_worker_processes`),
/// so an idle database holds none; whatever gives it work wakes it at COMMIT (consume_begin,
/// a committed outbox row: `shmem::wake_database`), the launcher probes every database now and
/// then, and at every server start. The supervisor unregisters first, so that a wake from here on
/// goes to the launcher, then looks once more (work committed just before it unregistered would
/// have woken only itself): with work, it registers again and stays.
fn leave_when_idle(dboid: pg_sys::Oid, dbname: &str) -> bool {
    crate::shmem::set_supervisor(dboid, 0);
    let work = in_transaction(|| {
        crate::catalog::extension_exists()
            && crate::catalog::read_one::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pipeline_kafka.consumers WHERE enabled) \
                     OR EXISTS (SELECT 1 FROM pipeline_kafka.outbox) \
                     OR EXISTS (SELECT 1 FROM pipeline_kinesis.consumers WHERE enabled)",
                &[],
            )
            .unwrap_or(true)
    });
    if work.unwrap_or(true) {
        crate::shmem::set_supervisor(dboid, super::my_pid());
        return false;
    }
    log!("pipeline_ingest supervisor for database \"{dbname}\" leaves: nothing to do (no enabled consumer, no message to produce)");
    true
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pipeline_ingest_supervisor_main(_arg: pg_sys::Datum) {
    super::setup_signals();
    let dboid: u32 = BackgroundWorker::get_extra().parse().expect("supervisor extra holds a database oid");
    let dboid = pg_sys::Oid::from(dboid);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);

    let has_extension = in_transaction(crate::catalog::extension_exists).unwrap_or(false);
    if !has_extension {
        return;
    }
    // SAFETY: registers a plain function with a dummy argument.
    unsafe { pg_sys::before_shmem_exit(Some(stop_workers_at_exit), pg_sys::Datum::from(0usize)) };
    crate::shmem::set_supervisor(dboid, super::my_pid());
    let dbname = in_transaction(|| crate::catalog::read_one::<String>("SELECT current_database()::text", &[])).ok().flatten().unwrap_or_default();
    log!("pipeline_ingest supervisor started for database \"{dbname}\"");

    let mut not_before: HashMap<Key, Instant> = HashMap::new();
    let mut slot_warning = false;
    let mut version_warned = false;
    // Consumers shown as waiting, with the message shown.
    let mut waiting: HashMap<(SourceKind, i32), String> = HashMap::new();
    // A waiting message left by a previous supervisor of this database is cleared once the
    // consumer's workers run, as ours are.
    let mut first_pass = true;
    while !shutdown_requested() {
        reload_config_if_requested();
        let desired = in_transaction(|| {
            // extension_version() raises (no row) once the extension is dropped: ask first.
            if !crate::catalog::extension_exists() {
                return None;
            }
            let version = crate::catalog::extension_version()?;
            if version != crate::catalog::LIBRARY_VERSION {
                return Some(Err(version));
            }
            Some(Ok(read_desired(dboid)))
        });
        let desired = match desired {
            Ok(Some(Ok(d))) => {
                version_warned = false;
                d
            }
            // The library was updated but the database's schema was not (yet): workers of this
            // library would read and write tables that are not as it expects. Wait, with a
            // message, until ALTER EXTENSION ... UPDATE; workers of the old schema are stopped.
            Ok(Some(Err(version))) => {
                if !version_warned {
                    warning!(
                        "pipeline_ingest: the extension in this database is at version {version}, the library at {}; \
                         no consumer or producer runs here until ALTER EXTENSION pipeline_ingest UPDATE",
                        crate::catalog::LIBRARY_VERSION
                    );
                    version_warned = true;
                }
                RUNNING.with_borrow_mut(|running| {
                    for r in running.values_mut() {
                        if !r.stopping {
                            r.handle.terminate();
                            r.stopping = true;
                        }
                    }
                });
                wait(Duration::from_secs(1), None);
                continue;
            }
            Ok(None) => break,
            Err(e) => {
                warning!("pipeline_ingest supervisor could not read consumers: {e}");
                wait(Duration::from_secs(1), None);
                continue;
            }
        };
        for source in [SourceKind::Kafka, SourceKind::Kinesis] {
            let ids: Vec<i32> = desired.consumers.iter().filter(|c| c.source == source).map(|c| c.id).collect();
            crate::shmem::forget_partitions(dboid, source, &ids);
        }
        // Ordered: the producer (key 0/0) first, then consumers by system, id and index, so that
        // under the budget the same workers keep their places from pass to pass.
        let mut want: BTreeMap<Key, i64> = BTreeMap::new();
        let producer_running = RUNNING.with_borrow(|r| r.get(&PRODUCER).is_some_and(|p| p.handle.status() != Status::Stopped));
        if desired.outbox_pending || producer_running {
            // The producer exits by itself once the outbox stayed empty for a while.
            want.insert(PRODUCER, 0);
        }
        for c in desired.consumers.iter().filter(|c| c.enabled) {
            for index in &c.indexes {
                want.insert(Key { source: c.source, consumer: c.id, index: *index }, c.generation);
            }
        }

        let budget = crate::guc::MAX_WORKERS_PER_DATABASE.get().max(1) as usize;
        let mut blocked: HashMap<(SourceKind, i32), String> = HashMap::new();
        RUNNING.with_borrow_mut(|running| {
            // Stop what is no longer wanted; forget what has stopped.
            running.retain(|key, r| {
                let wanted = want.get(key).is_some_and(|generation| *generation == r.generation);
                if r.handle.status() == Status::Stopped {
                    // A worker that stopped although still wanted as it is (crashed, or gave up) is
                    // restarted after a delay; one that left because its consumer changed or stopped
                    // is replaced at once. The producer leaves on its own when idle and is started
                    // again as soon as rows wait.
                    if wanted && !r.stopping && *key != PRODUCER {
                        not_before.insert(*key, Instant::now() + RESTART_DELAY);
                    }
                    return false;
                }
                if !wanted && !r.stopping {
                    r.handle.terminate();
                    r.stopping = true;
                }
                true
            });

            // Start what is missing, within the budget (workers still stopping hold their slot).
            for (key, generation) in &want {
                if running.contains_key(key) || not_before.get(key).is_some_and(|t| Instant::now() < *t) {
                    continue;
                }
                // One slot of a budget of two or more is kept for the producer: it runs only while
                // committed messages wait, and consumers holding the whole budget would delay them
                // with nothing to show why.
                let (used, limit) = if *key == PRODUCER {
                    (running.len(), budget)
                } else {
                    (running.keys().filter(|k| **k != PRODUCER).count(), if budget > 1 { budget - 1 } else { 1 })
                };
                if used >= limit {
                    blocked.entry((key.source, key.consumer)).or_insert_with(|| {
                        format!(
                            "{WAITING_PREFIX}: this database already runs the {limit} consumer workers \
                             pipeline_ingest.max_workers_per_database ({budget}) allows"
                        )
                    });
                    continue;
                }
                let started = if *key == PRODUCER {
                    Handle::start(
                        "pipeline_kafka producer",
                        "pipeline_kafka producer",
                        "pipeline_kafka_producer_main",
                        &dboid.to_u32().to_string(),
                    )
                } else {
                    let (kind, function) = match key.source {
                        SourceKind::Kafka => ("pipeline_kafka consumer", "pipeline_kafka_worker_main"),
                        SourceKind::Kinesis => ("pipeline_kinesis consumer", "pipeline_kinesis_worker_main"),
                    };
                    Handle::start(
                        &format!("{kind} {}/{}", key.consumer, key.index),
                        kind,
                        function,
                        &format!("{} {} {} {}", dboid.to_u32(), key.consumer, key.index, generation),
                    )
                };
                match started {
                    Some(handle) => {
                        slot_warning = false;
                        running.insert(*key, Running { generation: *generation, handle, stopping: false });
                    }
                    None => {
                        if !slot_warning {
                            warning!("pipeline_ingest could not start a worker: no background worker slot is free (raise max_worker_processes)");
                            slot_warning = true;
                        }
                        blocked.entry((key.source, key.consumer)).or_insert_with(|| {
                            format!("{WAITING_PREFIX}: no background worker slot is free (raise max_worker_processes)")
                        });
                        not_before.insert(*key, Instant::now() + RESTART_DELAY);
                    }
                }
            }
        });
        // Keys waiting out a restart delay after a failed start stay waiting.
        for (key, t) in &not_before {
            if Instant::now() < *t && want.contains_key(key) {
                if let Some(w) = waiting.get(&(key.source, key.consumer)) {
                    blocked.entry((key.source, key.consumer)).or_insert_with(|| w.clone());
                }
            }
        }
        blocked.remove(&(PRODUCER.source, PRODUCER.consumer));
        for ((source, id), why) in &blocked {
            // Every pass: a running worker of the same consumer may have cleared it meanwhile
            // (the UPDATE writes nothing when the message is already there).
            show_waiting(*source, *id, Some(why));
        }
        let started: Vec<(SourceKind, i32)> = if first_pass {
            desired.consumers.iter().map(|c| (c.source, c.id)).filter(|k| !blocked.contains_key(k)).collect()
        } else {
            waiting.keys().copied().filter(|k| !blocked.contains_key(k)).collect()
        };
        for (source, id) in started {
            show_waiting(source, id, None);
        }
        waiting = blocked;
        first_pass = false;
        not_before.retain(|_, t| Instant::now() < *t);
        if want.is_empty() && not_before.is_empty() && RUNNING.with_borrow(|r| r.is_empty()) && leave_when_idle(dboid, &dbname) {
            break;
        }
        wait(Duration::from_secs(1), None);
    }
    RUNNING.with_borrow_mut(|running| {
        for r in running.values_mut().filter(|r| !r.stopping) {
            r.handle.terminate();
            r.stopping = true;
        }
    });
    crate::shmem::set_supervisor(dboid, 0);
}
