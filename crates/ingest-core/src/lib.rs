//! The PostgreSQL-free heart of pipeline_ingest: how messages become COPY input, how a batch keeps
//! its offsets, how broker addresses are checked and how retries back off. Everything here is
//! plain Rust, tested with `cargo test -p ingest-core`, and knows nothing of pgrx.

pub mod backoff;
pub mod batch;
pub mod broker;
pub mod format;
pub mod json;
pub mod keys;
pub mod kinesis;
pub mod metadata;
pub mod policy;
pub mod prepare;
pub mod settings;
