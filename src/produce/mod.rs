//! Producing to Kafka only for transactions that commit: `produce_message` and the `emit_tuple`
//! trigger write to the `pipeline_kafka.outbox` table in the caller's transaction; each
//! database's producer worker sends committed rows and deletes them once the broker acknowledged.

pub mod delivery;
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

/// librdkafka's default message.max.bytes, used when no broker entry sets it.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

thread_local! {
    /// The producer's message size limit, read at this transaction's first message.
    static MESSAGE_MAX_BYTES: Cell<usize> = const { Cell::new(DEFAULT_MESSAGE_MAX_BYTES) };
}

/// Reads what producing checks need from the broker entries, once per producing transaction:
/// the producer's message.max.bytes (as the producer worker will use it). Returns whether a
/// broker is configured.
pub fn load_producer_settings() -> bool {
    let (brokers, config) = crate::catalog::kafka::brokers();
    let limit = match config.get("message.max.bytes") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n as usize),
        Some(serde_json::Value::String(s)) => s.trim().parse::<usize>().ok(),
        _ => None,
    };
    MESSAGE_MAX_BYTES.with(|m| m.set(limit.unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)));
    !brokers.is_empty()
}

/// Refuses (54000) a message the producer could never send: librdkafka refuses one whose size
/// with its record overhead (`ingest_core::broker::record_wire_size`: key, value, headers and up
/// to 36 bytes of varints) exceeds message.max.bytes. `headers`: (name bytes, value bytes).
pub fn check_message_size(message: Option<&[u8]>, key: Option<&[u8]>, headers: &[(usize, usize)]) {
    let size = ingest_core::broker::record_wire_size(
        key.map_or(0, <[u8]>::len),
        message.map_or(0, <[u8]>::len),
        headers.iter().copied(),
    );
    let limit = MESSAGE_MAX_BYTES.with(|m| m.get());
    if size > limit {
        crate::error::raise_with(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("message of {size} bytes (key, value, headers and the record's overhead) exceeds the producer's limit of {limit} bytes"),
            None,
            Some("The limit is the producer setting message.max.bytes (pipeline_kafka.add_broker config; default 1000000); a record takes up to 36 bytes besides its key, value and headers.".into()),
        );
    }
}
