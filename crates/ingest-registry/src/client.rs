//! The registry client: `GET /schemas/ids/{id}` with every reference fetched
//! (`GET /subjects/{s}/versions/{v}`, transitively) so that a schema with imports can be compiled,
//! cached by id (bounded); `POST /subjects/{s}/versions` to register.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::cache::Lru;
use crate::config::RegistryConfig;
use crate::http::{segment, Http};
use crate::RegistryError;

/// How many schemas (by id) and referenced schemas (by subject and version) a client keeps.
pub const CACHE_ENTRIES: usize = 1000;
/// The most references one schema may pull in (transitively): a guard against reference loops.
const MAX_REFERENCES: usize = 256;

/// The kind of a registered schema (`schemaType`; absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaType {
    Avro,
    Protobuf,
    Json,
}

impl SchemaType {
    /// The registry's name: `AVRO`, `PROTOBUF`, `JSON`.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
            SchemaType::Json => "JSON",
        }
    }

    /// Parses a registry's `schemaType` (case-insensitive; none is Avro).
    pub fn parse(s: Option<&str>) -> Option<SchemaType> {
        match s.map(str::to_ascii_uppercase).as_deref() {
            None | Some("AVRO") => Some(SchemaType::Avro),
            Some("PROTOBUF") => Some(SchemaType::Protobuf),
            Some("JSON") => Some(SchemaType::Json),
            Some(_) => None,
        }
    }
}

/// A reference as registered: the name the schema uses for it (a Protobuf import path, an Avro
/// full name) and the subject and version holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i64,
}

/// A reference with its schema text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedReference {
    pub name: String,
    pub subject: String,
    pub version: i64,
    pub schema: String,
}

/// A schema as the registry holds it under an id, with every reference it needs (transitively,
/// each before the schemas that refer to it, each name once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    pub id: u32,
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<ResolvedReference>,
}

/// A subject version: its schema and its own references (not yet resolved).
#[derive(Debug)]
struct Version {
    schema: String,
    references: Vec<Reference>,
}

/// A client of one registry. Safe to share between threads; every request is bounded by the
/// configured timeout.
pub struct Client {
    http: Http,
    by_id: Mutex<Lru<u32, Arc<RegisteredSchema>>>,
    by_version: Mutex<Lru<(String, i64), Arc<Version>>>,
    requests: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("requests", &self.requests()).finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: RegistryConfig) -> Result<Client, RegistryError> {
        Ok(Client {
            http: Http::new(&config)?,
            by_id: Mutex::new(Lru::new(CACHE_ENTRIES)),
            by_version: Mutex::new(Lru::new(CACHE_ENTRIES)),
            requests: AtomicU64::new(0),
        })
    }

    /// How many HTTP requests this client has made (to check that lookups are cached).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The schema registered under `id`, with its references resolved. Cached: the registry is
    /// asked once per id (while the id stays among the [`CACHE_ENTRIES`] most recently used).
    pub fn schema_by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        if let Some(s) = lock(&self.by_id).get(&id) {
            return Ok(s);
        }
        let v = self.get(&format!("/schemas/ids/{id}"))?;
        let schema = text_field(&v, "schema", &format!("schema id {id}"))?;
        let kind = v.get("schemaType").and_then(Value::as_str);
        let schema_type = SchemaType::parse(kind).ok_or_else(|| {
            RegistryError::Refused(format!("schema id {id} has an unsupported schemaType {:?}", kind.unwrap_or("")))
        })?;
        let refs = parse_references(&v, &format!("schema id {id}"))?;
        let mut resolved = Vec::new();
        let mut seen = HashSet::new();
        self.resolve(&refs, &mut resolved, &mut seen, 0)?;
        let s = Arc::new(RegisteredSchema { id, schema_type, schema, references: resolved });
        lock(&self.by_id).insert(id, s.clone());
        Ok(s)
    }

    /// Registers `schema` under `subject` (`POST /subjects/{subject}/versions`) and returns its
    /// id (the existing id when the registry already has the same schema there).
    pub fn register(
        &self,
        subject: &str,
        schema: &str,
        schema_type: SchemaType,
        references: &[Reference],
    ) -> Result<u32, RegistryError> {
        let refs: Vec<Value> = references
            .iter()
            .map(|r| json!({"name": r.name, "subject": r.subject, "version": r.version}))
            .collect();
        let mut body = json!({"schema": schema, "schemaType": schema_type.as_str()});
        if !refs.is_empty() {
            body["references"] = Value::Array(refs);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let v = self.http.post(&format!("/subjects/{}/versions", segment(subject)), &body)?;
        id_field(&v, &format!("registering under subject {subject:?}"))
    }

    /// Appends each reference after its own references (depth first), each name once.
    fn resolve(
        &self,
        refs: &[Reference],
        out: &mut Vec<ResolvedReference>,
        seen: &mut HashSet<String>,
        depth: usize,
    ) -> Result<(), RegistryError> {
        for r in refs {
            if !seen.insert(r.name.clone()) {
                continue;
            }
            if depth > 32 || seen.len() > MAX_REFERENCES {
                return Err(RegistryError::Refused(format!(
                    "schema references nest deeper than 32 levels or number more than {MAX_REFERENCES}"
                )));
            }
            let version = self.version(&r.subject, r.version)?;
            self.resolve(&version.references, out, seen, depth + 1)?;
            out.push(ResolvedReference {
                name: r.name.clone(),
                subject: r.subject.clone(),
                version: r.version,
                schema: version.schema.clone(),
            });
        }
        Ok(())
    }

    fn version(&self, subject: &str, version: i64) -> Result<Arc<Version>, RegistryError> {
        let key = (subject.to_string(), version);
        if let Some(v) = lock(&self.by_version).get(&key) {
            return Ok(v);
        }
        let what = format!("subject {subject:?} version {version}");
        let v = self.get(&format!("/subjects/{}/versions/{version}", segment(subject)))?;
        let entry = Arc::new(Version { schema: text_field(&v, "schema", &what)?, references: parse_references(&v, &what)? });
        lock(&self.by_version).insert(key, entry.clone());
        Ok(entry)
    }

    fn get(&self, path: &str) -> Result<Value, RegistryError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.http.get(path)
    }
}

/// A poisoned cache lock only means another thread panicked mid-insert; the map is still sound.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn malformed(what: &str, field: &str) -> RegistryError {
    RegistryError::Outage(format!("the registry's answer for {what} has no valid \"{field}\""))
}

fn text_field(v: &Value, field: &str, what: &str) -> Result<String, RegistryError> {
    v.get(field).and_then(Value::as_str).map(str::to_string).ok_or_else(|| malformed(what, field))
}

fn id_field(v: &Value, what: &str) -> Result<u32, RegistryError> {
    v.get("id").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| malformed(what, "id"))
}

fn parse_references(v: &Value, what: &str) -> Result<Vec<Reference>, RegistryError> {
    let Some(list) = v.get("references").filter(|r| !r.is_null()) else { return Ok(Vec::new()) };
    let list = list.as_array().ok_or_else(|| malformed(what, "references"))?;
    list.iter()
        .map(|r| {
            Ok(Reference {
                name: text_field(r, "name", what)?,
                subject: text_field(r, "subject", what)?,
                version: r.get("version").and_then(Value::as_i64).ok_or_else(|| malformed(what, "references.version"))?,
            })
        })
        .collect()
}
