//! pipeline_ingest: Apache Kafka (and AWS Kinesis) into PostgreSQL tables, exactly once.
//!
//! Layout: `api` is the SQL surface (thin), `catalog` the typed access to the extension's tables,
//! `worker` the launcher / per-database supervisor / consumer processes, `sources` the systems we
//! read from behind one trait, `sink` the COPY bridge. Formats and batching are pure Rust in the
//! `ingest-core` crate.
#![deny(unsafe_op_in_unsafe_fn)]

use pgrx::prelude::*;

mod api;
mod catalog;
mod citus;
mod compat;
mod error;
mod guc;
mod produce;
mod rel;
mod shmem;
mod sink;
mod sources;
mod worker;
mod xact;

pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// Runs when the library is loaded. It must be preloaded: workers and shared memory are set up
/// here, so loading it any other way (CREATE EXTENSION without the setting) is refused.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: plain reads of PostgreSQL globals in the postmaster / backend main thread.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if !preloading {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pipeline_ingest must be loaded via shared_preload_libraries",
            "_PG_init",
        )
        .set_hint("Add pipeline_ingest to shared_preload_libraries in postgresql.conf and restart PostgreSQL.")
        .report(PgLogLevel::ERROR);
        unreachable!();
    }
    // A Rust panic becomes an ERROR whose DETAIL would carry a backtrace (paths, symbols) when the
    // server was started with RUST_BACKTRACE set: no backtraces in what clients see, unless
    // RUST_LIB_BACKTRACE asks for them explicitly. Set here, in the postmaster before any backend
    // or worker is forked and before any thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    guc::init();
    shmem::init();
    shmem::init_status();
    // SAFETY: as above.
    let binary_upgrade = unsafe { pg_sys::IsBinaryUpgrade };
    if !binary_upgrade {
        worker::launcher::register();
    }
}
