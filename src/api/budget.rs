//! Whether this database's enabled consumers need more worker processes than
//! `pipeline_ingest.max_workers_per_database` allows: each consume_begin says so with a NOTICE,
//! since a consumer without a worker otherwise just sits 'waiting'.

use crate::catalog::spi;
use crate::shmem::SourceKind;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// How many consumer workers a database may run under a budget of `budget` workers: one of a
/// budget of two or more is kept for the producer (as worker/supervisor.rs starts them).
pub fn consumer_worker_limit(budget: i32) -> usize {
    let budget = budget.max(1) as usize;
    if budget > 1 {
        budget - 1
    } else {
        1
    }
}

/// The workers the supervisor starts for each enabled consumer of one system, as it counts them:
/// worker index 0, and the index (stream number mod parallelism) of every partition or shard
/// stored for it. Streams not stored yet are not counted: an estimate from below, never a
/// warning for nothing.
fn workers_of(source: SourceKind) -> BTreeMap<i32, usize> {
    let query = match source {
        SourceKind::Kafka => {
            "SELECT c.id, c.parallelism, o.\"partition\"::text FROM pipeline_kafka.consumers c \
             LEFT JOIN pipeline_kafka.offsets o ON o.consumer_id = c.id WHERE c.enabled"
        }
        SourceKind::Kinesis => {
            "SELECT c.id, c.parallelism, n.shard_id FROM pipeline_kinesis.consumers c \
             LEFT JOIN pipeline_kinesis.seqnums n ON n.consumer_id = c.id WHERE c.enabled"
        }
    };
    let rows: Vec<(i32, i32, Option<String>)> = crate::xact::as_superuser(|| {
        spi(Spi::connect(|c| {
            let mut out = Vec::new();
            for row in c.select(query, None, &[])? {
                out.push((row.get::<i32>(1)?.unwrap_or_default(), row.get::<i32>(2)?.unwrap_or(1), row.get::<String>(3)?));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        }))
    });
    let mut indexes: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
    for (id, parallelism, stream) in rows {
        let p = parallelism.max(1);
        let set = indexes.entry(id).or_default();
        set.insert(0);
        let index = match (source, stream) {
            (_, None) => continue,
            (SourceKind::Kafka, Some(s)) => s.parse::<i32>().map_or(0, |n| n.rem_euclid(p)),
            (SourceKind::Kinesis, Some(s)) => ingest_core::kinesis::lineage::worker_of(&s, p),
        };
        set.insert(index);
    }
    indexes.into_iter().map(|(id, set)| (id, set.len())).collect()
}

/// The workers this database's enabled consumers need, per system, when that is more than the
/// budget gives consumers: (needed, Kafka's, Kinesis's, the consumers' limit, the budget).
struct Shortfall {
    needed: usize,
    kafka: BTreeMap<i32, usize>,
    kinesis: BTreeMap<i32, usize>,
    limit: usize,
    budget: i32,
}

fn shortfall() -> Option<Shortfall> {
    let budget = crate::guc::MAX_WORKERS_PER_DATABASE.get();
    let limit = consumer_worker_limit(budget);
    let kafka = workers_of(SourceKind::Kafka);
    let kinesis = workers_of(SourceKind::Kinesis);
    let needed: usize = kafka.values().chain(kinesis.values()).sum();
    (needed > limit).then_some(Shortfall { needed, kafka, kinesis, limit, budget })
}

fn report(s: &Shortfall, first: String) {
    let kept = if s.budget > 1 { ", one being kept for the producer" } else { "" };
    ErrorReport::new(
        PgSqlErrorCode::ERRCODE_WARNING,
        format!(
            "{first}this database's enabled consumers need {} in all, more than the {} that pipeline_ingest.max_workers_per_database = {} allows{kept}: \
             the workers that find no room wait (state 'waiting' in consumer_status) until other consumers stop",
            s.needed, s.limit, s.budget
        ),
        "pipeline_ingest",
    )
    .set_hint(format!(
        "Each consumer holds at least one worker process while it is enabled (one per partition or shard, up to its parallelism). \
         Raise the setting (ALTER SYSTEM SET pipeline_ingest.max_workers_per_database = {}; SELECT pg_reload_conf();) \
         or stop consumers with consume_end.",
        s.needed + (s.budget > 1) as usize
    ))
    .report(PgLogLevel::NOTICE);
}

/// Raises a NOTICE when the database's enabled consumers of both systems, `consumer_id` of
/// `source` just begun among them, need more workers than the budget gives consumers. Cheap:
/// two catalog queries, no broker call.
pub fn notice_if_workers_wait(source: SourceKind, consumer_id: i32) {
    let Some(s) = shortfall() else { return };
    let own = match source {
        SourceKind::Kafka => s.kafka.get(&consumer_id),
        SourceKind::Kinesis => s.kinesis.get(&consumer_id),
    }
    .copied()
    .unwrap_or(1);
    report(&s, format!("consumer {consumer_id} needs {own} worker process{}, and ", if own == 1 { "" } else { "es" }));
}

/// The same NOTICE after consume_begin() started `started` stored consumers at once.
pub fn notice_if_started_workers_wait(started: i32) {
    if started <= 0 {
        return;
    }
    let Some(s) = shortfall() else { return };
    report(&s, format!("{started} consumer{} started; ", if started == 1 { "" } else { "s" }));
}
