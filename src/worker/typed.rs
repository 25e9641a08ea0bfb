//! A consumer's schema registry, for its typed decoder (sink::typed): the worker (and
//! retry_dead_letters) attach the registry the consumer names to its `Target` before writing; the
//! sink then fetches the schemas a batch needs through it (`SchemaSource`).

use crate::sink::target::Target;
use ingest_core::decode::{FetchedSchema, SchemaSource};
use ingest_registry::{Client, RegistryConfig, RegistryError};
use std::sync::Arc;

/// The registry client as the decoder's schema source: 404 is "no such id" (dead letters), every
/// other failure an outage (the batch waits).
struct Registry(Client);

impl SchemaSource for Registry {
    fn schema(&self, id: u32) -> Result<Option<FetchedSchema>, String> {
        match self.0.schema_by_id(id) {
            Ok(s) => Ok(Some(FetchedSchema {
                schema_type: s.schema_type.as_str().to_string(),
                schema: s.schema.clone(),
                references: s.references.iter().map(|r| r.schema.clone()).collect(),
                reference_names: s.references.iter().map(|r| r.name.clone()).collect(),
            })),
            Err(RegistryError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Gives `target`'s decoder the registry at `url` with its stored `config` (credentials, TLS).
/// Err: the configuration is unusable (the message names no secret).
pub fn attach(target: &mut Target, url: &str, config: Option<&serde_json::Value>) -> Result<(), String> {
    let Some(typed) = target.typed.as_mut() else { return Ok(()) };
    let config = RegistryConfig::from_json(url, config).map_err(|e| e.to_string())?;
    let client = Client::new(config).map_err(|e| e.to_string())?;
    typed.registry = Some(Arc::new(Registry(client)));
    typed.registry_name = url.to_string();
    Ok(())
}
