//! Kinesis previews (`pipeline_kinesis.preview`): what the next records of a stream would become
//! in a relation, as `crate::api::preview` does for Kafka topics (the same seam and rules).

use pgrx::prelude::*;

#[pg_schema]
mod pipeline_kinesis {
    use crate::api::preview::{self as pv, JsonbText};
    use crate::api::consumer_args::row_args;
    use crate::api::legacy::{transform_text, RegProcArg};
    use crate::api::JsonbArg;
    use crate::catalog::kinesis as cat;
    use crate::error::{raise, raise_with, required};
    use crate::shmem::SourceKind;
    use ingest_core::batch::{KinesisPos, Message};
    use ingest_core::kinesis::read::{OutsideShard, StartAt, Unpacked};
    use ingest_kinesis::{Kinesis, KinesisError};
    use ingest_core::spec::KinesisStart;
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
    pub(crate) fn kinesis_preview_v070(
        endpoint: Option<&str>,
        stream: Option<&str>,
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
        start_offset: default!(Option<i32>, "NULL"),
        start_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    ) -> TableIterator<
        'static,
        (
            name!(shard_id, String),
            name!(sequence_number, String),
            name!(sub_sequence, Option<i64>),
            name!(action, String),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    > {
        let endpoint = required(endpoint, "endpoint");
        let stream = required(stream, "stream");
        let relation = required(relation, "relation");
        let limit = required(limit, "limit");
        ingest_core::spec::check_stream(stream).unwrap_or_else(|e| crate::api::consumer_args::raise_spec(e));
        let start = start_at(start_offset, start_time);
        let given = row_args(Some(required(format, "format")), delimiter, quote, escape, columns, metadata, transform, mode, key_columns, key_format);
        let target = pv::target(SourceKind::Kinesis, stream, relation, given, limit);
        run(endpoint, stream, &target, limit, start)
    }

    /// preview as 0.4.0 .. 0.6.0 declared it (transform regprocedure, no action column): the symbol
    /// stays for databases whose extension is not updated yet; no SQL is generated.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn kinesis_preview(
        endpoint: Option<&str>,
        stream: Option<&str>,
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
        start_offset: Option<i32>,
        start_time: Option<TimestampWithTimeZone>,
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
        let transform = transform_text(transform);
        let rows = kinesis_preview_v070(
            endpoint, stream, relation, format, delimiter, quote, escape, columns, metadata, transform.as_deref(), mode, key_columns,
            key_format, limit, start_offset, start_time,
        );
        TableIterator::new(rows.map(|(s, q, sub, _, row, error, sqlstate)| (s, q, sub, row, error, sqlstate)))
    }

    type Rows = TableIterator<
        'static,
        (
            name!(shard_id, String),
            name!(sequence_number, String),
            name!(sub_sequence, Option<i64>),
            name!(action, String),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    >;

    /// Where a preview starts: TRIM_HORIZON (start_offset NULL or -2), LATEST (-1) or start_time.
    fn start_at(start_offset: Option<i32>, start_time: Option<TimestampWithTimeZone>) -> StartAt {
        let start = ingest_core::spec::kinesis_start(start_offset, start_time.map(crate::api::seek::epoch_us))
            .unwrap_or_else(|e| crate::api::consumer_args::raise_spec(e));
        match start {
            None | Some(KinesisStart::TrimHorizon) => StartAt::TrimHorizon,
            Some(KinesisStart::Latest) => StartAt::Latest,
            Some(KinesisStart::At(us)) if us >= 0 => StartAt::AtTimestamp(SystemTime::UNIX_EPOCH + Duration::from_micros(us as u64)),
            Some(KinesisStart::At(us)) => StartAt::AtTimestamp(SystemTime::UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())),
        }
    }

    /// Reads up to `limit` records of `stream` from `start` and writes them as `target` says,
    /// rolled back; one result row per row each became (or one saying what happened).
    fn run(endpoint: &str, stream: &str, target: &crate::worker::pipeline::Target, limit: i32, start: StartAt) -> Rows {
        let ep = cat::endpoint(endpoint).unwrap_or_else(|| {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("Kinesis endpoint \"{endpoint}\" does not exist"))
        });
        let timeout = Duration::from_millis(crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64);
        let client = Kinesis::connect(&ep, timeout)
            .unwrap_or_else(|e| kinesis_error(endpoint, stream, e))
            .interruptible(crate::worker::interrupt_pending);
        let messages = fetch(&client, endpoint, stream, &start, limit as usize, start == StartAt::Latest, timeout);
        drop(client);
        let outcomes = pv::preview_messages(target, target.relid, &messages);
        let keys: Vec<(String, String, Option<i64>)> = messages
            .iter()
            .map(|m| (m.pos.shard.clone(), m.pos.at.seq.as_str().to_string(), m.pos.at.sub.map(|s| s as i64)))
            .collect();
        let rows = pv::result_rows(keys, outcomes);
        TableIterator::new(rows.into_iter().map(|((s, q, sub), action, row, error, sqlstate)| (s, q, sub, action, row, error, sqlstate)))
    }

    /// What the next `limit` records of consumer `consumer_id`'s stream would become in its
    /// relation with its stored settings (as `preview` above with them given), from TRIM_HORIZON
    /// (`start_offset` NULL or -2), LATEST (-1) or `start_time`. Only who may manage the consumer
    /// may (42501).
    #[allow(clippy::type_complexity)]
    #[pg_extern(volatile, parallel_unsafe, name = "preview")]
    fn kinesis_preview_consumer(
        consumer_id: Option<i32>,
        limit: default!(Option<i32>, 10),
        start_offset: default!(Option<i32>, "NULL"),
        start_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    ) -> TableIterator<
        'static,
        (
            name!(shard_id, String),
            name!(sequence_number, String),
            name!(sub_sequence, Option<i64>),
            name!(action, String),
            name!(row, Option<JsonbText>),
            name!(error, Option<String>),
            name!(sqlstate, Option<String>),
        ),
    > {
        let id = required(consumer_id, "consumer_id");
        let limit = required(limit, "limit");
        let start = start_at(start_offset, start_time);
        let consumer = cat::consumer(id);
        let endpoint = consumer.as_ref().map(|c| c.endpoint.clone()).unwrap_or_default();
        let stored = consumer.map(|c| pv::StoredConsumer { id: c.id, owner: c.owner, relid: c.relid, relname: None, source_name: c.stream });
        let (c, target) = pv::consumer_target(SourceKind::Kinesis, stored, id, limit);
        run(&endpoint, &c.source_name, &target, limit, start)
    }
}
