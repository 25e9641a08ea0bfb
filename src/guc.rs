//! Settings (`pipeline_ingest.*`).

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

/// Database the launcher connects to (to list databases; it shows in pg_stat_activity there).
pub static LAUNCHER_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));
/// How long SQL functions wait for a broker to answer (metadata, watermarks), in milliseconds.
/// Superuser-only, and capped: a role must not hold a backend (and its locks) on a broker for long.
pub static BROKER_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5000);
/// How often the launcher looks for databases where the extension was created, in seconds.
pub static LAUNCHER_NAPTIME_S: GucSetting<i32> = GucSetting::<i32>::new(10);
/// How often a consumer worker checks its topic for new partitions, in seconds.
pub static METADATA_REFRESH_S: GucSetting<i32> = GucSetting::<i32>::new(30);
/// How long a worker goes on with a source that keeps failing, no batch committed, before it
/// leaves to start again with a new client, in seconds (worker::pipeline).
pub static SOURCE_RESTART_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(90);
/// How many consumer and producer workers one database may run at once (its supervisor aside).
pub static MAX_WORKERS_PER_DATABASE: GucSetting<i32> = GucSetting::<i32>::new(8);
/// Whether a consumer commits its batch as soon as the source has nothing more available right
/// now (on), or only when the batch is full or its timeout has passed (off: pipeline_kafka's way).
pub static FLUSH_WHEN_CAUGHT_UP: GucSetting<bool> = GucSetting::<bool>::new(true);
/// Whether consumer workers take the fast path (issue 23: messages parsed and converted into COPY
/// BINARY rows on the reader thread, sink::fast); read when a worker starts.
pub static FAST_PATH: GucSetting<bool> = GucSetting::<bool>::new(true);
/// The most bytes of messages one consumer batch may hold, in kB, whatever its maxbytes; its
/// batchsize is capped at this / `MESSAGE_COST` messages. Set in the server's configuration: it
/// bounds what any role's consumer makes its worker hold.
pub static MAX_BATCH_BYTES_KB: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024);
/// Bytes of bookkeeping one message in a batch costs besides its key and value (the message, its
/// prepared item, allocator overhead, rounded up): `max_batch_bytes` bounds a batch's count too.
pub const MESSAGE_COST: usize = 256;

pub fn init() {
    GucRegistry::define_string_guc(
        c"pipeline_ingest.database",
        c"Database the pipeline_ingest launcher connects to.",
        c"The launcher lists databases from here and starts a supervisor in each that has the extension.",
        &LAUNCHER_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pipeline_ingest.broker_timeout",
        c"Time limit for broker requests made by SQL functions.",
        c"consume_begin and topic checks fail with an error when the broker does not answer in time.",
        &BROKER_TIMEOUT_MS,
        100,
        60_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pipeline_ingest.launcher_naptime",
        c"How often the launcher checks databases for the extension.",
        c"",
        &LAUNCHER_NAPTIME_S,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pipeline_ingest.metadata_refresh",
        c"How often consumers look for partitions added to their topic.",
        c"",
        &METADATA_REFRESH_S,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pipeline_ingest.source_restart_after",
        c"How long a consumer worker whose source keeps failing goes on before it starts again with a new client.",
        c"Counted from the first failure with no batch committed since; the new worker resumes from the committed positions.",
        &SOURCE_RESTART_AFTER_S,
        5,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pipeline_ingest.max_workers_per_database",
        c"How many consumer and producer workers one database may run at once.",
        c"Bounds the background worker slots one database takes (its supervisor is not counted); \
          a consumer that gets no worker shows state 'waiting' in pipeline_kafka.consumer_status.",
        &MAX_WORKERS_PER_DATABASE,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pipeline_ingest.flush_when_caught_up",
        c"Commit a consumer's batch as soon as nothing more is available right now.",
        c"On: a batch is committed when the source has no more messages at hand, or when it is full \
          (batchsize, maxbytes) or its timeout has passed; a low-rate stream is visible at once and a \
          backlog goes in batches of batchsize. Off: only full batches or the timeout commit.",
        &FLUSH_WHEN_CAUGHT_UP,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pipeline_ingest.fast_path",
        c"Parse and convert csv, text, json, Avro and Protobuf messages into binary rows on the reader thread.",
        c"On: a plain appending consumer's worker converts messages into COPY BINARY rows on its \
          reader thread and only inserts on its main thread; what it cannot convert exactly takes \
          the text path. Off: every batch takes the text path. Workers read it when they start.",
        &FAST_PATH,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pipeline_ingest.max_batch_bytes",
        c"The most bytes of messages one consumer batch may hold, whatever its maxbytes.",
        c"Caps every consumer's maxbytes, and its batchsize at this divided by 256 (the bookkeeping \
          a message costs), so that no role's consumer makes its worker hold more memory. Batches \
          follow a reload; librdkafka's prefetch, bounded by the same figure, a worker restart.",
        &MAX_BATCH_BYTES_KB,
        64,
        2_097_151,
        GucContext::Sighup,
        GucFlags::UNIT_KB,
    );
    // SAFETY: called from _PG_init in the postmaster.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"pipeline_ingest".as_ptr()) };
}

/// `pipeline_ingest.max_batch_bytes` in bytes.
pub fn max_batch_bytes() -> usize {
    MAX_BATCH_BYTES_KB.get().max(64) as usize * 1024
}

pub fn launcher_database() -> String {
    LAUNCHER_DATABASE.get().and_then(|c| c.into_string().ok()).unwrap_or_else(|| "postgres".to_string())
}
