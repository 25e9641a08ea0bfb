//! The `protobuf` format: Protobuf messages in the schema registry's (Confluent) framing, decoded
//! dynamically with the schema the registry holds for the message's id.
//!
//! # Framing
//!
//! Byte 0, the schema id (4 bytes, big-endian), then the **message indexes**: a zig-zag varint
//! count followed by that many zig-zag varint indexes, the path to the message type in the schema
//! file (the first index among the file's top-level messages, each next one among the previous
//! message's nested types, map-entry types included, in declaration order). The single byte 0
//! (count 0) stands for `[0]`, the file's first message. Then the message body.
//!
//! # Schemas
//!
//! [`ProtobufDecoder::insert`] compiles the registry's `.proto` text, with the files it imports
//! (the registry's references: import name and text), in pure Rust (protox); the well-known types
//! under `google/protobuf/` are built in, so a schema may import them without a reference. The
//! decoder keeps [`DEFAULT_CAPACITY`] compiled schemas (the oldest inserted leaves first; the worker
//! fetches an id again when a message needs it).
//!
//! # Values (decided here, documented in README "Formats: Protobuf through a schema registry")
//!
//! Top-level fields fill the columns of the same name (the `.proto` field name, not its JSON
//! camelCase name), as json's fields do. See [`values`] for the mapping; in short: integers ->
//! `Int` (uint64/fixed64 `UInt`), float/double -> `Float`, bool, string -> `Text`, bytes ->
//! `Bytes`, enum -> `Text` of the value's name, google.protobuf.Timestamp -> `TimestampMicros`,
//! wrappers -> their value or `Null`, repeated fields -> a JSON array (a PostgreSQL array literal
//! for an array column), maps and other messages -> a JSON object in the proto3 JSON mapping.
//! Presence: a proto3 field without presence that is absent reads as its default (0, "", false,
//! the enum's first value), as a standard deserializer gives; a field with presence (a message,
//! a wrapper, a Timestamp, proto3 `optional`, a oneof member, any proto2 singular field) that is
//! absent reads as NULL.
//!
//! Errors (the message becomes a dead letter): not the registry's framing 22P02; a message index
//! that is not a varint path to a message type of the schema 22P03; a corrupt body (truncated, a
//! bad wire type, a string that is not UTF-8, nesting deeper than 100) 22P03; a Timestamp out of
//! range 22008; a schema id the registry does not know 22P02; a schema that does not compile
//! (syntax, an import without a reference) 22P02, for every message of that id.

mod values;

#[cfg(test)]
mod tests;

use crate::decode::{confluent_frame, DecodeError, Record, TypedDecoder};
use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use std::collections::{HashMap, HashSet, VecDeque};

/// How many schemas a decoder keeps by default (the oldest inserted leaves first; a message
/// naming it again has it fetched again).
pub const DEFAULT_CAPACITY: usize = 256;
/// Longest message-index path accepted (nesting deeper than this is refused as corrupt).
const MAX_INDEXES: usize = 64;

/// Decodes Confluent-framed Protobuf messages with schemas inserted by id (the same life cycle
/// as the Avro decoder's: `has`, `insert`, `set_missing`, `clear_missing`, `set_array_columns`).
pub struct ProtobufDecoder {
    /// Compiled, or why the schema is unusable (its messages are dead letters with that error).
    schemas: HashMap<u32, Result<FileDescriptor, DecodeError>>,
    order: VecDeque<u32>,
    capacity: usize,
    /// Ids the registry does not know (for the current batch).
    missing: HashSet<u32>,
    /// Columns of an array type: a repeated field into one is a PostgreSQL array literal.
    array_columns: HashSet<String>,
}

impl Default for ProtobufDecoder {
    fn default() -> Self {
        ProtobufDecoder::new(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for ProtobufDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtobufDecoder").field("schemas", &self.order).field("array_columns", &self.array_columns).finish()
    }
}

/// The registry's source files while one schema compiles: the schema itself and its references.
struct Sources {
    files: HashMap<String, String>,
}

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.files.get(name) {
            Some(source) => File::from_source(name, source),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

impl ProtobufDecoder {
    pub fn new(capacity: usize) -> ProtobufDecoder {
        ProtobufDecoder {
            schemas: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            missing: HashSet::new(),
            array_columns: HashSet::new(),
        }
    }

    /// The target columns of an array type (by name): a repeated field filling one is written as
    /// a PostgreSQL array literal instead of a JSON array.
    pub fn set_array_columns(&mut self, columns: impl IntoIterator<Item = String>) {
        self.array_columns = columns.into_iter().collect();
    }

    /// Whether the schema `id` is known (compiled or found unusable): no need to fetch it.
    pub fn has(&self, id: u32) -> bool {
        self.schemas.contains_key(&id)
    }

    /// Marks `id` as not in the registry: its messages are dead letters (22P02).
    pub fn set_missing(&mut self, id: u32) {
        self.missing.insert(id);
    }

    /// Forgets the ids marked missing (each batch asks the registry again).
    pub fn clear_missing(&mut self) {
        self.missing.clear();
    }

    /// Compiles schema `id` from its `.proto` text and its references (the import name the text
    /// uses, and that file's text; references of references listed too) and keeps it. Err: it
    /// does not compile (22P02); it is kept as such, so its messages become dead letters with
    /// that error.
    pub fn insert(&mut self, id: u32, proto_text: &str, references: &[(&str, &str)]) -> Result<(), DecodeError> {
        let compiled = compile(id, proto_text, references);
        let result = compiled.as_ref().map(|_| ()).map_err(Clone::clone);
        self.keep(id, compiled);
        result
    }

    /// Records that schema `id` cannot be used (e.g. it is an Avro schema): its messages become
    /// dead letters with `error`.
    pub fn reject(&mut self, id: u32, error: DecodeError) {
        self.keep(id, Err(error));
    }

    fn keep(&mut self, id: u32, compiled: Result<FileDescriptor, DecodeError>) {
        if self.schemas.insert(id, compiled).is_none() {
            self.order.push_back(id);
            while self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.schemas.remove(&old);
                }
            }
        }
        self.missing.remove(&id);
    }

    /// The key columns' values a Protobuf message key holds, as text (None = NULL), for upserts
    /// (`key_format := 'protobuf'`): the key message's fields of the key columns' names, read as
    /// its values are (a field the key message lacks is 22P02).
    pub fn key_fields(&self, key: &[u8], keys: &[String]) -> Result<Vec<Option<String>>, DecodeError> {
        let mut records = Vec::with_capacity(1);
        self.decode(key, &mut records)
            .map_err(|e| DecodeError::new(e.sqlstate, format!("invalid Protobuf key: {}", e.message)))?;
        let record = records.pop().unwrap_or_default();
        keys.iter()
            .map(|k| match record.get(k) {
                Some(v) => Ok(v.to_text().map(|t| t.into_owned())),
                None => Err(DecodeError::new("22P02", format!("the Protobuf key has no field \"{k}\""))),
            })
            .collect()
    }

    /// The message type and the body of a framed message.
    fn message<'m>(&self, payload: &'m [u8]) -> Result<(MessageDescriptor, &'m [u8]), DecodeError> {
        let framed = confluent_frame(payload)?;
        let id = framed.schema_id;
        let file = match self.schemas.get(&id) {
            Some(Ok(file)) => file,
            Some(Err(e)) => return Err(e.clone()),
            None if self.missing.contains(&id) => {
                return Err(DecodeError::new("22P02", format!("schema id {id} not found in the schema registry")))
            }
            None => {
                return Err(DecodeError::new(
                    "XX000",
                    format!("internal error: schema id {id} was not fetched before the batch was decoded"),
                ))
            }
        };
        let (indexes, body) = message_indexes(framed.body)?;
        let mut desc = file
            .messages()
            .nth(indexes[0])
            .ok_or_else(|| bad_index(&indexes, framed.schema_id))?;
        for &i in &indexes[1..] {
            let child = desc.child_messages().nth(i);
            desc = child.ok_or_else(|| bad_index(&indexes, framed.schema_id))?;
        }
        Ok((desc, body))
    }
}

/// The schema file compiled with its references (google/protobuf/ built in).
fn compile(id: u32, proto_text: &str, references: &[(&str, &str)]) -> Result<FileDescriptor, DecodeError> {
    let main = format!("registry-schema-{id}.proto");
    let mut files: HashMap<String, String> = references.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    files.insert(main.clone(), proto_text.to_string());
    let mut resolver = ChainFileResolver::new();
    resolver.add(Sources { files });
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_source_info(false);
    compiler
        .open_file(&main)
        .map_err(|e| DecodeError::new("22P02", format!("Protobuf schema id {id} does not compile: {}", one_line(&e.to_string()))))?;
    let file = compiler
        .descriptor_pool()
        .get_file_by_name(&main)
        .ok_or_else(|| DecodeError::new("22P02", format!("Protobuf schema id {id} did not compile to a file")))?;
    if file.messages().len() == 0 {
        return Err(DecodeError::new("22P02", format!("Protobuf schema id {id} defines no message type")));
    }
    Ok(file)
}

fn bad_index(indexes: &[usize], id: u32) -> DecodeError {
    DecodeError::new(
        "22P03",
        format!("message index {indexes:?} names no message type of Protobuf schema id {id}"),
    )
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl TypedDecoder for ProtobufDecoder {
    fn holds(&self, id: u32) -> bool {
        self.has(id)
    }

    fn decode<'m>(&self, payload: &'m [u8], out: &mut Vec<Record<'m>>) -> Result<(), DecodeError> {
        let (desc, body) = self.message(payload)?;
        let msg = DynamicMessage::decode(desc, body).map_err(|e| {
            DecodeError::new(
                "22P03",
                format!(
                    "corrupt Protobuf message body: {}",
                    one_line(&e.to_string())
                ),
            )
        })?;
        out.push(values::record(&msg, &self.array_columns)?);
        Ok(())
    }

    fn field_types(&self, payload: &[u8]) -> Vec<(String, &'static str)> {
        self.message(payload).map(|(desc, _)| values::column_types(&desc)).unwrap_or_default()
    }
}

/// A zig-zag varint of at most 32 bits (as the Confluent serializers write them) at `buf[*pos]`.
fn zigzag32(buf: &[u8], pos: &mut usize) -> Result<i32, DecodeError> {
    let mut n: u32 = 0;
    for shift in (0..35).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return Err(DecodeError::new(
                "22P03",
                "the Protobuf message indexes end before their last varint",
            ));
        };
        *pos += 1;
        n |= u32::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            if shift == 28 && b > 0x0f {
                break;
            }
            return Ok((n >> 1) as i32 ^ -((n & 1) as i32));
        }
    }
    Err(DecodeError::new(
        "22P03",
        "a Protobuf message-index varint is longer than 32 bits",
    ))
}

/// The message indexes after the schema id, and the body after them.
pub(crate) fn message_indexes(body: &[u8]) -> Result<(Vec<usize>, &[u8]), DecodeError> {
    let mut pos = 0;
    let count = zigzag32(body, &mut pos)?;
    if count == 0 {
        return Ok((vec![0], &body[pos..]));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|&c| c <= MAX_INDEXES)
        .ok_or_else(|| {
            DecodeError::new(
                "22P03",
                format!("a Protobuf message-index count of {count} (expected 0 to {MAX_INDEXES})"),
            )
        })?;
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let i = zigzag32(body, &mut pos)?;
        indexes.push(usize::try_from(i).map_err(|_| {
            DecodeError::new("22P03", format!("a negative Protobuf message index {i}"))
        })?);
    }
    Ok((indexes, &body[pos..]))
}
