//! Previews (`pipeline_kafka.preview`): what the next messages of a topic would become in a
//! relation, without a consumer and without writing anything (Memgraph's TEST STREAM).
//!
//! The messages are read by a short-lived client (no offset is stored anywhere) and written through
//! the worker's own seam, `sink::write::write_batch`, with a `Target` made from the same arguments
//! `consume_begin` takes, so formats, metadata columns, transforms and upserts behave exactly as in
//! a consumer. Everything happens inside one subtransaction that is always rolled back; each message
//! is written in a subtransaction of its own within it (released when it worked), so a later message
//! sees the rows of earlier ones as it would in one batch, and each error belongs to one message.
//!
//! The rows are those the relation holds afterwards that this transaction wrote: a row's `xmin` is
//! the (sub)transaction that wrote it, and the transaction ids a message's write was given lie
//! between the next transaction id before and after it. Since rows really go into the relation,
//! everything a consumer would meet is checked: types, defaults, NOT NULL, CHECK, unique and
//! foreign keys (against the rows already there), triggers, partition routing. Triggers and
//! transforms run (as the relation's owner), and whatever they write elsewhere is rolled back too;
//! sequences advance (they are not transactional).

use crate::xact::PgError;
use pgrx::callconv::{BoxRet, FcInfo};
use pgrx::prelude::*;

/// At most this many messages per preview.
pub const MAX_LIMIT: i32 = 1000;

/// A jsonb result value given as its text (jsonb's own output): converted by jsonb_in, so numbers
/// keep their precision (serde_json's f64 would not).
pub struct JsonbText(pub String);

impl IntoDatum for JsonbText {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        let text = std::ffi::CString::new(self.0).ok()?;
        // SAFETY: jsonb_in takes a NUL-terminated C string, valid during the call.
        unsafe { pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(text.as_ptr().into())]) }
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: returns the datum made by into_datum (a jsonb) or SQL NULL, as pgrx's own types do.
unsafe impl BoxRet for JsonbText {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        match self.into_datum() {
            // SAFETY: a valid jsonb datum in the current memory context.
            Some(datum) => unsafe { fcinfo.return_raw_datum(datum) },
            None => fcinfo.return_null(),
        }
    }
}

pgrx::impl_sql_translatable!(JsonbText, "jsonb");

pub use super::preview_outcome::Outcome;

/// Runs `f` in a subtransaction that is always rolled back; an ERROR inside comes back as Err.
fn rolled_back<R>(f: impl FnOnce() -> R) -> Result<R, PgError> {
    let f = std::panic::AssertUnwindSafe(f);
    // SAFETY: inside the caller's transaction in the backend's main thread; memory context and
    // resource owner are restored after the subtransaction ends (as `xact::in_subtransaction`).
    unsafe {
        let old_context = pg_sys::CurrentMemoryContext;
        let old_owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(old_context);
        let result = PgTryBuilder::new(move || {
            let f = f;
            Ok((f.0)())
        })
        .catch_others(|e| Err(PgError::from(e)))
        .execute();
        pg_sys::RollbackAndReleaseCurrentSubTransaction();
        pg_sys::MemoryContextSwitchTo(old_context);
        pg_sys::CurrentResourceOwner = old_owner;
        result
    }
}

/// The next transaction id to be assigned (64 bits, so ranges do not wrap).
fn next_xid() -> u64 {
    // SAFETY: reads shared transaction state under its own lock.
    unsafe { pg_sys::ReadNextFullTransactionId().value }
}

/// Writes each message through `write_batch` into `relid` as `target` says, captures what each
/// became, and rolls everything back.
pub fn preview_messages<P: ingest_core::batch::Position>(
    target: &crate::worker::pipeline::Target,
    relid: pg_sys::Oid,
    messages: &[ingest_core::batch::Message<P>],
) -> Vec<Outcome> {
    let outcome = rolled_back(|| {
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut ranges = Vec::with_capacity(messages.len());
        for m in messages {
            pgrx::check_for_interrupts!();
            let before = next_xid();
            let written = crate::xact::in_subtransaction(|| crate::sink::write::write_batch(target, relid, std::slice::from_ref(m)));
            ranges.push((before, next_xid()));
            let mut rows_written = 0;
            let error = match written {
                Ok(Ok(w)) => {
                    rows_written = w.rows.iter().map(|(_, n)| n).sum();
                    w.rejected.into_iter().next().map(|r| PgError { sqlstate: r.sqlstate, message: r.error, detail: None })
                }
                // A cancel, statement_timeout or shutdown is not what the message became: it ends
                // the preview (the next message is not written).
                Ok(Err(e)) | Err(e) if is_interrupt(&e) => interrupted(e),
                Ok(Err(e)) | Err(e) => Some(e),
            };
            let tombstone = m.payload.is_none() && target.features.mode == "upsert" && !target.opts.format.change_events();
            outcomes.push(Outcome { rows: Vec::new(), error, written: rows_written, tombstone, rows_unknown: false });
        }
        // A Citus table's rows live on the worker nodes, stamped with their transaction ids, which
        // say nothing of this backend's: what each message became is shown without its rows.
        if crate::citus::table_kind(relid).is_none() {
            capture(target.owner, relid, &ranges, &mut outcomes);
        } else {
            outcomes.iter_mut().for_each(|o| o.rows_unknown = true);
        }
        outcomes
    });
    outcome.unwrap_or_else(|e| {
        if is_interrupt(&e) {
            interrupted(e);
        }
        crate::error::raise_with(
            sqlstate_code(&e.sqlstate),
            format!("preview failed: {}", e.message),
            e.detail,
            None,
        )
    })
}

/// Errors of class 57 (operator intervention: query_canceled for a cancel or statement_timeout,
/// admin_shutdown, ...): caught in a message's subtransaction, they are raised again as they were.
fn is_interrupt(e: &PgError) -> bool {
    e.sqlstate.starts_with("57")
}

#[track_caller]
fn interrupted(e: PgError) -> ! {
    crate::error::raise_with(sqlstate_code(&e.sqlstate), e.message, e.detail, None)
}

/// A SQLSTATE's code from its five characters (as PostgreSQL's MAKE_SQLSTATE).
fn sqlstate_code(state: &str) -> PgSqlErrorCode {
    let code = state.bytes().take(5).enumerate().fold(0i32, |acc, (i, b)| acc | ((i32::from(b.wrapping_sub(b'0')) & 0x3f) << (6 * i)));
    PgSqlErrorCode::from(code)
}

/// Adds to each outcome the rows of the relation that the message's write produced (see the
/// module comment), read as the owner (its rights, as the writes had).
fn capture(owner: pg_sys::Oid, relid: pg_sys::Oid, ranges: &[(u64, u64)], outcomes: &mut [Outcome]) {
    let (Some(lo), Some(hi)) = (ranges.first().map(|r| r.0), ranges.last().map(|r| r.1)) else { return };
    if lo == hi {
        return; // nothing was written (no transaction id was assigned)
    }
    // xmin is 32 bits: compare within the window [lo, hi) modulo 2^32 in SQL (cheap, before
    // to_jsonb), then exactly in Rust.
    let (lo32, hi32) = ((lo & 0xffff_ffff) as i64, (hi & 0xffff_ffff) as i64);
    let rows: Vec<(i64, String)> = crate::xact::as_role(owner, || {
        crate::catalog::spi(Spi::connect(|c| {
            // The relation's schema-qualified name, quoted by format('%I'), not the user's text.
            let name = c
                .select(
                    "SELECT pg_catalog.format('%I.%I', n.nspname, r.relname) FROM pg_catalog.pg_class r \
                     JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = $1",
                    None,
                    &[relid.into()],
                )?
                .first()
                .get_one::<String>()?
                .unwrap_or_default();
            let q = format!(
                "SELECT x, pg_catalog.to_jsonb(t)::text FROM (SELECT t.xmin::text::bigint AS x, t FROM {name} t) s(x, t) \
                 WHERE CASE WHEN $1 <= $2 THEN x >= $1 AND x < $2 ELSE x >= $1 OR x < $2 END"
            );
            let mut out = Vec::new();
            for row in c.select(&q, None, &[lo32.into(), hi32.into()])? {
                if let (Some(x), Some(j)) = (row.get::<i64>(1)?, row.get::<String>(2)?) {
                    out.push((x, j));
                }
            }
            Ok(out)
        }))
    });
    for (x, json) in rows {
        // SAFETY: a plain lookup of this backend's transaction state.
        if !unsafe { pg_sys::TransactionIdIsCurrentTransactionId(pg_sys::TransactionId::from(x as u32)) } {
            continue; // another transaction's row in the same id window
        }
        // The full id: the window's epoch part, the next epoch when the low bits wrapped.
        let mut full = (lo & !0xffff_ffff) | x as u64;
        if full < lo {
            full += 1 << 32;
        }
        if let Some(i) = ranges.iter().position(|(a, b)| full >= *a && full < *b) {
            outcomes[i].rows.push(json);
        }
    }
}

/// A result row of a preview: (the message's position, action, row, error, sqlstate).
pub type ResultRow<K> = (K, String, Option<JsonbText>, Option<String>, Option<String>);

/// The result rows of a preview, one per row a message became, or one with a NULL row for a
/// message that became an error or no row; `action` says which (`Outcome::action`).
pub fn result_rows<K: Clone>(keys: Vec<K>, outcomes: Vec<Outcome>) -> Vec<ResultRow<K>> {
    let mut out = Vec::new();
    for (k, o) in keys.into_iter().zip(outcomes) {
        let action = o.action().to_string();
        if let Some(e) = o.error {
            out.push((k, action, None, Some(e.message_with_detail()), Some(e.sqlstate)));
        } else if o.rows.is_empty() {
            out.push((k, action, None, None, None));
        } else {
            for r in o.rows {
                out.push((k.clone(), action.clone(), Some(JsonbText(r)), None, None));
            }
        }
    }
    out
}

/// Checks the arguments as consume_begin does for a new consumer (`begin::prepare`: the settings,
/// the caller may act as the relation's owner, columns, metadata, transform and keys) and makes
/// the worker's `Target` for `limit` messages.
pub fn target(source: crate::shmem::SourceKind, source_name: &str, relation: &str, mut given: ingest_core::spec::Args, limit: i32) -> crate::worker::pipeline::Target {
    check_limit(limit);
    // preview's mode defaults to 'append' in SQL; change events (format debezium) default to
    // 'upsert' and refuse 'append': that default means "not given" for them
    let changes = given.format.as_deref().and_then(|f| ingest_core::format::Format::parse(f).ok()).is_some_and(|f| f.change_events());
    if changes && given.mode.as_deref() == Some("append") {
        given.mode = None;
    }
    let relid = crate::api::consumer_args::resolve_relation(relation);
    target_of(source, source_name, None, relid, relation, given, limit)
}

fn check_limit(limit: i32) {
    if !(1..=MAX_LIMIT).contains(&limit) {
        crate::error::raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("limit must be between 1 and {MAX_LIMIT}, got {limit}"));
    }
}

/// A stored consumer, as a preview of it needs it: (its id, owner, relation, the relation's name
/// or the name it had, its source's name) of `source`.
pub struct StoredConsumer {
    pub id: i32,
    pub owner: pg_sys::Oid,
    pub relid: pg_sys::Oid,
    pub relname: Option<String>,
    pub source_name: String,
}

/// The `Target` of a preview of a stored consumer: its settings (`begin::prepare` with no argument
/// given), checked as consume_begin checks them; only who may manage it may (42501), the
/// consumer must have a relation (0A000 for a stream-partitioned one) that exists (42P01).
pub fn consumer_target(source: crate::shmem::SourceKind, c: Option<StoredConsumer>, consumer_id: i32, limit: i32) -> (StoredConsumer, crate::worker::pipeline::Target) {
    use crate::error::raise;
    check_limit(limit);
    let c = c.unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("consumer {consumer_id} does not exist")));
    if !crate::api::can_act_as(c.owner) {
        raise(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, format!("must be a member of the role that owns consumer {consumer_id}"));
    }
    if c.relid == pg_sys::Oid::INVALID {
        raise(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, format!("consumer {consumer_id} is stream-partitioned: preview it by its topic and a relation"));
    }
    let Some((relation, _)) = crate::catalog::consumers::relation_name_and_owner(c.relid) else {
        let name = c.relname.clone().unwrap_or_default();
        raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("relation \"{name}\" of consumer {consumer_id} does not exist"))
    };
    let target = target_of(source, &c.source_name, Some(c.id), c.relid, &relation, ingest_core::spec::Args::default(), limit);
    (c, target)
}

#[allow(clippy::too_many_arguments)]
fn target_of(
    source: crate::shmem::SourceKind,
    source_name: &str,
    consumer: Option<i32>,
    relid: pg_sys::Oid,
    relation: &str,
    given: ingest_core::spec::Args,
    limit: i32,
) -> crate::worker::pipeline::Target {
    let prepared = crate::api::begin::prepare(source, consumer, given, Some((relid, relation)));
    let features = crate::api::begin::features(&prepared);
    let owner = prepared.checked.as_ref().map(|c| c.owner).unwrap_or_default();
    let registry = prepared.spec.schema_registry.clone();
    let mut target = crate::worker::pipeline::Target {
        // SAFETY: MyDatabaseId is set in a connected backend.
        dboid: unsafe { pg_sys::MyDatabaseId },
        consumer_id: 0,
        index: 0,
        generation: 0,
        relid,
        owner,
        typed: crate::sink::typed::Typed::for_format(prepared.spec.opts.format, features.key_format.as_deref()),
        opts: prepared.spec.opts,
        columns: prepared.spec.columns,
        on_error: ingest_core::policy::OnError::DeadLetter,
        max_dead_letters: None,
        limits: ingest_core::batch::Limits { max_messages: limit as usize, max_bytes: usize::MAX, max_wait: std::time::Duration::ZERO },
        source_name: source_name.to_string(),
        features,
        partitioned: false,
    };
    crate::worker::typed::attach(&mut target, registry.as_deref());
    target
}

#[pg_schema]
mod pipeline_kafka {
    use super::JsonbText;
    use crate::api::consumer_args::row_args;
    use crate::api::legacy::{transform_text, RegProcArg};
    use crate::api::JsonbArg;
    use crate::catalog::kafka as cat;
    use crate::error::{raise, raise_with, required};
    use crate::shmem::SourceKind;
    use crate::sources::kafka::{client_config, Probe, ProbeError};
    use pgrx::prelude::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[track_caller]
    fn probe_error(topic: &str, e: ProbeError) -> ! {
        crate::api::raise_probe_error(topic, "messages", e)
    }

    /// What the next `limit` messages of `topic` would become in `relation` with these
    /// consume_begin options: each row as JSON, or the error the message would raise, without
    /// writing anything or storing any offset (no consumer needed). `start_offset`: -2 the
    /// beginning of each partition, -1 its end (waits for new messages), n >= 0 offset n.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[pg_extern(volatile, parallel_unsafe, name = "preview")]
    pub(crate) fn kafka_preview_v080(
        topic: Option<&str>,
        relation: Option<&str>,
        format: default!(Option<&str>, "'text'"),
        delimiter: default!(Option<&str>, "NULL"),
        quote: default!(Option<&str>, "NULL"),
        escape: default!(Option<&str>, "NULL"),
        columns: default!(Option<Vec<Option<String>>>, "NULL"),
        metadata: default!(Option<JsonbArg>, "NULL"),
        transform: default!(Option<&str>, "NULL"),
        mode: default!(Option<&str>, "'append'"),
        key_columns: default!(Option<Vec<Option<String>>>, "NULL"),
        key_format: default!(Option<&str>, "NULL"),
        limit: default!(Option<i32>, 10),
        start_offset: default!(Option<i64>, -2),
        schema_registry: default!(Option<&str>, "NULL"),
    ) -> TableIterator<
        'static,
        (
            name!(partition, i32),
            name!(offset, i64),
            name!(action, String),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    > {
        let topic = required(topic, "topic");
        let relation = required(relation, "relation");
        let limit = required(limit, "limit");
        let start_offset = required(start_offset, "start_offset");
        if let Err(e) = ingest_core::broker::check_topic(topic) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
        }
        if start_offset < -2 {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("start_offset must be -2 (beginning), -1 (end) or an offset >= 0; got {start_offset}"),
            );
        }
        let given = ingest_core::spec::Args {
            schema_registry: schema_registry.map(str::to_string),
            ..row_args(Some(required(format, "format")), delimiter, quote, escape, columns, metadata, transform, mode, key_columns, key_format)
        };
        let target = super::target(SourceKind::Kafka, topic, relation, given, limit);
        run(topic, &target, limit, Start::Offset(start_offset), &serde_json::Map::new())
    }

    /// preview as 0.7.0 declared it (no schema_registry): the symbol stays for databases whose
    /// extension is not updated yet; no SQL is generated.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn kafka_preview_v070(
        topic: Option<&str>,
        relation: Option<&str>,
        format: Option<&str>,
        delimiter: Option<&str>,
        quote: Option<&str>,
        escape: Option<&str>,
        columns: Option<Vec<Option<String>>>,
        metadata: Option<JsonbArg>,
        transform: Option<&str>,
        mode: Option<&str>,
        key_columns: Option<Vec<Option<String>>>,
        key_format: Option<&str>,
        limit: Option<i32>,
        start_offset: Option<i64>,
    ) -> TableIterator<
        'static,
        (
            name!(partition, i32),
            name!(offset, i64),
            name!(action, String),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    > {
        kafka_preview_v080(
            topic, relation, format, delimiter, quote, escape, columns, metadata, transform, mode, key_columns, key_format, limit,
            start_offset, None,
        )
    }

    /// preview as 0.4.0 .. 0.6.0 declared it (transform regprocedure, no action column): the symbol
    /// stays for databases whose extension is not updated yet; no SQL is generated.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn kafka_preview(
        topic: Option<&str>,
        relation: Option<&str>,
        format: Option<&str>,
        delimiter: Option<&str>,
        quote: Option<&str>,
        escape: Option<&str>,
        columns: Option<Vec<Option<String>>>,
        metadata: Option<JsonbArg>,
        transform: Option<RegProcArg>,
        mode: Option<&str>,
        key_columns: Option<Vec<Option<String>>>,
        key_format: Option<&str>,
        limit: Option<i32>,
        start_offset: Option<i64>,
    ) -> TableIterator<
        'static,
        (
            name!(partition, i32),
            name!(offset, i64),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    > {
        let transform = transform_text(transform);
        let rows = kafka_preview_v080(
            topic, relation, format, delimiter, quote, escape, columns, metadata, transform.as_deref(), mode, key_columns, key_format, limit,
            start_offset, None,
        );
        TableIterator::new(rows.map(|(p, o, _, row, error, sqlstate)| (p, o, row, error, sqlstate)))
    }

    /// Where a Kafka preview starts: an offset for every partition (-2 the beginning, -1 the end,
    /// n >= 0), or a consumer's stored next offsets (a partition without one: its beginning).
    enum Start {
        Offset(i64),
        Stored(BTreeMap<i32, i64>),
    }

    type Rows = TableIterator<
        'static,
        (
            name!(partition, i32),
            name!(offset, i64),
            name!(action, String),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    >;

    /// Reads up to `limit` messages of `topic` from `start` (with the brokers' client settings and
    /// `extra`) and writes them as `target` says, rolled back; one result row per row each
    /// became (or one saying what happened).
    fn run(topic: &str, target: &crate::worker::pipeline::Target, limit: i32, start: Start, extra: &serde_json::Map<String, serde_json::Value>) -> Rows {
        let (brokers, broker_config) = cat::brokers();
        if brokers.is_empty() {
            raise_with(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "no Kafka broker is configured",
                None,
                Some("Add one with pipeline_kafka.add_broker('host:port').".into()),
            );
        }
        // A managed setting stored in a broker entry (by an older release) is refused with its hint.
        if let Some(k) = broker_config.keys().chain(extra.keys()).find(|k| ingest_core::settings::is_reserved(k)) {
            let e = ingest_core::settings::SettingError::Reserved(k.clone());
            raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string(), None, e.hint().map(str::to_string));
        }
        let cfg = client_config(&brokers, &[&broker_config, extra]).unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e));
        let timeout_ms = crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64;
        let probe = Probe::new(&cfg, Duration::from_millis(timeout_ms)).unwrap_or_else(|e| probe_error(topic, e));
        let partitions = probe.partitions(topic).unwrap_or_else(|e| probe_error(topic, e));
        let mut starts = BTreeMap::new();
        for p in &partitions {
            let wanted = match &start {
                Start::Offset(n) => *n,
                Start::Stored(next) => next.get(p).copied().unwrap_or(-2),
            };
            let first = match wanted {
                // Within the partition: librdkafka would start an offset out of range over from
                // the beginning. Past the end there is nothing to show; before the first retained
                // offset, the first retained message is next.
                n if n >= 0 => {
                    let (low, high) = probe.watermarks(topic, *p).unwrap_or_else(|e| probe_error(topic, e));
                    n.clamp(low, high)
                }
                special => special,
            };
            starts.insert(*p, first);
        }
        let wait_for_new = matches!(start, Start::Offset(-1));
        // A preview holds its messages in the caller's backend: at most max_batch_bytes of them,
        // as a worker's batch.
        let cap = crate::guc::max_batch_bytes();
        let (messages, capped) = probe
            .fetch(topic, &starts, limit as usize, cap, wait_for_new, target.features.uses_headers())
            .unwrap_or_else(|e| probe_error(topic, e));
        drop(probe);
        if capped {
            pgrx::notice!(
                "preview stopped after {} messages: the next one would pass pipeline_ingest.max_batch_bytes ({} kB of messages)",
                messages.len(),
                cap / 1024
            );
        }
        let outcomes = super::preview_messages(target, target.relid, &messages);
        let keys: Vec<(i32, i64)> = messages.iter().map(|m| (m.pos.partition, m.pos.offset)).collect();
        let rows = super::result_rows(keys, outcomes);
        TableIterator::new(rows.into_iter().map(|((p, o), action, row, error, sqlstate)| (p, o, action, row, error, sqlstate)))
    }

    /// What the next `limit` messages of consumer `consumer_id` would become in its relation with
    /// its stored settings and client settings (as `preview` above with them given): from its
    /// stored offsets (`start_offset` NULL; a partition without one from its beginning) or from
    /// `start_offset` (-2, -1, n) in every partition. Only who may manage the consumer may (42501).
    #[allow(clippy::type_complexity)]
    #[pg_extern(volatile, parallel_unsafe, name = "preview")]
    fn kafka_preview_consumer(
        consumer_id: Option<i32>,
        limit: default!(Option<i32>, 10),
        start_offset: default!(Option<i64>, "NULL"),
    ) -> TableIterator<
        'static,
        (
            name!(partition, i32),
            name!(offset, i64),
            name!(action, String),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    > {
        let id = required(consumer_id, "consumer_id");
        let limit = required(limit, "limit");
        ingest_core::spec::check_kafka_start(start_offset, false).unwrap_or_else(|e| crate::api::consumer_args::raise_spec(e));
        let consumer = cat::consumer(id);
        let config = consumer.as_ref().map(|c| c.settings.config.clone()).unwrap_or_default();
        let stored = consumer.map(|c| super::StoredConsumer { id: c.id, owner: c.owner, relid: c.relid, relname: None, source_name: c.topic });
        let (c, target) = super::consumer_target(SourceKind::Kafka, stored, id, limit);
        let start = match start_offset {
            Some(n) => Start::Offset(n),
            None => Start::Stored(cat::stored_offsets(c.id)),
        };
        run(&c.source_name, &target, limit, start, &config)
    }
}
