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

/// A hold of one of this module's LWLocks, released when it goes out of scope, however that
/// happens. pgrx's own guards (`PgLwLock::exclusive` / `share`) call LWLockRelease on drop only
/// while `InterruptHoldoffCount > 0`, assuming that 0 means an ERROR is unwinding and that the
/// transaction's abort will release the lock. That assumption failed in a consumer worker: after
/// the postmaster's death its count was 0 at the guard's drop, the lock stayed held by the worker
/// itself (held_lwlocks[0] = this lock, exclusive; its own PGPROC in the lock's wait list, seen
/// with gdb) with no transaction to abort, and its next `update_partition` waited for itself
/// forever in LWLockAcquire, keeping the old shared memory attached (the coordinator could not
/// restart). Here the release does what LWLockReleaseAll does: it makes sure interrupts are held
/// once for LWLockRelease's RESUME_INTERRUPTS, and releases the lock if this process still holds it
/// (an abort's LWLockReleaseAll may have released it already).
struct Release(*mut pg_sys::LWLock);

impl Drop for Release {
    fn drop(&mut self) {
        // SAFETY: main thread; the lock is one of this module's, in shared memory for the life of
        // the server. The count is only raised to 1 when it is 0, which LWLockRelease takes back.
        let unheld = unsafe {
            if pg_sys::LWLockHeldByMe(self.0) {
                let unheld = pg_sys::InterruptHoldoffCount == 0;
                if unheld {
                    pg_sys::InterruptHoldoffCount = 1;
                }
                pg_sys::LWLockRelease(self.0);
                unheld
            } else {
                false
            }
        };
        if unheld {
            // (after the release: nothing that can fail while the lock is held)
            pgrx::log!("pipeline_ingest: released a shared-memory lock held with InterruptHoldoffCount 0 (pgrx's guard would have kept it)");
        }
    }
}

/// The LWLock of a `PgLwLock` (its named tranche's only lock).
fn raw_lock<T>(lock: &PgLwLock<T>) -> *mut pg_sys::LWLock {
    // SAFETY: the tranche was requested at preload (pg_shmem_init!); the request array is the
    // postmaster's, inherited by every child.
    unsafe { &raw mut (*pg_sys::GetNamedLWLockTranche(lock.name().as_ptr())).lock }
}

/// Exclusive access to `lock`'s data until the returned hold is dropped.
pub struct Exclusive<'a, T> {
    data: &'a mut T,
    _release: Release,
}

impl<T> std::ops::Deref for Exclusive<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data
    }
}

impl<T> std::ops::DerefMut for Exclusive<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.data
    }
}

/// Shared access to `lock`'s data until the returned hold is dropped.
pub struct Shared<'a, T> {
    data: &'a T,
    _release: Release,
}

impl<T> std::ops::Deref for Shared<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data
    }
}

fn exclusive<T: PGRXSharedMemory>(lock: &PgLwLock<T>) -> Exclusive<'_, T> {
    let raw = raw_lock(lock);
    let mut g = lock.exclusive();
    let data: *mut T = &mut *g;
    // the hold is `Release`'s to end from here on
    std::mem::forget(g);
    // SAFETY: the data lives in shared memory for the server's life; the lock is held exclusively
    // until the returned value's Release drops.
    Exclusive { data: unsafe { &mut *data }, _release: Release(raw) }
}

fn shared<T: PGRXSharedMemory>(lock: &PgLwLock<T>) -> Shared<'_, T> {
    let raw = raw_lock(lock);
    let g = lock.share();
    let data: *const T = &*g;
    std::mem::forget(g);
    // SAFETY: as in `exclusive`, the lock held in shared mode.
    Shared { data: unsafe { &*data }, _release: Release(raw) }
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

thread_local! {
    /// Whether this process registered `forget_me` already.
    static EXIT_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes sure this process's pid leaves the registry however the process ends (FATAL on SIGTERM,
/// ERROR escaping the main loop, proc_exit on postmaster death): a stale pid would have wake-ups
/// sent to nobody, and the launcher would not know the database lost its supervisor.
fn clear_at_exit() {
    if EXIT_HOOK.with(|h| h.replace(true)) {
        return;
    }
    // SAFETY: registers a plain function (no captured state) with a dummy argument.
    unsafe { pg_sys::before_shmem_exit(Some(forget_me), pg_sys::Datum::from(0usize)) };
}

#[pg_guard]
unsafe extern "C-unwind" fn forget_me(code: std::ffi::c_int, _arg: pg_sys::Datum) {
    // SAFETY: plain global read.
    let me = unsafe { pg_sys::MyProcPid };
    let mut reg = exclusive(&REGISTRY);
    if reg.launcher_pid == me {
        reg.launcher_pid = 0;
    }
    for s in reg.slots.iter_mut() {
        if s.producer_pid == me {
            s.producer_pid = 0;
        }
        if s.dboid != 0 && s.supervisor_pid == me {
            // The database has no supervisor now: a wake-up for it goes to the launcher, which
            // starts a new one. A supervisor that did not finish normally (terminated, FATAL,
            // ERROR: exit code != 0) leaves the database marked woken, so the launcher (told of
            // the exit by the postmaster) replaces it at once rather than at its next probe.
            *s = if code != 0 { DbSlot { dboid: s.dboid, wake: true, ..DbSlot::default() } } else { DbSlot::default() };
        }
    }
}

pub fn set_launcher_pid(pid: i32) {
    if pid != 0 {
        clear_at_exit();
    }
    exclusive(&REGISTRY).launcher_pid = pid;
}

/// Marks a database as needing attention and wakes its supervisor, or the launcher when the
/// database has none yet.
pub fn wake_database(dboid: pg_sys::Oid) {
    let dboid = dboid.to_u32();
    let (pid, launcher) = {
        let mut reg = exclusive(&REGISTRY);
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
    let mut reg = exclusive(&REGISTRY);
    let mut out = Vec::new();
    for s in reg.slots.iter_mut() {
        if s.dboid != 0 && s.wake {
            out.push(s.dboid);
            s.wake = false;
        }
    }
    out
}

/// Records (or, with pid 0, clears) the supervisor of a database. Only the calling supervisor's
/// own registration is cleared: once it unregistered, a wake for the database makes a new entry
/// for the launcher (supervisor 0, woken), which a second clear must not take away.
pub fn set_supervisor(dboid: pg_sys::Oid, pid: i32) {
    if pid != 0 {
        clear_at_exit();
    }
    let dboid = dboid.to_u32();
    // SAFETY: plain global read.
    let me = unsafe { pg_sys::MyProcPid };
    let mut reg = exclusive(&REGISTRY);
    if let Some(s) = reg.slots.iter_mut().find(|s| s.dboid == dboid) {
        if pid != 0 {
            s.supervisor_pid = pid;
        } else if s.supervisor_pid == me {
            s.supervisor_pid = 0;
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
    if pid != 0 {
        clear_at_exit();
    }
    let dboid = dboid.to_u32();
    let mut reg = exclusive(&REGISTRY);
    if let Some(s) = reg.slots.iter_mut().find(|s| s.dboid == dboid) {
        s.producer_pid = pid;
    }
}

/// Wakes the producer worker of a database (committed outbox rows are waiting).
pub fn wake_producer(dboid: pg_sys::Oid) {
    let dboid = dboid.to_u32();
    let pid = shared(&REGISTRY).slots.iter().find(|s| s.dboid == dboid).map_or(0, |s| s.producer_pid);
    if pid > 0 {
        signal(pid);
    } else {
        // No producer yet (the database's supervisor has not started one): have it started now.
        wake_database(pg_sys::Oid::from(dboid));
    }
}

pub const MAX_PARTITION_SLOTS: usize = 2048;

/// Which system a consumer reads: the one notion (`ingest_core::position::System`), under the name
/// the API and catalog code know it by.
pub use ingest_core::position::System as SourceKind;
use ingest_core::position::StreamKey;

/// Progress of one stream (partition, shard) of one consumer, written by its worker after every
/// batch, read by the consumer_status views (cheap: no broker call, no catalog write per batch).
#[derive(Copy, Clone, Default)]
pub struct PartitionSlot {
    pub dboid: u32,
    /// `SourceKind as i32`; 0 in a free slot.
    pub source: i32,
    pub consumer_id: i32,
    /// The stream's name: with the three above, the slot's key.
    pub stream: StreamKey,
    /// The number the stream is shown under (`Position::stream_number`: Kafka's partition, the
    /// number in a Kinesis shard id); not a key.
    pub partition: i32,
    pub worker_pid: i32,
    pub high_watermark: i64,
    pub messages: i64,
    pub rows: i64,
    pub dead_letters: i64,
    pub batches: i64,
    /// Messages the source left out (Kinesis: KPL user records outside their shard's range).
    pub skipped: i64,
    /// TimestampTz of the last committed batch; 0 = none yet.
    pub last_batch_at: i64,
    /// Rows per second of the last minute and the current run of dead letters.
    pub recent: ingest_core::recent::Recent,
}

#[derive(Copy, Clone)]
pub struct PartitionStatus {
    pub slots: [PartitionSlot; MAX_PARTITION_SLOTS],
}

impl Default for PartitionStatus {
    fn default() -> Self {
        PartitionStatus { slots: [PartitionSlot::default(); MAX_PARTITION_SLOTS] }
    }
}

// SAFETY: plain old data.
unsafe impl PGRXSharedMemory for PartitionStatus {}

// SAFETY: the name is unique to this extension.
pub static PARTITIONS: PgLwLock<PartitionStatus> = unsafe { PgLwLock::new(c"pipeline_ingest_partitions") };

pub fn init_status() {
    pg_shmem_init!(PARTITIONS);
}

/// Updates (creating it if needed) the slot of a consumer's stream, `stream` (shown as
/// `number`). Counters survive worker restarts until the server restarts. Returns false when
/// every slot is taken.
pub fn update_partition(
    dboid: pg_sys::Oid,
    source: SourceKind,
    consumer_id: i32,
    (stream, number): (StreamKey, i32),
    f: impl FnOnce(&mut PartitionSlot),
) -> bool {
    let dboid = dboid.to_u32();
    let source = source as i32;
    let mut st = exclusive(&PARTITIONS);
    let idx = st
        .slots
        .iter()
        .position(|s| s.dboid == dboid && s.source == source && s.consumer_id == consumer_id && s.stream == stream)
        .or_else(|| st.slots.iter().position(|s| s.dboid == 0));
    match idx {
        Some(i) => {
            let slot = &mut st.slots[i];
            if slot.dboid == 0 {
                // high_watermark -1: not known yet (lag NULL, not 0).
                *slot = PartitionSlot { dboid, source, consumer_id, stream, partition: number, high_watermark: -1, ..Default::default() };
            }
            f(slot);
            true
        }
        None => false,
    }
}

/// The slots of a database's consumers of one system.
pub fn partitions_of(dboid: pg_sys::Oid, source: SourceKind) -> Vec<PartitionSlot> {
    let dboid = dboid.to_u32();
    shared(&PARTITIONS).slots.iter().filter(|s| s.dboid == dboid && s.source == source as i32).copied().collect()
}

/// Frees the slots of a system's consumers that no longer exist in a database.
pub fn forget_partitions(dboid: pg_sys::Oid, source: SourceKind, keep: &[i32]) {
    let dboid = dboid.to_u32();
    let mut st = exclusive(&PARTITIONS);
    for s in st.slots.iter_mut() {
        if s.dboid == dboid && s.source == source as i32 && !keep.contains(&s.consumer_id) {
            *s = PartitionSlot::default();
        }
    }
}
