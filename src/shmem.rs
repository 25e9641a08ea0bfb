//! Shared memory: where the launcher and each database's supervisor can be found, so that a
//! committed `consume_begin` / `consume_end` wakes the right process at once.

use pgrx::lwlock::PgLwLock;
use pgrx::pg_shmem_init;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

pub const MAX_DATABASES: usize = 128;

#[derive(Copy, Clone, Default)]
pub struct DbSlot {
    pub dboid: u32,
    pub supervisor_pid: i32,
    pub producer_pid: i32,
    pub wake: bool,
}

#[derive(Copy, Clone)]
pub struct Registry {
    pub launcher_pid: i32,
    pub slots: [DbSlot; MAX_DATABASES],
}

impl Default for Registry {
    fn default() -> Self {
        Registry { launcher_pid: 0, slots: [DbSlot::default(); MAX_DATABASES] }
    }
}

// SAFETY: Registry is plain old data (no pointers), valid in any process that maps it.
unsafe impl PGRXSharedMemory for Registry {}

// SAFETY: the name is unique to this extension.
pub static REGISTRY: PgLwLock<Registry> = unsafe { PgLwLock::new(c"pipeline_ingest_registry") };

pub fn init() {
    pg_shmem_init!(REGISTRY);
}

fn signal(pid: i32) {
    if pid > 0 {
        // SIGUSR1 makes a PostgreSQL process set its latch. Failure only means it is gone, and
        // then its successor reads the catalog when it starts.
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        let rc = unsafe { libc::kill(pid, libc::SIGUSR1) };
        if rc != 0 {
            pgrx::debug1!("pipeline_ingest: process {pid} to wake is gone");
        }
    }
}

pub fn set_launcher_pid(pid: i32) {
    REGISTRY.exclusive().launcher_pid = pid;
}

/// Marks a database as needing attention and wakes its supervisor, or the launcher when the
/// database has none yet.
pub fn wake_database(dboid: pg_sys::Oid) {
    let dboid = dboid.to_u32();
    let (pid, launcher) = {
        let mut reg = REGISTRY.exclusive();
        let launcher = reg.launcher_pid;
        let slot = match reg.slots.iter().position(|s| s.dboid == dboid) {
            Some(i) => Some(i),
            None => reg.slots.iter().position(|s| s.dboid == 0),
        };
        let pid = match slot {
            Some(i) => {
                reg.slots[i].dboid = dboid;
                reg.slots[i].wake = true;
                reg.slots[i].supervisor_pid
            }
            None => 0,
        };
        (pid, launcher)
    };
    if pid > 0 {
        signal(pid);
    } else {
        signal(launcher);
    }
}

/// The databases marked by `wake_database` since the last call; clears the marks.
pub fn take_woken_databases() -> Vec<u32> {
    let mut reg = REGISTRY.exclusive();
    let mut out = Vec::new();
    for s in reg.slots.iter_mut() {
        if s.dboid != 0 && s.wake {
            out.push(s.dboid);
            s.wake = false;
        }
    }
    out
}

/// Records (or, with pid 0, clears) the supervisor of a database.
pub fn set_supervisor(dboid: pg_sys::Oid, pid: i32) {
    let dboid = dboid.to_u32();
    let mut reg = REGISTRY.exclusive();
    if let Some(s) = reg.slots.iter_mut().find(|s| s.dboid == dboid) {
        s.supervisor_pid = pid;
        if pid == 0 {
            s.dboid = 0;
            s.wake = false;
        }
    } else if pid != 0 {
        if let Some(s) = reg.slots.iter_mut().find(|s| s.dboid == 0) {
            *s = DbSlot { dboid, supervisor_pid: pid, producer_pid: 0, wake: false };
        }
    }
}

/// Records (or, with pid 0, clears) the producer worker of a database.
pub fn set_producer(dboid: pg_sys::Oid, pid: i32) {
    let dboid = dboid.to_u32();
    let mut reg = REGISTRY.exclusive();
    if let Some(s) = reg.slots.iter_mut().find(|s| s.dboid == dboid) {
        s.producer_pid = pid;
    }
}

/// Wakes the producer worker of a database (committed outbox rows are waiting).
pub fn wake_producer(dboid: pg_sys::Oid) {
    let dboid = dboid.to_u32();
    let pid = REGISTRY.share().slots.iter().find(|s| s.dboid == dboid).map_or(0, |s| s.producer_pid);
    signal(pid);
}
