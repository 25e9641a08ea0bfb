//! Status of consumers (`pipeline_kafka.consumer_status`, `pipeline_kinesis.consumer_status`)
//! and topic watermarks.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// What partition_status / shard_status show of one stream of a consumer (see `slot_rows`).
struct Shown {
    consumer_id: i32,
    stream: i32,
    worker_pid: Option<i32>,
    /// Kafka: high watermark; Kinesis: MillisBehindLatest.
    latest: Option<i64>,
    messages: i64,
    rows: i64,
    dead_letters: i64,
    batches: i64,
    last_batch_at: Option<TimestampWithTimeZone>,
    /// Kinesis only: user records skipped.
    skipped: i64,
    rows_per_second: Option<f64>,
    dead_letter_run: Option<String>,
}

/// The progress this database's workers of one system published in shared memory. The worker pid
/// and latest position show only while a worker runs (a negative position: not known yet).
/// Only the rows of consumers whose owner the caller has the privileges of (superusers: all),
/// as the consumer_status views filter: a caller calling the function directly sees no more.
fn slot_rows(source: crate::shmem::SourceKind) -> Vec<Shown> {
    // SAFETY: MyDatabaseId is set in a connected backend; GetUserId in a transaction;
    // GetCurrentTimestamp is a plain call.
    let (dboid, caller, now) = unsafe { (pg_sys::MyDatabaseId, pg_sys::GetUserId(), pg_sys::GetCurrentTimestamp()) };
    let table = match source {
        crate::shmem::SourceKind::Kafka => "pipeline_kafka.consumers",
        crate::shmem::SourceKind::Kinesis => "pipeline_kinesis.consumers",
    };
    // Read as the superuser past row-level security, filtered for the caller by pg_has_role.
    let visible: std::collections::HashSet<i32> = crate::xact::as_superuser(|| {
        crate::catalog::spi(Spi::connect(|c| {
            let t = c.select(
                &format!("SELECT id FROM {table} WHERE pg_catalog.pg_has_role($1, owner, 'USAGE')"),
                None,
                &[caller.into()],
            )?;
            let mut ids = std::collections::HashSet::new();
            for row in t {
                if let Some(id) = row.get::<i32>(1)? {
                    ids.insert(id);
                }
            }
            Ok::<_, pgrx::spi::SpiError>(ids)
        }))
    });
    crate::shmem::partitions_of(dboid, source)
        .into_iter()
        .filter(|s| visible.contains(&s.consumer_id))
        .map(|s| Shown {
            consumer_id: s.consumer_id,
            stream: s.partition,
            worker_pid: (s.worker_pid != 0).then_some(s.worker_pid),
            latest: (s.high_watermark >= 0 && s.worker_pid != 0).then_some(s.high_watermark),
            messages: s.messages,
            rows: s.rows,
            dead_letters: s.dead_letters,
            batches: s.batches,
            last_batch_at: (s.last_batch_at != 0)
                // SAFETY: a TimestampTz is a by-value int64 datum.
                .then(|| unsafe { TimestampWithTimeZone::from_datum(pg_sys::Datum::from(s.last_batch_at), false) })
                .flatten(),
            skipped: s.skipped,
            rows_per_second: s.recent.rows_per_second(now),
            dead_letter_run: s.recent.run_text(),
        })
        .collect()
}

#[pg_schema]
mod pipeline_kafka {
    use crate::error::raise;
    use crate::sources::kafka::{client_config, Probe, ProbeError};
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;
    use std::time::Duration;

    /// Per-partition progress published by this database's workers in shared memory (used by the
    /// consumer_status view), of the consumers the caller may see. `rows_per_second`: rows of the
    /// last minute (since the first batch when that is more recent) per second; `dead_letter_run`:
    /// e.g. "the last 300 messages were all dead letters" while the latest batches of the
    /// partition, at least 10 messages, were all or mostly (>= 90 %) dead letters, else NULL.
    #[allow(clippy::type_complexity)]
    #[pg_extern(volatile, parallel_restricted)]
    fn partition_status() -> TableIterator<
        'static,
        (
            name!(consumer_id, i32),
            name!(partition, i32),
            name!(worker_pid, Option<i32>),
            name!(high_watermark, Option<i64>),
            name!(messages, i64),
            name!(rows, i64),
            name!(dead_letters, i64),
            name!(batches, i64),
            name!(last_batch_at, Option<TimestampWithTimeZone>),
            name!(rows_per_second, Option<f64>),
            name!(dead_letter_run, Option<String>),
        ),
    > {
        let rows = super::slot_rows(crate::shmem::SourceKind::Kafka).into_iter().map(|s| {
            (s.consumer_id, s.stream, s.worker_pid, s.latest, s.messages, s.rows, s.dead_letters, s.batches, s.last_batch_at, s.rows_per_second, s.dead_letter_run)
        });
        TableIterator::new(rows)
    }

    /// Low and high watermarks of a topic's partitions (all of them when `partition` is NULL),
    /// asked from the brokers within pipeline_ingest.broker_timeout.
    #[pg_extern(volatile, parallel_unsafe)]
    fn topic_watermarks(
        topic: Option<&str>,
        partition: default!(Option<i32>, "NULL"),
    ) -> TableIterator<'static, (name!(topic, String), name!(partition, i32), name!(low, i64), name!(high, i64))> {
        let topic = crate::error::required(topic, "topic");
        if let Err(e) = ingest_core::broker::check_topic(topic) {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
        }
        let (brokers, config) = crate::catalog::kafka::brokers();
        if brokers.is_empty() {
            raise(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "no Kafka broker is configured");
        }
        let cfg = client_config(&brokers, &[&config]).unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e));
        let timeout = Duration::from_millis(crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64);
        let fail = |e: ProbeError| -> ! { crate::api::raise_probe_error(topic, "watermarks", e) };
        let probe = Probe::new(&cfg, timeout).unwrap_or_else(|e| fail(e));
        let all = probe.partitions(topic).unwrap_or_else(|e| fail(e));
        let wanted: Vec<i32> = match partition {
            None => all,
            Some(p) if all.contains(&p) => vec![p],
            Some(p) => raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("Kafka topic \"{topic}\" has no partition {p}")),
        };
        let rows: Vec<_> = wanted
            .into_iter()
            .map(|p| {
                let (low, high) = probe.watermarks(topic, p).unwrap_or_else(|e| fail(e));
                (topic.to_string(), p, low, high)
            })
            .collect();
        TableIterator::new(rows)
    }
}

#[pg_schema]
mod pipeline_kinesis {
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;

    /// Per-shard progress published by this database's Kinesis workers in shared memory (used by
    /// the consumer_status view), of the consumers the caller may see. `shard` is the shard's status key: the number that ends its id
    /// (shardId-000000000003: 3), or -1 when that does not fit an int. `skipped_records`: KPL user
    /// records skipped for lying outside the shard's hash key range (config
    /// kpl_records_outside_shard), since the server started. `rows_per_second` and
    /// `dead_letter_run` as in pipeline_kafka.partition_status.
    #[allow(clippy::type_complexity)]
    #[pg_extern(volatile, parallel_restricted)]
    fn shard_status() -> TableIterator<
        'static,
        (
            name!(consumer_id, i32),
            name!(shard, i32),
            name!(worker_pid, Option<i32>),
            name!(millis_behind_latest, Option<i64>),
            name!(records, i64),
            name!(rows, i64),
            name!(dead_letters, i64),
            name!(batches, i64),
            name!(last_batch_at, Option<TimestampWithTimeZone>),
            name!(skipped_records, i64),
            name!(rows_per_second, Option<f64>),
            name!(dead_letter_run, Option<String>),
        ),
    > {
        // The worker publishes MillisBehindLatest where Kafka's publish their high watermark.
        let rows = super::slot_rows(crate::shmem::SourceKind::Kinesis).into_iter().map(|s| {
            (s.consumer_id, s.stream, s.worker_pid, s.latest, s.messages, s.rows, s.dead_letters, s.batches, s.last_batch_at, s.skipped, s.rows_per_second, s.dead_letter_run)
        });
        TableIterator::new(rows)
    }
}
