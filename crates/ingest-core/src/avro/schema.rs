//! Avro schemas (the writer's, as the registry holds them) parsed into a flat list of nodes:
//! named types are entries referred to by index, so recursive types need no pointers and a
//! schema is parsed once per id, never per message.
//!
//! Logical types are resolved here: a logical type on the wrong base type, or a decimal whose
//! precision/scale are invalid, is ignored as the specification says (the base type is decoded).

use serde_json::Value as Json;
use std::collections::HashMap;

/// One schema node; `usize` fields index `Schema::nodes`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    /// int: days since 1970-01-01.
    Date,
    /// int: milliseconds after midnight.
    TimeMillis,
    /// long: microseconds after midnight.
    TimeMicros,
    /// long: an instant, in milliseconds / microseconds since the epoch (UTC).
    TimestampMillis,
    TimestampMicros,
    /// long: a wall-clock time, milliseconds / microseconds since 1970-01-01 00:00:00.
    LocalTimestampMillis,
    LocalTimestampMicros,
    /// long: Debezium's io.debezium.time.NanoTimestamp (a wall-clock time in nanoseconds) and
    /// NanoTime (nanoseconds after midnight); read only with Kafka Connect names (`connect`).
    LocalTimestampNanos,
    TimeNanos,
    /// long: io.debezium.time.MicroDuration (microseconds), read as interval text.
    MicroDuration,
    /// record {scale: int, value: bytes}: Debezium's io.debezium.data.VariableScaleDecimal.
    VariableScaleDecimal,
    /// string holding a UUID.
    Uuid,
    /// fixed(16) holding a UUID's 16 bytes.
    FixedUuid,
    /// bytes (`fixed: None`) or fixed(n): a two's complement big-endian unscaled integer.
    Decimal { fixed: Option<usize>, scale: i32 },
    Fixed(usize),
    /// fixed(12): months, days, milliseconds (three little-endian unsigned 32-bit integers).
    Duration,
    Enum(Vec<String>),
    Array(usize),
    Map(usize),
    Union(Vec<usize>),
    Record(Vec<(String, usize)>),
}

impl Node {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Boolean => "boolean",
            Node::Int | Node::Date | Node::TimeMillis => "int",
            Node::Long
            | Node::TimeMicros
            | Node::TimestampMillis
            | Node::TimestampMicros
            | Node::LocalTimestampMillis
            | Node::LocalTimestampMicros
            | Node::LocalTimestampNanos
            | Node::TimeNanos
            | Node::MicroDuration => "long",
            Node::Float => "float",
            Node::Double => "double",
            Node::Bytes | Node::Decimal { fixed: None, .. } => "bytes",
            Node::String | Node::Uuid => "string",
            Node::FixedUuid | Node::Decimal { fixed: Some(_), .. } | Node::Fixed(_) | Node::Duration => "fixed",
            Node::Enum(_) => "enum",
            Node::Array(_) => "array",
            Node::Map(_) => "map",
            Node::Union(_) => "union",
            Node::Record(_) | Node::VariableScaleDecimal => "record",
        }
    }
}

/// A parsed schema: its nodes and the root's index.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub(crate) nodes: Vec<Node>,
    pub(crate) root: usize,
}

impl Schema {
    /// Parses a schema's JSON text (the canonical or any valid form).
    pub fn parse(text: &str) -> Result<Schema, String> {
        Schema::parse_with(&[], text)
    }

    /// `parse_with`, and with `connect` the Kafka Connect type names the Avro converter writes
    /// (`connect.name`, Debezium's temporal types and VariableScaleDecimal) read as their values:
    /// io.debezium.time.Date -> date; Time/MicroTime/NanoTime -> time of day;
    /// Timestamp/MicroTimestamp/NanoTimestamp -> a wall-clock timestamp (milli/micro/nanoseconds);
    /// MicroDuration -> interval text.
    pub fn parse_connect(references: &[String], text: &str, connect: bool) -> Result<Schema, String> {
        let mut p = Parser { nodes: Vec::new(), names: HashMap::new(), depth: 0, connect };
        for (i, r) in references.iter().enumerate() {
            let json: Json = serde_json::from_str(r).map_err(|e| format!("reference {} is not JSON: {e}", i + 1))?;
            p.parse(&json, None).map_err(|e| format!("reference {}: {e}", i + 1))?;
        }
        let json: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let root = p.parse(&json, None)?;
        Ok(Schema { nodes: p.nodes, root })
    }

    /// The PostgreSQL type of a new column for a field of type `node` (`auto_evolve`; the
    /// README's Avro mapping): a union of null and one type is that type's, a union of several
    /// types text; None for null.
    pub(crate) fn column_type(&self, node: usize) -> Option<&'static str> {
        Some(match &self.nodes[node] {
            Node::Null => return None,
            Node::Boolean => "boolean",
            Node::Int => "integer",
            Node::Long => "bigint",
            Node::Float => "real",
            Node::Double => "double precision",
            Node::Bytes | Node::Fixed(_) => "bytea",
            Node::String | Node::Enum(_) | Node::Uuid | Node::FixedUuid => "text",
            Node::Date => "date",
            Node::TimeMillis | Node::TimeMicros => "time",
            Node::TimestampMillis | Node::TimestampMicros => "timestamptz",
            Node::LocalTimestampMillis | Node::LocalTimestampMicros => "timestamp",
            // (the schema's precision and scale are not kept: an unconstrained numeric holds
            // every value exactly)
            Node::Decimal { .. } => "numeric",
            Node::Duration | Node::MicroDuration => "interval",
            // (Kafka Connect names, read for debezium-avro only, which does not evolve)
            Node::TimeNanos => "time",
            Node::LocalTimestampNanos => "timestamp",
            Node::VariableScaleDecimal => "numeric",
            Node::Array(_) | Node::Map(_) | Node::Record(_) => "jsonb",
            Node::Union(branches) => {
                let mut types = branches.iter().filter_map(|b| self.column_type(*b));
                match (types.next(), types.next()) {
                    (Some(t), None) => t,
                    (None, _) => return None,
                    (Some(_), Some(_)) => "text",
                }
            }
        })
    }

    /// Parses a schema that names types defined in `references` (the registry's referenced
    /// schemas, each before those referring to it).
    pub fn parse_with(references: &[String], text: &str) -> Result<Schema, String> {
        Schema::parse_connect(references, text, false)
    }

    /// The root record's fields (None when the root is not a record).
    pub(crate) fn fields(&self) -> Option<&[(String, usize)]> {
        match &self.nodes[self.root] {
            Node::Record(f) => Some(f),
            _ => None,
        }
    }
}

/// Deeper schema definitions than this are refused (a hostile schema cannot exhaust the stack).
const MAX_SCHEMA_DEPTH: usize = 200;

struct Parser {
    nodes: Vec<Node>,
    /// Full name -> node of the named types defined so far.
    names: HashMap<String, usize>,
    depth: usize,
    /// Kafka Connect names (`connect.name`) give types (Schema::parse_connect).
    connect: bool,
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::String,
        _ => return None,
    })
}

/// The full name of a type defined with `name` (and maybe `namespace`) inside `ns`.
fn full_name(name: &str, namespace: Option<&str>, ns: Option<&str>) -> (String, Option<String>) {
    if name.contains('.') {
        let space = name.rsplit_once('.').map(|(s, _)| s.to_string());
        return (name.to_string(), space);
    }
    match namespace.or(ns).filter(|s| !s.is_empty()) {
        Some(s) => (format!("{s}.{name}"), Some(s.to_string())),
        None => (name.to_string(), None),
    }
}

impl Parser {
    fn push(&mut self, n: Node) -> usize {
        self.nodes.push(n);
        self.nodes.len() - 1
    }

    fn parse(&mut self, v: &Json, ns: Option<&str>) -> Result<usize, String> {
        self.depth += 1;
        if self.depth > MAX_SCHEMA_DEPTH {
            return Err(format!("the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"));
        }
        let r = self.parse_inner(v, ns);
        self.depth -= 1;
        r
    }

    fn lookup(&self, name: &str, ns: Option<&str>) -> Result<usize, String> {
        let (full, _) = full_name(name, None, ns);
        self.names
            .get(&full)
            .or_else(|| self.names.get(name))
            .copied()
            .ok_or_else(|| format!("unknown type \"{name}\""))
    }

    fn parse_inner(&mut self, v: &Json, ns: Option<&str>) -> Result<usize, String> {
        match v {
            Json::String(s) => match primitive(s) {
                Some(n) => Ok(self.push(n)),
                None => self.lookup(s, ns),
            },
            Json::Array(branches) => {
                let mut ids = Vec::with_capacity(branches.len());
                for b in branches {
                    let id = self.parse(b, ns)?;
                    if matches!(self.nodes[id], Node::Union(_)) {
                        return Err("a union cannot directly contain a union".into());
                    }
                    ids.push(id);
                }
                Ok(self.push(Node::Union(ids)))
            }
            Json::Object(o) => {
                let ty = o.get("type").ok_or("a schema object without \"type\"")?;
                let logical = o.get("logicalType").and_then(Json::as_str);
                let name_of = |o: &serde_json::Map<String, Json>| -> Result<(String, Option<String>), String> {
                    let name = o.get("name").and_then(Json::as_str).ok_or("a named type without \"name\"")?;
                    Ok(full_name(name, o.get("namespace").and_then(Json::as_str), ns))
                };
                match ty.as_str() {
                    Some("record") | Some("error") => {
                        let (full, space) = name_of(o)?;
                        let id = self.push(Node::Record(Vec::new()));
                        self.names.insert(full.clone(), id);
                        let fields = o.get("fields").and_then(Json::as_array).ok_or_else(|| format!("record {full} without \"fields\""))?;
                        let mut out = Vec::with_capacity(fields.len());
                        for f in fields {
                            let fname = f.get("name").and_then(Json::as_str).ok_or_else(|| format!("a field of {full} without \"name\""))?;
                            let ft = f.get("type").ok_or_else(|| format!("field {fname} of {full} without \"type\""))?;
                            out.push((fname.to_string(), self.parse(ft, space.as_deref())?));
                        }
                        let connect = if self.connect { o.get("connect.name").and_then(Json::as_str) } else { None };
                        let variable = connect == Some("io.debezium.data.VariableScaleDecimal")
                            && matches!(&out[..], [(s, si), (v, vi)] if s == "scale" && v == "value"
                                && self.nodes[*si] == Node::Int && self.nodes[*vi] == Node::Bytes);
                        self.nodes[id] = if variable { Node::VariableScaleDecimal } else { Node::Record(out) };
                        Ok(id)
                    }
                    Some("enum") => {
                        let (full, _) = name_of(o)?;
                        let symbols = o.get("symbols").and_then(Json::as_array).ok_or_else(|| format!("enum {full} without \"symbols\""))?;
                        let symbols = symbols
                            .iter()
                            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| format!("enum {full}: a symbol that is not a string")))
                            .collect::<Result<Vec<_>, _>>()?;
                        let id = self.push(Node::Enum(symbols));
                        self.names.insert(full, id);
                        Ok(id)
                    }
                    Some("fixed") => {
                        let (full, _) = name_of(o)?;
                        let size = o.get("size").and_then(Json::as_u64).ok_or_else(|| format!("fixed {full} without a \"size\""))? as usize;
                        let node = match logical {
                            Some("decimal") => decimal(o, Some(size)).unwrap_or(Node::Fixed(size)),
                            Some("duration") if size == 12 => Node::Duration,
                            Some("uuid") if size == 16 => Node::FixedUuid,
                            _ => Node::Fixed(size),
                        };
                        let id = self.push(node);
                        self.names.insert(full, id);
                        Ok(id)
                    }
                    Some("array") => {
                        let items = self.parse(o.get("items").ok_or("an array without \"items\"")?, ns)?;
                        Ok(self.push(Node::Array(items)))
                    }
                    Some("map") => {
                        let values = self.parse(o.get("values").ok_or("a map without \"values\"")?, ns)?;
                        Ok(self.push(Node::Map(values)))
                    }
                    Some(p) if primitive(p).is_some() => {
                        let base = primitive(p).unwrap_or(Node::Null);
                        let node = match (p, logical) {
                            ("int", Some("date")) => Node::Date,
                            ("int", Some("time-millis")) => Node::TimeMillis,
                            ("long", Some("time-micros")) => Node::TimeMicros,
                            ("long", Some("timestamp-millis")) => Node::TimestampMillis,
                            ("long", Some("timestamp-micros")) => Node::TimestampMicros,
                            ("long", Some("local-timestamp-millis")) => Node::LocalTimestampMillis,
                            ("long", Some("local-timestamp-micros")) => Node::LocalTimestampMicros,
                            ("string", Some("uuid")) => Node::Uuid,
                            ("bytes", Some("decimal")) => decimal(o, None).unwrap_or(base),
                            _ if self.connect => connect_type(p, o.get("connect.name").and_then(Json::as_str)).unwrap_or(base),
                            _ => base,
                        };
                        Ok(self.push(node))
                    }
                    // {"type": "SomeName"} or {"type": {...}}: the inner schema.
                    _ => self.parse(ty, ns),
                }
            }
            other => Err(format!("not a schema: {other}")),
        }
    }
}

/// A Kafka Connect temporal type on its Avro base type (None: not one, or on another base).
fn connect_type(base: &str, connect_name: Option<&str>) -> Option<Node> {
    Some(match (base, connect_name?) {
        ("int", "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date") => Node::Date,
        ("int", "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time") => Node::TimeMillis,
        ("long", "io.debezium.time.MicroTime") => Node::TimeMicros,
        ("long", "io.debezium.time.NanoTime") => Node::TimeNanos,
        ("long", "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp") => Node::LocalTimestampMillis,
        ("long", "io.debezium.time.MicroTimestamp") => Node::LocalTimestampMicros,
        ("long", "io.debezium.time.NanoTimestamp") => Node::LocalTimestampNanos,
        ("long", "io.debezium.time.MicroDuration") => Node::MicroDuration,
        _ => return None,
    })
}

/// A valid decimal's node (None: invalid precision/scale, the logical type is ignored).
fn decimal(o: &serde_json::Map<String, Json>, fixed: Option<usize>) -> Option<Node> {
    let precision = o.get("precision")?.as_u64()?;
    let scale = o.get("scale").map_or(Some(0), Json::as_u64)?;
    if precision == 0 || scale > precision {
        return None;
    }
    if let Some(size) = fixed {
        // The most digits a signed size-byte integer always holds: floor(log10(2^(8n-1) - 1)).
        let max = ((8.0 * size as f64 - 1.0) * std::f64::consts::LOG10_2).floor() as u64;
        if precision > max {
            return None;
        }
    }
    Some(Node::Decimal { fixed, scale: i32::try_from(scale).ok()? })
}
