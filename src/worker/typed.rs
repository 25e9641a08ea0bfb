//! A consumer's schema registry, for its typed decoder (sink::typed): the worker, a dead-letter
//! retry and a preview attach the registry the consumer names to its `Target` before writing; the
//! sink then fetches the schemas a batch needs through it (`SchemaSource`).

use crate::catalog::registries;
use crate::sink::target::Target;
use ingest_core::decode::{FetchedSchema, SchemaSource};
use ingest_registry::{Client, RegistryError};
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

/// Gives `target`'s decoder (if its format has one) the registry whose URL the consumer stores
/// (`url`). Inside a transaction (the registry's credentials are read from the catalog). A
/// registry that cannot be used is recorded in the target: every batch that needs a schema then
/// fails with that error (retried, in last_error), nothing dead-lettered.
pub fn attach(target: &mut Target, url: Option<&str>) {
    let Some(typed) = target.typed.as_mut() else { return };
    typed.registry_name = url.unwrap_or_default().to_string();
    match registries::registry_client_for(url) {
        Ok(client) => typed.registry = Some(Arc::new(Registry(client))),
        Err(e) => typed.registry_error = Some(format!("{e} [SQLSTATE {}]", e.sqlstate())),
    }
}

/// `attach` with the registry the stored consumer names (read with its features).
pub fn attach_stored(target: &mut Target) {
    if target.typed.is_some() {
        let url = target.features.schema_registry.clone();
        attach(target, url.as_deref());
    }
}
