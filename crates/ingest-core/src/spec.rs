//! A consumer's settings as one value, built and checked once: what `consume_begin` (both systems,
//! and stream-partitioned consumers) stores and what a preview writes with.
//!
//! `Args` are the arguments a call gave (None = not given). For an existing consumer they are laid
//! over its stored settings (`Args::over`): only what is given changes. `Spec::check` applies the
//! defaults of a new consumer to what is still missing and checks everything that needs no
//! database: the format and its options, sizes, the error policy, columns, mode and keys, and
//! which settings a transform excludes. What needs the catalog (the relation, its columns, the
//! transform function, privileges) is checked by the caller against the relation.

use crate::format::{CopyOptions, Format};
use crate::metadata::System;
use crate::policy::OnError;
use thiserror::Error;

/// GetRecords returns at most this many records per call: a Kinesis batch holds no more.
pub const KINESIS_MAX_BATCHSIZE: i32 = 10_000;

/// The arguments given to a call (None = not given; for an existing consumer, keep its value).
/// An empty value clears a setting whose NULL means "none": `columns` or `key_columns` `{}`,
/// `metadata` `{}`, `transform`, `key_format` or `group_id` `''`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    pub format: Option<String>,
    pub delimiter: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    pub columns: Option<Vec<Option<String>>>,
    pub batchsize: Option<i32>,
    pub maxbytes: Option<i32>,
    pub parallelism: Option<i32>,
    pub timeout: Option<i32>,
    pub poll_interval: Option<i32>,
    pub on_error: Option<String>,
    pub max_dead_letters: Option<i32>,
    pub group_id: Option<String>,
    /// metadata field -> column, as JSON text.
    pub metadata: Option<String>,
    /// The transform function as given (name with argument types) or as stored (regprocedure text).
    pub transform: Option<String>,
    pub mode: Option<String>,
    pub key_columns: Option<Vec<Option<String>>>,
    pub key_format: Option<String>,
    /// avro, protobuf, debezium-avro: the URL of the schema registry (one added with
    /// add_schema_registry; None = the only one, resolved by the caller against the catalog).
    pub schema_registry: Option<String>,
    /// avro, protobuf: a new field of a later schema becomes a new nullable column.
    pub auto_evolve: Option<bool>,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Append,
    Upsert,
    /// Change events (format debezium) applied by key, truncate events included.
    Replicate,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Append => "append",
            Mode::Upsert => "upsert",
            Mode::Replicate => "replicate",
        }
    }
}

/// A consumer's settings, checked (the defaults applied).
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub system: System,
    pub opts: CopyOptions,
    /// text/csv: the columns fields go to (None = all).
    pub columns: Option<Vec<String>>,
    pub batchsize: i32,
    /// Kafka: the most bytes of a batch.
    pub maxbytes: i32,
    pub parallelism: i32,
    pub timeout: i32,
    /// Kinesis: the pause between polls of a caught-up shard.
    pub poll_interval: i32,
    pub on_error: OnError,
    pub max_dead_letters: Option<i32>,
    pub group_id: Option<String>,
    pub metadata: Option<String>,
    pub transform: Option<String>,
    pub mode: Mode,
    /// upsert: the key columns (None = the primary key's, resolved against the relation).
    pub key_columns: Option<Vec<String>>,
    pub key_format: Option<String>,
    /// The schema registry's URL (formats that need one only; see `Format::needs_registry`).
    pub schema_registry: Option<String>,
    /// Formats with typed records (avro, protobuf): new fields become new columns.
    pub auto_evolve: bool,
}

/// A setting that cannot be used; each kind has its SQLSTATE (`sqlstate`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    /// 22023
    #[error("{0}")]
    Invalid(String),
    /// 22004: a NULL element in an array argument.
    #[error("{0} must not contain NULL")]
    NullElement(&'static str),
}

impl SpecError {
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SpecError::Invalid(_) => "22023",
            SpecError::NullElement(_) => "22004",
        }
    }
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, SpecError> {
    Err(SpecError::Invalid(msg.into()))
}

/// The settings of a new consumer (and of a preview) given no arguments, by system: README
/// "consume_begin" and the functions' COMMENTs name them.
pub fn defaults(system: System) -> Spec {
    Spec {
        system,
        opts: CopyOptions { format: Format::Text, delimiter: None, quote: None, escape: None },
        columns: None,
        batchsize: match system {
            System::Kafka => 100_000,
            System::Kinesis => 10_000,
        },
        maxbytes: 32_000_000,
        parallelism: 1,
        timeout: 250,
        poll_interval: 200,
        on_error: OnError::DeadLetter,
        max_dead_letters: None,
        group_id: None,
        metadata: None,
        transform: None,
        mode: Mode::Append,
        key_columns: None,
        key_format: None,
        schema_registry: None,
        auto_evolve: false,
    }
}

/// `Some("")`, `Some("{}")` and `Some([])` clear; anything else is kept as given.
fn cleared(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

impl Args {
    /// These arguments laid over a consumer's stored settings: what is given wins, the rest is
    /// kept, but for settings that belong to another one: a new format drops the stored
    /// delimiter, quote and escape (and columns, for json and raw) unless they are given again;
    /// mode 'append' drops the stored key_columns and key_format. Empty values clear (see `Args`).
    pub fn over(self, stored: &Args) -> Args {
        let format_changed = self.format.is_some() && self.format != stored.format;
        let to_registry = self.format.as_deref().and_then(|f| Format::parse(f).ok()).is_some_and(Format::needs_registry);
        let to_whole = matches!(self.format.as_deref(), Some("json" | "raw")) || to_registry;
        let to_append = self.mode.as_deref() == Some("append");
        let to_typed = matches!(self.format.as_deref(), Some("avro" | "protobuf"));
        let keep = |given: Option<String>, old: &Option<String>, dropped: bool| match given {
            Some(v) => Some(v),
            None if dropped => None,
            None => old.clone(),
        };
        let merged = Args {
            delimiter: keep(self.delimiter, &stored.delimiter, format_changed),
            quote: keep(self.quote, &stored.quote, format_changed),
            escape: keep(self.escape, &stored.escape, format_changed),
            columns: match self.columns {
                Some(c) => Some(c),
                None if format_changed && to_whole => None,
                None => stored.columns.clone(),
            },
            key_columns: match self.key_columns {
                Some(c) => Some(c),
                None if to_append => None,
                None => stored.key_columns.clone(),
            },
            key_format: keep(self.key_format, &stored.key_format, to_append),
            // a format without a registry drops the stored one
            schema_registry: keep(self.schema_registry, &stored.schema_registry, format_changed && !to_registry),
            // a format without typed records drops it
            auto_evolve: self.auto_evolve.or(if format_changed && !to_typed { None } else { stored.auto_evolve }),
            format: self.format.or_else(|| stored.format.clone()),
            batchsize: self.batchsize.or(stored.batchsize),
            maxbytes: self.maxbytes.or(stored.maxbytes),
            parallelism: self.parallelism.or(stored.parallelism),
            timeout: self.timeout.or(stored.timeout),
            poll_interval: self.poll_interval.or(stored.poll_interval),
            on_error: self.on_error.or_else(|| stored.on_error.clone()),
            max_dead_letters: self.max_dead_letters.or(stored.max_dead_letters),
            group_id: self.group_id.or_else(|| stored.group_id.clone()),
            metadata: self.metadata.or_else(|| stored.metadata.clone()),
            transform: self.transform.or_else(|| stored.transform.clone()),
            mode: self.mode.or_else(|| stored.mode.clone()),
        };
        merged.without_empties()
    }

    /// Empty values (see `Args`) become None.
    pub fn without_empties(self) -> Args {
        let empty_json = |m: Option<String>| m.filter(|s| !matches!(s.trim(), "{}" | "null" | ""));
        Args {
            columns: self.columns.filter(|c| !c.is_empty()),
            key_columns: self.key_columns.filter(|c| !c.is_empty()),
            metadata: empty_json(self.metadata),
            transform: cleared(self.transform),
            key_format: cleared(self.key_format),
            group_id: cleared(self.group_id),
            schema_registry: cleared(self.schema_registry),
            ..self
        }
    }

    /// A consumer's stored settings from its consumers row as JSON (`to_jsonb(row)`): columns a
    /// system (or a database not updated yet) does not have are None.
    pub fn from_row(row: &serde_json::Value) -> Args {
        let text = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let int = |k: &str| row.get(k).and_then(|v| v.as_i64()).and_then(|v| i32::try_from(v).ok());
        let list = |k: &str| {
            row.get(k).and_then(|v| v.as_array()).map(|a| a.iter().map(|c| c.as_str().map(str::to_string)).collect())
        };
        Args {
            format: text("format"),
            delimiter: text("delimiter"),
            quote: text("quote"),
            escape: text("escape"),
            columns: list("columns"),
            batchsize: int("batchsize"),
            maxbytes: int("maxbytes"),
            parallelism: int("parallelism"),
            timeout: int("timeout"),
            poll_interval: int("poll_interval"),
            on_error: text("on_error"),
            max_dead_letters: int("max_dead_letters"),
            group_id: text("group_id"),
            metadata: row.get("metadata").filter(|m| m.is_object()).map(|m| m.to_string()),
            transform: text("transform"),
            mode: text("mode"),
            key_columns: list("key_columns"),
            key_format: text("key_format"),
            schema_registry: text("schema_registry"),
            auto_evolve: row.get("auto_evolve").and_then(|v| v.as_bool()),
        }
    }

    /// The format options given or kept, checked as COPY would (`CopyOptions::new`).
    pub fn copy_options(&self) -> Result<CopyOptions, SpecError> {
        CopyOptions::new(
            self.format.as_deref().unwrap_or("text"),
            self.delimiter.clone(),
            self.quote.clone(),
            self.escape.clone(),
        )
        .map_err(|e| SpecError::Invalid(e.to_string()))
    }
}

/// An array argument without NULL elements.
fn no_nulls(v: Option<Vec<Option<String>>>, name: &'static str) -> Result<Option<Vec<String>>, SpecError> {
    v.map(|cols| cols.into_iter().map(|c| c.ok_or(SpecError::NullElement(name))).collect()).transpose()
}

impl Spec {
    /// Checks the arguments (laid over the stored settings for an existing consumer) and applies
    /// the defaults of `system` to what is missing. The order of the checks is the order of the
    /// errors a call with several mistakes meets.
    pub fn check(system: System, a: Args) -> Result<Spec, SpecError> {
        let d = defaults(system);
        let on_error = OnError::parse(a.on_error.as_deref().unwrap_or(d.on_error.name()))
            .map_err(|e| SpecError::Invalid(e.to_string()))?;
        if a.max_dead_letters.is_some_and(|m| m < 0) {
            return invalid("max_dead_letters must be >= 0 or NULL");
        }
        let columns = no_nulls(a.columns.clone(), "columns")?;
        let opts = Args { format: Some(a.format.clone().unwrap_or_else(|| d.opts.format.name().to_string())), ..a.clone() }.copy_options()?;
        let spec = Spec {
            opts,
            columns,
            batchsize: a.batchsize.unwrap_or(d.batchsize),
            maxbytes: a.maxbytes.unwrap_or(d.maxbytes),
            parallelism: a.parallelism.unwrap_or(d.parallelism),
            timeout: a.timeout.unwrap_or(d.timeout),
            poll_interval: a.poll_interval.unwrap_or(d.poll_interval),
            on_error,
            max_dead_letters: a.max_dead_letters,
            group_id: a.group_id,
            metadata: a.metadata,
            transform: a.transform,
            schema_registry: a.schema_registry,
            auto_evolve: a.auto_evolve.unwrap_or(false),
            ..d
        };
        if spec.auto_evolve && !matches!(spec.opts.format, Format::Avro | Format::Protobuf) {
            return invalid(format!(
                "auto_evolve is for the formats with typed records (avro, protobuf), not {}",
                spec.opts.format.name()
            ));
        }
        if spec.schema_registry.is_some() && !spec.opts.format.needs_registry() {
            return invalid(format!(
                "schema_registry is for the formats avro, protobuf and debezium-avro, not {}",
                spec.opts.format.name()
            ));
        }
        let mut sizes = vec![("batchsize", spec.batchsize)];
        match system {
            System::Kafka => sizes.push(("maxbytes", spec.maxbytes)),
            System::Kinesis => {}
        }
        sizes.extend([("parallelism", spec.parallelism), ("timeout", spec.timeout)]);
        if system == System::Kinesis {
            sizes.push(("poll_interval", spec.poll_interval));
        }
        if let Some((name, v)) = sizes.iter().find(|(_, v)| *v <= 0) {
            return invalid(format!("{name} must be positive, got {v}"));
        }
        if system == System::Kinesis && spec.batchsize > KINESIS_MAX_BATCHSIZE {
            return invalid(format!(
                "batchsize must be at most {KINESIS_MAX_BATCHSIZE} (the most records GetRecords returns), got {}",
                spec.batchsize
            ));
        }
        spec.check_columns()?.check_writer(a.mode.as_deref(), a.key_columns, a.key_format)
    }

    /// The column list fits the format (which columns exist is the caller's to check).
    fn check_columns(self) -> Result<Spec, SpecError> {
        let Some(cols) = &self.columns else { return Ok(self) };
        match self.opts.format {
            Format::Json => invalid("columns is for text and csv (json matches fields to columns by name)"),
            Format::Raw => invalid("columns is for text and csv (raw fills the one column not filled by metadata)"),
            f if f.decoded() => invalid(format!("columns is for text and csv ({} fills columns by field name)", f.name())),
            _ if cols.is_empty() => invalid("columns must name at least one column (or be NULL for all)"),
            _ => Ok(self),
        }
    }

    /// mode, key_columns and key_format, and what a transform excludes.
    fn check_writer(mut self, mode: Option<&str>, key_columns: Option<Vec<Option<String>>>, key_format: Option<String>) -> Result<Spec, SpecError> {
        let changes = self.opts.format.change_events();
        self.mode = match mode.unwrap_or(if changes { "upsert" } else { "append" }) {
            "append" => Mode::Append,
            "upsert" => Mode::Upsert,
            "replicate" => Mode::Replicate,
            m => return invalid(format!("mode must be 'append', 'upsert' or 'replicate', got '{m}'")),
        };
        if changes {
            let f = self.opts.format.name();
            if self.mode == Mode::Append {
                return invalid(format!(
                    "format {f} applies change events to a keyed table: mode 'upsert' (its default; truncate events are skipped) or 'replicate' (truncate events applied)"
                ));
            }
            if key_format.is_some() {
                return invalid(format!("format {f} reads keys from the change events: key_format does not apply"));
            }
            if self.metadata.is_some() {
                return invalid(format!("format {f} takes no metadata columns (the table holds the source's rows)"));
            }
        } else if self.mode == Mode::Replicate {
            return invalid("mode 'replicate' is for change events (format debezium)");
        }
        if let Some(f) = &key_format {
            if !matches!(f.as_str(), "json" | "csv" | "text" | "avro" | "protobuf") {
                return invalid(format!("key_format must be 'json', 'csv', 'text', 'avro', 'protobuf' or NULL, got '{f}'"));
            }
        }
        self.key_columns = no_nulls(key_columns, "key_columns")?;
        self.key_format = key_format;
        if self.mode == Mode::Append && (self.key_columns.is_some() || self.key_format.is_some()) {
            return invalid("key_columns and key_format are for mode 'upsert'");
        }
        if self.transform.is_some() {
            let o = &self.opts;
            if o.format != Format::Text || o.delimiter.is_some() || o.quote.is_some() || o.escape.is_some() {
                return invalid("a transform receives each message's raw bytes: format, delimiter, quote and escape do not apply (leave them unset)");
            }
            if self.columns.is_some() || self.metadata.is_some() {
                return invalid("a transform receives every message with its metadata: columns and metadata do not apply");
            }
            if self.mode != Mode::Append {
                return invalid("a transform cannot be combined with mode 'upsert' (the transform may upsert with INSERT ... ON CONFLICT itself)");
            }
        }
        Ok(self)
    }

    /// The settings as (name, value) for messages, in consume_begin's parameter order; settings
    /// the system does not have are left out.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "NULL".into());
        let list = |v: &Option<Vec<String>>| v.as_ref().map(|c| format!("{{{}}}", c.join(","))).unwrap_or_else(|| "NULL".into());
        let mut out = vec![
            ("format", self.opts.format.name().to_string()),
            ("delimiter", opt(&self.opts.delimiter)),
            ("quote", opt(&self.opts.quote)),
            ("escape", opt(&self.opts.escape)),
            ("batchsize", self.batchsize.to_string()),
        ];
        if self.system == System::Kafka {
            out.push(("maxbytes", self.maxbytes.to_string()));
        }
        out.extend([("parallelism", self.parallelism.to_string()), ("timeout", self.timeout.to_string())]);
        match self.system {
            System::Kafka => out.push(("group_id", opt(&self.group_id))),
            System::Kinesis => out.push(("poll_interval", self.poll_interval.to_string())),
        }
        out.extend([
            ("on_error", self.on_error.name().to_string()),
            ("max_dead_letters", self.max_dead_letters.map(|m| m.to_string()).unwrap_or_else(|| "NULL".into())),
            ("columns", list(&self.columns)),
            // as JSON, not as text: `{"key": "k"}` given is `{"key":"k"}` stored
            ("metadata", opt(&self.metadata.as_deref().map(|m| serde_json::from_str::<serde_json::Value>(m).map_or(m.to_string(), |v| v.to_string())))),
            ("transform", opt(&self.transform)),
            ("mode", self.mode.name().to_string()),
            ("key_columns", list(&self.key_columns)),
            ("key_format", opt(&self.key_format)),
            ("schema_registry", opt(&self.schema_registry)),
            ("auto_evolve", self.auto_evolve.to_string()),
        ]);
        out
    }

    /// What changed from `before`, e.g. `format text -> csv, parallelism 1 -> 4` (None: nothing).
    pub fn changes_from(&self, before: &Spec) -> Option<String> {
        let old = before.fields();
        let changed: Vec<String> = self
            .fields()
            .into_iter()
            .zip(old)
            .filter(|((_, new), (_, was))| new != was)
            .map(|((name, new), (_, was))| format!("{name} {was} -> {new}"))
            .collect();
        (!changed.is_empty()).then(|| changed.join(", "))
    }
}

/// A Kafka consumer's start: an offset (-2 the beginning, -1 the end, n >= 0) or a time, not both.
pub fn check_kafka_start(start_offset: Option<i64>, start_time_given: bool) -> Result<(), SpecError> {
    if let Some(s) = start_offset.filter(|s| *s < -2) {
        return invalid(format!("start_offset must be -2 (beginning), -1 (end), an offset >= 0 or NULL; got {s}"));
    }
    if start_offset.is_some() && start_time_given {
        return invalid("give start_offset or start_time, not both");
    }
    Ok(())
}

/// Where a Kinesis consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KinesisStart {
    TrimHorizon,
    Latest,
    /// start_time, in microseconds since the Unix epoch.
    At(i64),
}

/// A Kinesis start: start_offset -2 (TRIM_HORIZON), -1 (LATEST) or start_time, not both.
pub fn kinesis_start(start_offset: Option<i32>, start_time_us: Option<i64>) -> Result<Option<KinesisStart>, SpecError> {
    match (start_offset, start_time_us) {
        (Some(_), Some(_)) => invalid("give start_offset or start_time, not both"),
        (Some(-2), None) => Ok(Some(KinesisStart::TrimHorizon)),
        (Some(-1), None) => Ok(Some(KinesisStart::Latest)),
        (Some(s), None) => invalid(format!(
            "start_offset must be -2 (TRIM_HORIZON), -1 (LATEST) or NULL; got {s} (use start_time for a point in time)"
        )),
        (None, Some(t)) => Ok(Some(KinesisStart::At(t))),
        (None, None) => Ok(None),
    }
}

/// A stream name as Kinesis accepts it (1 to 128 of a-z, A-Z, 0-9, '_', '.', '-').
pub fn check_stream(stream: &str) -> Result<(), SpecError> {
    if stream.is_empty() || stream.len() > 128 {
        return invalid("stream must be 1 to 128 characters long");
    }
    if !stream.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return invalid(format!("stream \"{stream}\" may contain only letters, digits, '_', '.' and '-'"));
    }
    Ok(())
}

/// The error for a raw-format relation without exactly one data column (SQLSTATE 42P10).
pub fn raw_shape_error(data_columns: usize) -> String {
    format!("format raw needs exactly one column besides the metadata columns to hold the message value; the relation has {data_columns}")
}

/// json format writes each message whole into the relation's one data column when it is json or
/// jsonb (pipeline_kafka's json format); otherwise fields are matched to columns by name.
/// `data_columns`: (name, type name) of the columns metadata does not fill.
pub fn json_whole_message(data_columns: &[&(String, String)]) -> bool {
    matches!(data_columns, [(_, t)] if t == "json" || t == "jsonb")
}

#[cfg(test)]
mod tests;
