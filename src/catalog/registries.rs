//! Schema registries (`pipeline_kafka.schema_registries`, superusers only: its config holds
//! credentials): the rows add_schema_registry / remove_schema_registry write, which registry a
//! consumer of a schema-registry format uses, and the client a worker builds from the catalog.

use super::spi;
use crate::shmem::SourceKind;
use crate::xact::as_superuser;
use ingest_registry::{Client, RegistryConfig, RegistryError};
use pgrx::prelude::*;

/// Adds a registry (the URL normalized, the config checked by the caller).
pub fn insert(url: &str, config: &str) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            "INSERT INTO pipeline_kafka.schema_registries (url, config) VALUES ($1, $2::jsonb)",
            &[url.into(), config.into()],
        ))
    });
}

/// Removes a registry; false when there was none.
pub fn delete(url: &str) -> bool {
    as_superuser(|| {
        spi(Spi::get_one_with_args::<bool>(
            "WITH d AS (DELETE FROM pipeline_kafka.schema_registries WHERE url = $1 RETURNING 1) SELECT count(*) > 0 FROM d",
            &[url.into()],
        ))
    })
    .unwrap_or(false)
}

/// The URLs of every registry added, in order.
pub fn urls() -> Vec<String> {
    as_superuser(|| {
        spi(Spi::connect(|c| {
            c.select("SELECT url FROM pipeline_kafka.schema_registries ORDER BY url", None, &[])?
                .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()
        }))
    })
}

/// The ids of the consumers (both systems) that read schemas from `url`.
pub fn users(url: &str) -> Vec<(SourceKind, i32)> {
    let mut out = Vec::new();
    for sys in [SourceKind::Kafka, SourceKind::Kinesis] {
        let ids: Vec<i32> = as_superuser(|| {
            spi(Spi::connect(|c| {
                c.select(
                    &format!("SELECT id FROM {} WHERE schema_registry = $1 ORDER BY id", sys.consumers()),
                    None,
                    &[url.into()],
                )?
                .map(|row| row.get::<i32>(1).map(Option::unwrap_or_default))
                .collect::<Result<Vec<_>, _>>()
            }))
        });
        out.extend(ids.into_iter().map(|id| (sys, id)));
    }
    out
}

/// A registry's stored config (None: no such registry).
fn config(url: &str) -> Option<serde_json::Value> {
    let text = as_superuser(|| {
        spi(Spi::get_one_with_args::<String>(
            "SELECT config::text FROM pipeline_kafka.schema_registries WHERE url = $1",
            &[url.into()],
        ))
    })?;
    serde_json::from_str(&text).ok()
}

/// Why a worker could not build its registry client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The consumer names no registry, or one removed since (SQLSTATE 55000).
    #[error("{0}")]
    Missing(String),
    /// The stored config cannot be used, or TLS cannot be set up (SQLSTATE 22023).
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

#[allow(dead_code)] // for the decoders, which record it with their errors
impl ClientError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ClientError::Missing(_) => "55000",
            ClientError::Registry(_) => "22023",
        }
    }
}

/// The registry client of a consumer whose format needs one (`schema_registry`: its stored
/// URL). Reads the credentials as the bootstrap superuser: call it in a transaction, before the
/// worker switches to the consumer's owner. Errors carry no secret.
pub fn registry_client_for(schema_registry: Option<&str>) -> Result<Client, ClientError> {
    let url = schema_registry.ok_or_else(|| ClientError::Missing("the consumer names no schema registry (run consume_begin again)".into()))?;
    let cfg = config(url).ok_or_else(|| {
        ClientError::Missing(format!("schema registry \"{url}\" does not exist (removed since; add it again or run consume_begin with another)"))
    })?;
    Ok(Client::new(RegistryConfig::from_json(url, Some(&cfg))?)?)
}
