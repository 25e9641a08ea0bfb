//! Background processes. The launcher (one per cluster, registered at preload) starts a
//! supervisor in every database that has the extension; a supervisor starts one consumer worker
//! per (consumer, worker index) and converges them to the catalog; consumer workers run the
//! poll -> batch -> COPY -> checkpoint pipeline.

pub mod consumer;
pub mod entry;
pub mod health;
pub mod kinesis;
mod kinesis_host;
pub mod launcher;
pub mod pin;
pub mod pipeline;
mod pipeline_stats;
pub mod retry;
pub mod supervisor;
pub mod typed;

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::pg_sys;
use std::time::Duration;

pub const LIBRARY: &str = "pipeline_ingest";

/// Signal handlers. SIGHUP sets a flag (reload at the next pass), as PostgreSQL's
/// SignalHandlerForConfigReload. SIGTERM does what PostgreSQL's own die() does for a backend:
/// InterruptPending + ProcDiePending, so that the next CHECK_FOR_INTERRUPTS anywhere (inside SPI,
/// in the producer's delivery wait, in `wait`) ends the process with FATAL instead of finishing
/// whatever it waits for; it also sets ShutdownRequestPending so our own loops, which test it
/// between passes, stop there first when they can.
pub fn setup_signals() {
    // SAFETY: installing handlers at worker start, then unblocking signals.
    unsafe {
        crate::compat::set_signal(libc::SIGHUP, on_sighup);
        crate::compat::set_signal(libc::SIGTERM, on_sigterm);
        pg_sys::BackgroundWorkerUnblockSignals();
    }
}

unsafe extern "C-unwind" fn on_sighup(_sig: std::ffi::c_int) {
    let saved = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: sig_atomic_t flag write and SetLatch, both async-signal-safe in PostgreSQL.
    unsafe {
        std::ptr::write_volatile(&raw mut pg_sys::ConfigReloadPending, 1);
        pg_sys::SetLatch(pg_sys::MyLatch);
        *libc::__errno_location() = saved;
    }
}

unsafe extern "C-unwind" fn on_sigterm(_sig: std::ffi::c_int) {
    let saved = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: sig_atomic_t flag writes and SetLatch, as PostgreSQL's die() handler does.
    unsafe {
        std::ptr::write_volatile(&raw mut pg_sys::ShutdownRequestPending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::ProcDiePending, 1);
        std::ptr::write_volatile(&raw mut pg_sys::InterruptPending, 1);
        pg_sys::SetLatch(pg_sys::MyLatch);
        *libc::__errno_location() = saved;
    }
}

pub fn shutdown_requested() -> bool {
    // SAFETY: reads a sig_atomic_t flag set by the handler.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::ShutdownRequestPending) != 0 }
}

/// Whether an interrupt (cancel, statement timeout, terminate) waits to be serviced: for code that
/// waits outside PostgreSQL (the Kinesis SDK) and must give up to let CHECK_FOR_INTERRUPTS act.
pub fn interrupt_pending() -> bool {
    // SAFETY: reads a sig_atomic_t flag set by signal handlers.
    unsafe { std::ptr::read_volatile(&raw const pg_sys::InterruptPending) != 0 }
}

/// Reloads postgresql.conf when SIGHUP arrived.
pub fn reload_config_if_requested() -> bool {
    // SAFETY: flag read/reset and config reload in the main thread, outside a transaction.
    unsafe {
        if std::ptr::read_volatile(&raw const pg_sys::ConfigReloadPending) != 0 {
            std::ptr::write_volatile(&raw mut pg_sys::ConfigReloadPending, 0);
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
            return true;
        }
    }
    false
}

/// Waits on the latch (and `fd` when given) for at most `timeout`. Exits the process if the
/// postmaster dies. Returns true when `fd` became readable.
pub fn wait(timeout: Duration, fd: Option<i32>) -> bool {
    let mut events = pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH;
    if fd.is_some() {
        events |= pg_sys::WL_SOCKET_READABLE;
    }
    let ms = timeout.as_millis().min(i64::MAX as u128) as std::ffi::c_long;
    // SAFETY: MyLatch is this process's latch; the fd (if any) is owned by the caller and open.
    let rc = unsafe {
        let rc = pg_sys::WaitLatchOrSocket(pg_sys::MyLatch, events as i32, fd.unwrap_or(-1), ms, pg_sys::PG_WAIT_EXTENSION);
        pg_sys::ResetLatch(pg_sys::MyLatch);
        rc
    };
    pg_sys::check_for_interrupts!();
    rc & pg_sys::WL_SOCKET_READABLE as i32 != 0
}

unsafe extern "C" {
    // pmsignal.h: reads the postmaster-death pipe. Not in pgrx's bindings; PostmasterIsAlive() is
    // an inline wrapper around it. It can only fail with FATAL (proc_exit, no longjmp), so it
    // needs no pg_guard boundary.
    fn PostmasterIsAliveInternal() -> bool;
}

/// Exits at once when the postmaster is gone (for loops that wait on something other than the
/// latch, such as librdkafka's delivery reports).
pub fn exit_if_postmaster_died() {
    // SAFETY: plain calls in the main thread; the death pipe was set up by InitPostmasterChild.
    // PostgreSQL's own test (the postmaster-death pipe, the one WL_EXIT_ON_PM_DEATH uses), which
    // does not depend on how the system re-parents orphans, unlike comparing getppid().
    unsafe {
        if !PostmasterIsAliveInternal() {
            pg_sys::proc_exit(1);
        }
    }
}

pub fn my_pid() -> i32 {
    // SAFETY: plain global read.
    unsafe { pg_sys::MyProcPid }
}

/// A dynamic worker started by this process; dropping it does not stop it.
pub struct Handle(*mut pg_sys::BackgroundWorkerHandle);

#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Starting,
    Running(i32),
    Stopped,
}

impl Handle {
    /// Starts a dynamic worker that notifies this process when it starts or stops.
    pub fn start(name: &str, kind: &str, function: &str, extra: &str) -> Option<Handle> {
        let builder = BackgroundWorkerBuilder::new(name)
            .set_type(kind)
            .set_library(LIBRARY)
            .set_function(function)
            .enable_spi_access()
            .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
            .set_extra(extra)
            .set_notify_pid(my_pid());
        let mut bgw: pg_sys::BackgroundWorker = (&builder).into();
        let mut handle: *mut pg_sys::BackgroundWorkerHandle = std::ptr::null_mut();
        // SAFETY: the handle is allocated in TopMemoryContext so it survives transactions.
        let ok = unsafe {
            let old = pg_sys::MemoryContextSwitchTo(pg_sys::TopMemoryContext);
            let ok = pg_sys::RegisterDynamicBackgroundWorker(&mut bgw, &mut handle);
            pg_sys::MemoryContextSwitchTo(old);
            ok
        };
        if ok && !handle.is_null() {
            Some(Handle(handle))
        } else {
            None
        }
    }

    pub fn status(&self) -> Status {
        let mut pid: pg_sys::pid_t = 0;
        // SAFETY: the handle came from RegisterDynamicBackgroundWorker and is still allocated.
        let st = unsafe { pg_sys::GetBackgroundWorkerPid(self.0, &mut pid) };
        match st {
            pg_sys::BgwHandleStatus::BGWH_STARTED => Status::Running(pid),
            pg_sys::BgwHandleStatus::BGWH_NOT_YET_STARTED => Status::Starting,
            _ => Status::Stopped,
        }
    }

    /// Asks the worker to stop (SIGTERM); it finishes or abandons its current batch.
    pub fn terminate(&self) {
        // SAFETY: as in `status`.
        unsafe { pg_sys::TerminateBackgroundWorker(self.0) };
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: frees the palloc'd handle; the worker itself is unaffected.
        unsafe { pg_sys::pfree(self.0.cast()) };
    }
}
