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

/// What one previewed message became: its rows (jsonb text) or its error.
pub struct Outcome {
    pub rows: Vec<String>,
    pub error: Option<PgError>,
}

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
            let error = match written {
                Ok(Ok(w)) => w.rejected.into_iter().next().map(|r| PgError { sqlstate: r.sqlstate, message: r.error, detail: None }),
                // A cancel, statement_timeout or shutdown is not what the message became: it ends
                // the preview (the next message is not written).
                Ok(Err(e)) | Err(e) if is_interrupt(&e) => interrupted(e),
                Ok(Err(e)) | Err(e) => Some(e),
            };
            outcomes.push(Outcome { rows: Vec::new(), error });
        }
        capture(target.owner, relid, &ranges, &mut outcomes);
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

/// A result row of a preview: (the message's position, row, error, sqlstate).
pub type ResultRow<K> = (K, Option<JsonbText>, Option<String>, Option<String>);

/// The result rows of a preview, one per row a message became, or one with a NULL row for a
/// message that became an error or no row.
pub fn result_rows<K: Clone>(keys: Vec<K>, outcomes: Vec<Outcome>) -> Vec<ResultRow<K>> {
    let mut out = Vec::new();
    for (k, o) in keys.into_iter().zip(outcomes) {
        if let Some(e) = o.error {
            out.push((k, None, Some(e.message_with_detail()), Some(e.sqlstate)));
        } else if o.rows.is_empty() {
            out.push((k, None, None, None));
        } else {
            for r in o.rows {
                out.push((k.clone(), Some(JsonbText(r)), None, None));
            }
        }
    }
    out
}

/// The checks a preview shares with consume_begin, and the `Target` a worker would write with.
pub struct PreviewArgs<'a> {
    pub source: crate::shmem::SourceKind,
    pub source_name: &'a str,
    pub relation: &'a str,
    pub format: &'a str,
    pub delimiter: Option<&'a str>,
    pub quote: Option<&'a str>,
    pub escape: Option<&'a str>,
    pub columns: Option<Vec<Option<String>>>,
    pub metadata: Option<crate::api::JsonbArg>,
    pub transform: Option<crate::api::writer_args::RegProcArg>,
    pub mode: Option<&'a str>,
    pub key_columns: Option<Vec<Option<String>>>,
    pub key_format: Option<&'a str>,
    pub limit: i32,
}

/// Checks the arguments as consume_begin does (the caller may act as the relation's owner, the
/// options and columns, metadata, transform and keys) and makes the worker's `Target`.
pub fn target(a: PreviewArgs) -> crate::worker::pipeline::Target {
    use crate::api::consumer_args as args;
    if !(1..=MAX_LIMIT).contains(&a.limit) {
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("limit must be between 1 and {MAX_LIMIT}, got {}", a.limit),
        );
    }
    let columns = args::columns(a.columns);
    let opts = args::copy_options(a.format, a.delimiter, a.quote, a.escape);
    let relid = args::resolve_relation(a.relation);
    let owner = args::check_relation(relid, a.relation);
    args::check_columns(columns.as_ref(), &opts, relid, a.relation);
    let metadata = crate::api::metadata_args::check(a.source, a.metadata, relid, a.relation, &opts, columns.as_ref());
    let writer = crate::api::writer_args::check(
        a.source,
        relid,
        owner,
        a.relation,
        &opts,
        a.transform,
        a.mode,
        a.key_columns,
        a.key_format,
        columns.as_ref(),
        metadata.as_deref(),
    );
    crate::worker::pipeline::Target {
        // SAFETY: MyDatabaseId is set in a connected backend.
        dboid: unsafe { pg_sys::MyDatabaseId },
        consumer_id: 0,
        index: 0,
        generation: 0,
        relid,
        owner,
        opts,
        columns,
        on_error: ingest_core::policy::OnError::DeadLetter,
        max_dead_letters: None,
        limits: ingest_core::batch::Limits {
            max_messages: a.limit as usize,
            max_bytes: usize::MAX,
            max_wait: std::time::Duration::ZERO,
        },
        source_name: a.source_name.to_string(),
        features: crate::catalog::Features {
            metadata,
            transform: writer.transform,
            mode: writer.mode.to_string(),
            key_columns: writer.key_columns,
            key_format: writer.key_format,
            transform_oid: writer.transform_oid,
            transform_owner: writer.transform_owner,
        },
        partitioned: false,
    }
}

#[pg_schema]
mod pipeline_kafka {
    use super::JsonbText;
    use crate::api::writer_args::RegProcArg;
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
    fn kafka_preview(
        topic: Option<&str>,
        relation: Option<&str>,
        format: default!(Option<&str>, "'text'"),
        delimiter: default!(Option<&str>, "NULL"),
        quote: default!(Option<&str>, "NULL"),
        escape: default!(Option<&str>, "NULL"),
        columns: default!(Option<Vec<Option<String>>>, "NULL"),
        metadata: default!(Option<JsonbArg>, "NULL"),
        transform: default!(Option<RegProcArg>, "NULL"),
        mode: default!(Option<&str>, "'append'"),
        key_columns: default!(Option<Vec<Option<String>>>, "NULL"),
        key_format: default!(Option<&str>, "NULL"),
        limit: default!(Option<i32>, 10),
        start_offset: default!(Option<i64>, -2),
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
        let target = super::target(super::PreviewArgs {
            source: SourceKind::Kafka,
            source_name: topic,
            relation,
            format: required(format, "format"),
            delimiter,
            quote,
            escape,
            columns,
            metadata,
            transform,
            mode,
            key_columns,
            key_format,
            limit,
        });
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
        if let Some(k) = broker_config.keys().find(|k| ingest_core::settings::is_reserved(k)) {
            let e = ingest_core::settings::SettingError::Reserved(k.clone());
            raise_with(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string(), None, e.hint().map(str::to_string));
        }
        let cfg = client_config(&brokers, &[&broker_config]).unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e));
        let timeout_ms = crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64;
        let probe = Probe::new(&cfg, Duration::from_millis(timeout_ms)).unwrap_or_else(|e| probe_error(topic, e));
        let partitions = probe.partitions(topic).unwrap_or_else(|e| probe_error(topic, e));
        let mut starts = BTreeMap::new();
        for p in &partitions {
            let start = match start_offset {
                // Within the partition: librdkafka would start an offset out of range over from
                // the beginning. Past the end there is nothing to show; before the first retained
                // offset, the first retained message is next.
                n if n >= 0 => {
                    let (low, high) = probe.watermarks(topic, *p).unwrap_or_else(|e| probe_error(topic, e));
                    n.clamp(low, high)
                }
                special => special,
            };
            starts.insert(*p, start);
        }
        let messages =
            probe.fetch(topic, &starts, limit as usize, start_offset == -1, target.features.uses_headers()).unwrap_or_else(|e| probe_error(topic, e));
        drop(probe);
        let outcomes = super::preview_messages(&target, target.relid, &messages);
        let keys: Vec<(i32, i64)> = messages.iter().map(|m| (m.pos.partition, m.pos.offset)).collect();
        let rows = super::result_rows(keys, outcomes);
        TableIterator::new(rows.into_iter().map(|((p, o), row, error, sqlstate)| (p, o, row, error, sqlstate)))
    }
}

#[pg_schema]
mod pipeline_kinesis {
    use super::JsonbText;
    use crate::api::writer_args::RegProcArg;
    use crate::api::JsonbArg;
    use crate::catalog::kinesis as cat;
    use crate::error::{raise, raise_with, required};
    use crate::shmem::SourceKind;
    use ingest_core::batch::{KinesisPos, Message};
    use ingest_core::kinesis::read::{OutsideShard, StartAt, Unpacked};
    use ingest_kinesis::{Kinesis, KinesisError};
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;
    use std::time::{Duration, Instant, SystemTime};

    /// Kinesis allows 5 GetRecords calls per second and shard.
    const POLL_GAP: Duration = Duration::from_millis(200);

    #[track_caller]
    fn kinesis_error(endpoint: &str, stream: &str, e: KinesisError) -> ! {
        match e {
            KinesisError::NotFound(_) => raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("Kinesis stream \"{stream}\" does not exist at endpoint \"{endpoint}\""),
            ),
            KinesisError::Interrupted => {
                pg_sys::check_for_interrupts!();
                raise(PgSqlErrorCode::ERRCODE_QUERY_CANCELED, "canceling statement")
            }
            // e.g. a start_time in the future
            KinesisError::Refused(m) if m.starts_with("InvalidArgument") => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("Kinesis refused to read stream \"{stream}\" at endpoint \"{endpoint}\": {m}"),
            ),
            other => raise_with(
                PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
                format!("could not read Kinesis stream \"{stream}\" at endpoint \"{endpoint}\": {other}"),
                None,
                Some("Check pipeline_kinesis.endpoints and that the endpoint is reachable; pipeline_ingest.broker_timeout sets the time limit.".into()),
            ),
        }
    }

    /// Waits `d` in short slices, handling interrupts between them.
    fn pause(d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            pgrx::check_for_interrupts!();
            std::thread::sleep(until.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
        }
    }

    /// Reads up to `limit` user records (KPL aggregates taken apart as a consumer does), shard by
    /// shard in the order ListShards gives (parents before their children). A shard is left when
    /// it is read to its end or caught up (no records and nothing behind); starting at LATEST
    /// (`wait_for_new`), shards are polled for new records until nothing came for the time limit.
    fn fetch(
        client: &Kinesis,
        endpoint: &str,
        stream: &str,
        start: &StartAt,
        limit: usize,
        wait_for_new: bool,
        idle: Duration,
    ) -> Vec<Message<KinesisPos>> {
        let shards = client.list_shards(stream).unwrap_or_else(|e| kinesis_error(endpoint, stream, e));
        let mut out = Vec::new();
        let mut readers: Vec<(String, (u128, u128), Option<String>)> = Vec::new();
        for s in &shards {
            match client.iterator(stream, &s.id, start) {
                Ok(it) => readers.push((s.id.clone(), s.hash_range, Some(it))),
                // A closed shard past its retention has no iterator: nothing to read there.
                Err(KinesisError::NotFound(_)) => {}
                Err(e) => kinesis_error(endpoint, stream, e),
            }
        }
        let mut last_record = Instant::now();
        loop {
            let mut more = false;
            for (shard, range, iterator) in readers.iter_mut() {
                let Some(it) = iterator.clone() else { continue };
                if out.len() >= limit {
                    return out;
                }
                let fetched = client.get_records(&it, (limit - out.len()) as i32).unwrap_or_else(|e| kinesis_error(endpoint, stream, e));
                let got = !fetched.records.is_empty();
                for r in fetched.records {
                    // User records are taken out of an aggregate only up to the limit.
                    let unpacked = Unpacked::new(shard, &r.seq, &r.partition_key, r.data, r.arrival_ms, Some(*range), OutsideShard::Skip, None);
                    for m in unpacked.take(limit.saturating_sub(out.len())) {
                        pgrx::check_for_interrupts!();
                        out.push(m);
                    }
                }
                *iterator = fetched.next_iterator;
                if got {
                    last_record = Instant::now();
                }
                let caught_up = !got && fetched.millis_behind_latest.unwrap_or(0) == 0;
                if iterator.is_some() && (wait_for_new || !caught_up) {
                    more = true;
                } else {
                    *iterator = None;
                }
            }
            if !more || out.len() >= limit || last_record.elapsed() >= idle {
                return out;
            }
            pause(POLL_GAP);
        }
    }

    /// What the next `limit` records of `stream` would become in `relation` with these
    /// consume_begin options: each row as JSON, or the error the record would raise, without
    /// writing anything or storing any position (no consumer needed). Starts at TRIM_HORIZON
    /// (`start_offset` -2), LATEST (-1: waits for new records) or `start_time`.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[pg_extern(volatile, parallel_unsafe, name = "preview")]
    fn kinesis_preview(
        endpoint: Option<&str>,
        stream: Option<&str>,
        relation: Option<&str>,
        format: default!(Option<&str>, "'text'"),
        delimiter: default!(Option<&str>, "NULL"),
        quote: default!(Option<&str>, "NULL"),
        escape: default!(Option<&str>, "NULL"),
        columns: default!(Option<Vec<Option<String>>>, "NULL"),
        metadata: default!(Option<JsonbArg>, "NULL"),
        transform: default!(Option<RegProcArg>, "NULL"),
        mode: default!(Option<&str>, "'append'"),
        key_columns: default!(Option<Vec<Option<String>>>, "NULL"),
        key_format: default!(Option<&str>, "NULL"),
        limit: default!(Option<i32>, 10),
        start_offset: default!(Option<i32>, "NULL"),
        start_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    ) -> TableIterator<
        'static,
        (
            name!(shard_id, String),
            name!(sequence_number, String),
            name!(sub_sequence, Option<i64>),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    > {
        let endpoint = required(endpoint, "endpoint");
        let stream = required(stream, "stream");
        let relation = required(relation, "relation");
        let limit = required(limit, "limit");
        let start = match (start_offset, start_time) {
            (Some(_), Some(_)) => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "give start_offset or start_time, not both"),
            (None | Some(-2), None) => StartAt::TrimHorizon,
            (Some(-1), None) => StartAt::Latest,
            (Some(s), None) => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("start_offset must be -2 (TRIM_HORIZON), -1 (LATEST) or NULL; got {s} (use start_time for a point in time)"),
            ),
            (None, Some(t)) => {
                let us = crate::api::seek::epoch_us(t);
                let at = if us >= 0 {
                    SystemTime::UNIX_EPOCH + Duration::from_micros(us as u64)
                } else {
                    SystemTime::UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
                };
                StartAt::AtTimestamp(at)
            }
        };
        if stream.is_empty() || stream.len() > 128 || !stream.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("\"{stream}\" is not a valid Kinesis stream name"));
        }
        let target = super::target(super::PreviewArgs {
            source: SourceKind::Kinesis,
            source_name: stream,
            relation,
            format: required(format, "format"),
            delimiter,
            quote,
            escape,
            columns,
            metadata,
            transform,
            mode,
            key_columns,
            key_format,
            limit,
        });
        let ep = cat::endpoint(endpoint).unwrap_or_else(|| {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("Kinesis endpoint \"{endpoint}\" does not exist"))
        });
        let timeout = Duration::from_millis(crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64);
        let client = Kinesis::connect(&ep, timeout)
            .unwrap_or_else(|e| kinesis_error(endpoint, stream, e))
            .interruptible(crate::worker::interrupt_pending);
        let messages = fetch(&client, endpoint, stream, &start, limit as usize, start == StartAt::Latest, timeout);
        drop(client);
        let outcomes = super::preview_messages(&target, target.relid, &messages);
        let keys: Vec<(String, String, Option<i64>)> = messages
            .iter()
            .map(|m| (m.pos.shard.clone(), m.pos.at.seq.as_str().to_string(), m.pos.at.sub.map(|s| s as i64)))
            .collect();
        let rows = super::result_rows(keys, outcomes);
        TableIterator::new(rows.into_iter().map(|((s, q, sub), row, error, sqlstate)| (s, q, sub, row, error, sqlstate)))
    }
}
