//! Apache Kafka through librdkafka (the rdkafka crate, bundled library), in four parts that import
//! each other in one direction only (source -> reader -> copy; source and probe -> settings):
//! - `settings`: client settings, the client context, configuration errors;
//! - `probe`: the SQL side's short-lived client (metadata, watermarks, offsets, preview fetch);
//! - `copy`: copying a fetched message into a batch message;
//! - `reader` and `source`: a worker's consumer, its reader thread and the pipeline `Source`.
//!
//! This file only names what the rest of the extension uses.

mod copy;
mod probe;
mod reader;
mod settings;
mod source;

pub use probe::{time_ms_from_us, Probe, ProbeError};
pub use settings::{check_settings, client_config, config_error, producer_config};
pub use source::KafkaSource;
