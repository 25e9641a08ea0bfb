//! A blocking client of a Confluent-compatible schema registry (Apicurio Registry's
//! `/apis/ccompat/v7`, Confluent Schema Registry): schemas by id with their references resolved,
//! registration, and a bounded cache so that a schema is fetched once per id, never per message.
//! Plain Rust, tested with `cargo test -p ingest-registry`; it knows nothing of PostgreSQL.

mod cache;
mod client;
mod config;
mod http;

pub use client::{Client, Reference, RegisteredSchema, ResolvedReference, SchemaType};
pub use config::{normalize_url, Auth, RegistryConfig, CONFIG_KEYS};

/// What went wrong talking to the registry. The three kinds call for three reactions: bad data
/// (dead-letter the message), an outage (wait and retry, nothing dead-lettered), a configuration
/// error (the consumer cannot go on until someone fixes it). Messages never carry a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry does not know the schema (404, error code 40403 for an id): the message that
    /// named it is bad data.
    #[error("schema registry: {0}")]
    NotFound(String),
    /// The registry cannot be reached, timed out, or answered 5xx / 429: try again later.
    #[error("schema registry unavailable: {0}")]
    Outage(String),
    /// The registry refused the request (401, 403, other 4xx) or the client's configuration is
    /// unusable (bad CA file, TLS failure): a configuration error.
    #[error("schema registry refused the request: {0}")]
    Refused(String),
    /// The configuration given to [`RegistryConfig::from_json`] is invalid (SQLSTATE 22023 at the
    /// SQL boundary).
    #[error("invalid schema registry configuration: {0}")]
    InvalidConfig(String),
}

impl RegistryError {
    /// Whether retrying later may succeed (an outage), as opposed to bad data or configuration.
    pub fn is_outage(&self) -> bool {
        matches!(self, RegistryError::Outage(_))
    }
}
