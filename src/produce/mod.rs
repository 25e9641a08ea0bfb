//! Producing to Kafka only for transactions that commit: `produce_message` and the `emit_tuple`
//! trigger write to the `pipeline_kafka.outbox` table in the caller's transaction; each
//! database's producer worker sends committed rows and deletes them once the broker acknowledged.

pub mod emit;
pub mod outbox;
pub mod worker;

use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};
use std::cell::Cell;

thread_local! {
    /// Whether this transaction already asked for the producer to be woken at commit.
    static WAKE_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// True until this transaction has produced its first message (later calls skip per-transaction
/// checks).
pub fn first_in_transaction() -> bool {
    !WAKE_REGISTERED.with(|w| w.get())
}

/// Wakes this database's producer when the transaction commits (once per transaction, however
/// many messages it produced). Rolled-back transactions wake no one and leave no rows.
pub fn wake_producer_at_commit() {
    if WAKE_REGISTERED.with(|w| w.replace(true)) {
        return;
    }
    // SAFETY: MyDatabaseId is set for the whole life of a connected backend.
    let dboid = unsafe { pg_sys::MyDatabaseId };
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        WAKE_REGISTERED.with(|w| w.set(false));
        crate::shmem::wake_producer(dboid);
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || WAKE_REGISTERED.with(|w| w.set(false)));
}
