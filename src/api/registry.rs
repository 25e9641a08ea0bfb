//! `pipeline_kafka.add_schema_registry` / `remove_schema_registry`, and which registry a consumer
//! of a schema-registry format (avro, protobuf, debezium-avro) reads schemas from. The server
//! fetches from a registry's URL with its credentials, so adding one is for superusers (EXECUTE
//! revoked from PUBLIC; a superuser may grant it, but a CA file stays superuser-only); the table
//! is readable by superusers only and no message quotes a credential.

use crate::catalog::registries;
use crate::error::{raise, raise_with};
use ingest_registry::{normalize_url, RegistryConfig, RegistryError};
use pgrx::prelude::*;

/// A registry URL as stored (22023 when it is not an http(s) URL).
fn url_arg(url: &str) -> String {
    normalize_url(url).unwrap_or_else(|e| raise_registry(e))
}

#[track_caller]
fn raise_registry(e: RegistryError) -> ! {
    match e {
        RegistryError::InvalidConfig(m) => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, m),
        other => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, other.to_string()),
    }
}

/// The registry a consumer of a schema-registry format uses: the one named (22023 when it was not
/// added), else the only one added (55000 when there is none, 22023 when there are several).
pub fn resolve(given: Option<&str>) -> String {
    let all = registries::urls();
    match given {
        Some(g) => {
            let url = url_arg(g);
            if !all.contains(&url) {
                raise_with(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("schema registry \"{url}\" does not exist"),
                    None,
                    Some("A superuser adds one with pipeline_kafka.add_schema_registry(url).".into()),
                );
            }
            url
        }
        None => match all.as_slice() {
            [only] => only.clone(),
            [] => raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "no schema registry is configured",
                None,
                Some("A superuser adds one with pipeline_kafka.add_schema_registry(url).".into()),
            ),
            several => raise_with(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("{} schema registries are configured: name one with schema_registry", several.len()),
                None,
                None,
            ),
        },
    }
}

#[pg_schema]
mod pipeline_kafka {
    use super::*;
    use crate::api::{is_superuser, JsonbArg};
    use crate::error::required;

    /// Adds a schema registry (its Confluent-compatible API, e.g.
    /// `http://host:8080/apis/ccompat/v7`) for consumers of the formats avro, protobuf and
    /// debezium-avro. `config`: `basic_auth` ('user:password') or `username` and `password`,
    /// `bearer_token`, `ca_file`, `insecure`, `timeout_ms`; stored for superusers' eyes only.
    #[pg_extern(volatile, parallel_unsafe)]
    fn add_schema_registry(url: Option<&str>, config: default!(Option<JsonbArg>, "NULL")) {
        let url = url_arg(required(url, "url"));
        let value = match config.map(|c| c.parse("config")) {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(v) => v,
        };
        let cfg = RegistryConfig::from_json(&url, Some(&value)).unwrap_or_else(|e| raise_registry(e));
        // A granted role may add a registry, but not make the server read a file of its choice.
        if cfg.ca_file.is_some() && !is_superuser() {
            raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, "only superusers may give ca_file");
        }
        if registries::urls().contains(&url) {
            raise(PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT, format!("schema registry \"{url}\" already exists"));
        }
        registries::insert(&url, &value.to_string());
    }

    /// Removes a schema registry; refused (55006) while a consumer of this database uses it.
    #[pg_extern(volatile, parallel_unsafe)]
    fn remove_schema_registry(url: Option<&str>) {
        let url = url_arg(required(url, "url"));
        let users = registries::users(&url);
        if !users.is_empty() {
            let ids: Vec<String> = users.iter().map(|(sys, id)| format!("{} consumer {id}", if *sys == crate::shmem::SourceKind::Kafka { "Kafka" } else { "Kinesis" })).collect();
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                format!("schema registry \"{url}\" is used by {} consumer(s)", users.len()),
                Some(format!("Used by: {}.", ids.join(", "))),
                Some("Drop those consumers, or run consume_begin with another schema_registry, first.".into()),
            );
        }
        if !registries::delete(&url) {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("schema registry \"{url}\" does not exist"));
        }
    }
}
