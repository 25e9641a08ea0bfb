//! A database's supervisor: reads the desired consumers from the catalog and keeps exactly one
//! worker running per (consumer, worker index) at the consumer's current generation. A worker of
//! an old generation is stopped, and its successor starts only once it is gone, so two workers
//! never read the same partitions at once.

use super::{reload_config_if_requested, shutdown_requested, wait, Handle, Status};
use crate::catalog::kafka::all_consumers;
use crate::xact::in_transaction;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How soon a worker that stopped on its own is started again.
const RESTART_DELAY: Duration = Duration::from_secs(5);

/// A worker the supervisor keeps running: a consumer's worker `index`, or (consumer 0) the
/// database's producer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    consumer: i32,
    index: i32,
}

const PRODUCER: Key = Key { consumer: 0, index: 0 };

struct Running {
    generation: i64,
    handle: Handle,
    stopping: bool,
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
    crate::shmem::set_supervisor(dboid, super::my_pid());
    let dbname = in_transaction(|| Spi::get_one::<String>("SELECT current_database()::text").ok().flatten()).ok().flatten();
    log!("pipeline_ingest supervisor started for database \"{}\"", dbname.unwrap_or_default());

    let mut running: HashMap<Key, Running> = HashMap::new();
    let mut not_before: HashMap<Key, Instant> = HashMap::new();
    let mut slot_warning = false;
    let mut version_warned = false;
    while !shutdown_requested() {
        reload_config_if_requested();
        let desired = in_transaction(|| {
            let version = crate::catalog::extension_version()?;
            if version != crate::catalog::LIBRARY_VERSION {
                return Some(Err(version));
            }
            Some(Ok(all_consumers()))
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
                for r in running.values_mut() {
                    if !r.stopping {
                        r.handle.terminate();
                        r.stopping = true;
                    }
                }
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
        let ids: Vec<i32> = desired.iter().map(|c| c.id).collect();
        crate::shmem::forget_partitions(dboid, &ids);
        let mut want: HashMap<Key, i64> = HashMap::new();
        want.insert(PRODUCER, 0);
        for c in desired.iter().filter(|c| c.enabled) {
            for index in 0..c.parallelism {
                want.insert(Key { consumer: c.id, index }, c.generation);
            }
        }

        // Stop what is no longer wanted; forget what has stopped.
        running.retain(|key, r| {
            let wanted = want.get(key).is_some_and(|generation| *generation == r.generation);
            if r.handle.status() == Status::Stopped {
                // A worker that stopped although still wanted as it is (crashed, or gave up) is
                // restarted after a delay; one that left because its consumer changed or stopped
                // is replaced at once.
                if wanted && !r.stopping {
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

        // Start what is missing.
        for (key, generation) in &want {
            if running.contains_key(key) || not_before.get(key).is_some_and(|t| Instant::now() < *t) {
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
                Handle::start(
                    &format!("pipeline_kafka consumer {}/{}", key.consumer, key.index),
                    "pipeline_kafka consumer",
                    "pipeline_kafka_worker_main",
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
                        warning!("pipeline_ingest could not start a consumer worker: no background worker slot is free (raise max_worker_processes)");
                        slot_warning = true;
                    }
                    not_before.insert(*key, Instant::now() + RESTART_DELAY);
                }
            }
        }
        not_before.retain(|_, t| Instant::now() < *t);
        wait(Duration::from_secs(1), None);
    }
    for r in running.values() {
        r.handle.terminate();
    }
    crate::shmem::set_supervisor(dboid, 0);
}
