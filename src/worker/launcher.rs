//! The launcher: one per cluster, connected to `pipeline_ingest.database` (so it shows in
//! pg_stat_activity). It lists databases and keeps a supervisor running in each one that has the
//! extension; a supervisor that finds no extension, or nothing to do, exits, and the database is
//! probed again after a while, or at once when something committed there asks for it
//! (`consume_begin`, an outbox row).

use super::{reload_config_if_requested, shutdown_requested, wait, Handle, Status};
use crate::xact::in_transaction;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

pub fn register() {
    BackgroundWorkerBuilder::new("pipeline_ingest launcher")
        .set_type("pipeline_ingest launcher")
        .set_library(super::LIBRARY)
        .set_function("pipeline_ingest_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

struct Db {
    handle: Option<Handle>,
    probed: Option<Instant>,
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pipeline_ingest_launcher_main(_arg: pg_sys::Datum) {
    super::setup_signals();
    BackgroundWorker::connect_worker_to_spi(Some(&crate::guc::launcher_database()), None);
    crate::shmem::set_launcher_pid(super::my_pid());
    log!("pipeline_ingest launcher started");

    let mut dbs: HashMap<u32, Db> = HashMap::new();
    // Databases woken (something committed work there) whose supervisor could not be started yet:
    // one still running may be leaving because it was idle (worker::supervisor), and a wake it
    // did not see must start its successor.
    let mut pending: HashSet<u32> = HashSet::new();
    while !shutdown_requested() {
        reload_config_if_requested();
        let naptime = Duration::from_secs(crate::guc::LAUNCHER_NAPTIME_S.get().max(1) as u64);
        // Everything that gives a database work wakes it at COMMIT; probing now and then only
        // catches what came otherwise (a dump restored with enabled consumers). Not often: each
        // probe takes a worker slot for a moment.
        let reprobe = naptime * 60;
        pending.extend(crate::shmem::take_woken_databases());
        let list = in_transaction(|| {
            crate::catalog::spi(Spi::connect(|c| {
                let t = c.select(
                    "SELECT oid FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY oid",
                    None,
                    &[],
                )?;
                let mut out = Vec::new();
                for row in t {
                    out.extend(row.get::<pg_sys::Oid>(1)?.map(|o| o.to_u32()));
                }
                Ok(out)
            }))
        });
        match list {
            Err(e) => warning!("pipeline_ingest launcher could not list databases: {e}"),
            Ok(list) => {
                dbs.retain(|oid, _| list.contains(oid));
                pending.retain(|oid| list.contains(oid));
                for oid in list {
                    let db = dbs.entry(oid).or_insert(Db { handle: None, probed: None });
                    let alive = db.handle.as_ref().is_some_and(|h| h.status() != Status::Stopped);
                    let due = db.probed.is_none_or(|t| t.elapsed() >= reprobe) || pending.contains(&oid);
                    if alive || !due {
                        continue;
                    }
                    db.probed = Some(Instant::now());
                    pending.remove(&oid);
                    db.handle = Handle::start(
                        &format!("pipeline_ingest supervisor {oid}"),
                        "pipeline_ingest supervisor",
                        "pipeline_ingest_supervisor_main",
                        &oid.to_string(),
                    );
                    if db.handle.is_none() {
                        warning!(
                            "pipeline_ingest launcher could not start a supervisor for database {oid}: \
                             no background worker slot is free (raise max_worker_processes)"
                        );
                    }
                }
            }
        }
        wait(naptime, None);
    }
    crate::shmem::set_launcher_pid(0);
    log!("pipeline_ingest launcher stopped");
}
