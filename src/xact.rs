//! Transactions and roles in background workers: run a closure in its own transaction and get
//! PostgreSQL errors back as values (the transaction rolled back), and act on the catalog as the
//! bootstrap superuser while the rest of the work runs as the consumer's owner.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

/// A PostgreSQL error caught in a worker, after its transaction was rolled back.
#[derive(Debug, Clone)]
pub struct PgError {
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [SQLSTATE {}]", self.message_with_detail(), self.sqlstate)
    }
}

fn sqlstate_text(code: PgSqlErrorCode) -> String {
    let mut n = code as i32;
    let mut s = String::with_capacity(5);
    for _ in 0..5 {
        s.push((((n & 0x3f) as u8) + b'0') as char);
        n >>= 6;
    }
    s
}

impl From<CaughtError> for PgError {
    fn from(e: CaughtError) -> Self {
        match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) | CaughtError::RustPanic { ereport: r, .. } => {
                PgError {
                    sqlstate: sqlstate_text(r.sql_error_code()),
                    message: r.message().to_string(),
                    detail: r.detail().map(str::to_string),
                }
            }
        }
    }
}

/// Runs `f` in a new transaction and commits it. Any ERROR (raised by `f` or by the commit) rolls
/// the transaction back and is returned.
pub fn in_transaction<R>(f: impl FnOnce() -> R) -> Result<R, PgError> {
    try_in_transaction(|| Ok::<R, std::convert::Infallible>(f())).map(|r| match r {
        Ok(v) => v,
        Err(never) => match never {},
    })
}

/// Runs `f` as the bootstrap superuser (catalog writes from a worker acting as a plain role).
/// On ERROR the transaction's abort restores the previous user.
///
/// The search_path is `pg_catalog, pg_temp` meanwhile: the caller's (or one a trigger set in a
/// worker) could otherwise put a function or operator of its own, such as `format(text, name,
/// name)`, in front of the built-in one a catalog statement means, and run it as superuser.
pub fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    as_role(pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID), || {
        // SAFETY: in a transaction; GUC_ACTION_SAVE keeps the previous value, restored by the
        // AtEOXact_GUC of the nest level `as_role` opened (or by the transaction's abort).
        unsafe {
            pg_sys::set_config_option(
                c"search_path".as_ptr(),
                c"pg_catalog, pg_temp".as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        f()
    })
}

/// Runs `f` as `role` (privileges, row-level security and triggers apply as for that role).
/// SECURITY_LOCAL_USERID_CHANGE forbids SET ROLE / SET SESSION AUTHORIZATION inside, and
/// settings changed inside (even session-wide, by a trigger's `set_config`) are rolled back when
/// `f` returns, as ANALYZE does around the table owner's index functions: code running as a
/// plain role must not leave settings behind for what later runs as the superuser.
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let mut uid = pg_sys::Oid::INVALID;
    let mut ctx: i32 = 0;
    // SAFETY: plain calls in a backend inside a transaction.
    let nest = unsafe {
        pg_sys::GetUserIdAndSecContext(&mut uid, &mut ctx);
        pg_sys::SetUserIdAndSecContext(role, ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
        pg_sys::NewGUCNestLevel()
    };
    let r = f();
    // SAFETY: undoes the setting changes of the nest level opened above, then restores the user
    // read above.
    unsafe {
        pg_sys::AtEOXact_GUC(false, nest);
        pg_sys::SetUserIdAndSecContext(uid, ctx);
    }
    r
}

/// Like `in_transaction`, but `f` decides: `Ok` commits, `Err` rolls back. PostgreSQL errors roll
/// back and come back as the outer `Err`.
pub fn try_in_transaction<R, E>(f: impl FnOnce() -> Result<R, E>) -> Result<Result<R, E>, PgError> {
    let f = std::panic::AssertUnwindSafe(f);
    // SAFETY: plain global read in the main thread.
    let holdoff = unsafe { pg_sys::InterruptHoldoffCount };
    // SAFETY: worker main thread, outside any transaction.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(move || {
        let f = f;
        let r = (f.0)();
        // SAFETY: the snapshot pushed above is still the active one.
        unsafe { pg_sys::PopActiveSnapshot() };
        if r.is_ok() {
            // SAFETY: ends the transaction started above.
            unsafe { pg_sys::CommitTransactionCommand() };
        }
        Ok(r)
    })
    .catch_others(|e| Err(PgError::from(e)))
    .execute();
    if !matches!(result, Ok(Ok(_))) {
        // SAFETY: rolls back the transaction (asked for, or left by an error).
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    restore_holdoff(holdoff, "transaction");
    result
}

/// Puts `InterruptHoldoffCount` back to `before` after a (sub)transaction that ended in an error.
/// Citus's abort callback runs inside AbortTransaction's HOLD_INTERRUPTS and swallows an ERROR it
/// raised itself (transaction_management.c `SwallowErrors`, around the remote ROLLBACKs: seen when
/// the postmaster died while it waited for the workers, "postmaster was shut down, exiting"); the
/// ERROR set the count to 0 (errfinish), and AbortTransaction's RESUME_INTERRUPTS then took it to
/// 4294967295. With that count every interrupt stays held (SIGTERM would never end the worker)
/// and pgrx's LWLock guards skip their release (see shmem::Release). Our callers run outside any
/// holdoff section of their own, so the count they started with is the right one.
fn restore_holdoff(before: u32, what: &str) {
    // SAFETY: plain global read and write in the main thread, outside any holdoff section of ours.
    let after = unsafe { pg_sys::InterruptHoldoffCount };
    if after != before {
        // SAFETY: as above; no interrupt holdoff section of ours is open here.
        unsafe { pg_sys::InterruptHoldoffCount = before };
        pgrx::log!("pipeline_ingest: a {what} abort left InterruptHoldoffCount at {after} (an abort callback swallowed an error); reset to {before}");
    }
}

/// Runs `f` in a subtransaction of the current transaction: released on success, rolled back on
/// ERROR (the error is returned and the outer transaction goes on).
///
/// `f` allocates in a memory context of its own, deleted when the subtransaction has ended: what
/// an ERROR leaves behind (COPY's buffers and executor state, ~40 kB per failed COPY) is freed at
/// once, not when the batch ends, so isolating 100,000 bad messages in one batch does not hold
/// gigabytes. `R` must therefore not point into PostgreSQL memory (no caller's does).
pub fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, PgError> {
    try_in_subtransaction(|| Ok(f()))
}

/// Like `in_subtransaction`, but `f` decides too: `Err` rolls the subtransaction back as an ERROR
/// does (what `f` wrote before returning it is undone) and is returned.
pub fn try_in_subtransaction<R>(f: impl FnOnce() -> Result<R, PgError>) -> Result<R, PgError> {
    let f = std::panic::AssertUnwindSafe(f);
    // SAFETY: inside a transaction in the main thread; memory context and resource owner are
    // restored after the subtransaction ends, as PL/pgSQL's exception blocks do. The attempt's
    // context is deleted after the subtransaction's resources are released, so nothing refers to
    // it any more.
    unsafe {
        let holdoff = pg_sys::InterruptHoldoffCount;
        let old_context = pg_sys::CurrentMemoryContext;
        let old_owner = pg_sys::CurrentResourceOwner;
        let attempt = pg_sys::AllocSetContextCreateInternal(
            old_context,
            c"pipeline_ingest subtransaction".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(attempt);
        let result = PgTryBuilder::new(move || {
            let f = f;
            (f.0)()
        })
        .catch_others(|e| Err(PgError::from(e)))
        .execute();
        if result.is_ok() {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(old_context);
        pg_sys::CurrentResourceOwner = old_owner;
        pg_sys::MemoryContextDelete(attempt);
        if result.is_err() {
            restore_holdoff(holdoff, "subtransaction");
        }
        result
    }
}

impl PgError {
    /// The message, and its DETAIL in parentheses when there is one: what a dead letter or a
    /// preview row shows as the error (the SQLSTATE goes beside it).
    pub fn message_with_detail(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} ({d})", self.message),
            None => self.message.clone(),
        }
    }

    /// Errors about the data of a message (its values, constraints, triggers rejecting it), as
    /// opposed to errors about the system (privileges, missing tables, resources, locks).
    pub fn is_data_error(&self) -> bool {
        matches!(&self.sqlstate[..2], "22" | "23" | "P0" | "09" | "27" | "2F" | "38" | "39" | "44")
    }
}
