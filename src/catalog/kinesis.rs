//! `pipeline_kinesis.endpoints` and `consumers` (what `consume_begin` writes and workers read). The
//! workers' checkpoints and dead letters are in `seqnums`.

use super::spi;
use crate::xact::as_superuser;
use pgrx::prelude::*;

pub fn endpoint_exists(name: &str) -> bool {
    spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pipeline_kinesis.endpoints WHERE name = $1)",
        &[name.into()],
    ))
    .unwrap_or(false)
}

pub fn insert_endpoint(name: &str, region: &str, credfile: Option<&str>, url: Option<&str>) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            "INSERT INTO pipeline_kinesis.endpoints (name, region, credfile, url) VALUES ($1, $2, $3, $4)",
            &[name.into(), region.into(), credfile.into(), url.into()],
        ))
    });
}

/// An endpoint's region, url and credentials file.
pub fn endpoint(name: &str) -> Option<ingest_kinesis::Endpoint> {
    as_superuser(|| {
        spi(Spi::connect(|c| {
            let t = c.select(
                "SELECT region, url, credfile FROM pipeline_kinesis.endpoints WHERE name = $1",
                None,
                &[name.into()],
            )?;
            let mut out = None;
            for row in t {
                out = Some(ingest_kinesis::Endpoint {
                    region: row.get::<String>(1)?.unwrap_or_default(),
                    url: row.get(2)?,
                    credfile: row.get(3)?,
                });
            }
            Ok(out)
        }))
    })
}

/// How many consumers use an endpoint.
pub fn endpoint_users(name: &str) -> i64 {
    spi(Spi::get_one_with_args::<i64>(
        "SELECT count(*) FROM pipeline_kinesis.consumers WHERE endpoint = $1",
        &[name.into()],
    ))
    .unwrap_or(0)
}

pub fn delete_endpoint(name: &str) -> bool {
    as_superuser(|| {
        spi(Spi::get_one_with_args::<bool>(
            "WITH d AS (DELETE FROM pipeline_kinesis.endpoints WHERE name = $1 RETURNING 1) SELECT count(*) > 0 FROM d",
            &[name.into()],
        ))
    })
    .unwrap_or(false)
}

/// A consumer as stored in `pipeline_kinesis.consumers`, with its endpoint.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub id: i32,
    pub endpoint: String,
    pub stream: String,
    pub relid: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub parallelism: i32,
    pub poll_interval: i32,
    pub enabled: bool,
    pub generation: i64,
    /// Format, batches, error policy and its settings object (`config`).
    pub settings: crate::catalog::RowSettings,
    pub start_time_us: Option<i64>,
    pub region: String,
    pub url: Option<String>,
    pub credfile: Option<String>,
    pub features: crate::catalog::Features,
}

const CONSUMER_COLUMNS: &str = "k.id, k.endpoint, k.stream, k.relation::oid, k.owner::oid, k.parallelism, k.poll_interval, \
     k.enabled, k.generation, {START_TIME_US}, e.region, e.url, e.credfile, {SETTINGS}, {FEATURES}";

fn consumer_from_row(row: &pgrx::spi::SpiHeapTupleData) -> pgrx::spi::SpiResult<Consumer> {
    Ok(Consumer {
        id: row.get(1)?.unwrap_or_default(),
        endpoint: row.get(2)?.unwrap_or_default(),
        stream: row.get(3)?.unwrap_or_default(),
        relid: row.get(4)?.unwrap_or(pg_sys::Oid::INVALID),
        owner: row.get(5)?.unwrap_or(pg_sys::Oid::INVALID),
        parallelism: row.get(6)?.unwrap_or(1),
        poll_interval: row.get(7)?.unwrap_or(200),
        enabled: row.get(8)?.unwrap_or(false),
        generation: row.get(9)?.unwrap_or(0),
        start_time_us: row.get(10)?,
        region: row.get(11)?.unwrap_or_default(),
        url: row.get(12)?,
        credfile: row.get(13)?,
        settings: crate::catalog::RowSettings::from_row(row, 14)?,
        features: crate::catalog::Features::from_row(row, 24)?,
    })
}

/// Consumers matching a condition on `k` (the consumer) and `e` (its endpoint), by id. Read as
/// the superuser: row-level security hides other roles' consumers from the caller, but functions
/// must see them (to refuse changing them, not to create a second one).
/// (endpoints first: the extension's tables are locked in the order they were created, as DROP
/// EXTENSION locks them.)
pub fn select_consumers(where_sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<Consumer> {
    let q = format!(
        "SELECT {CONSUMER_COLUMNS} FROM pipeline_kinesis.endpoints e \
         JOIN pipeline_kinesis.consumers k ON e.name = k.endpoint {where_sql} ORDER BY k.id"
    )
    .replace("{FEATURES}", super::FEATURE_COLUMNS)
    .replace("{SETTINGS}", super::ROW_SETTINGS_COLUMNS)
    .replace("{START_TIME_US}", &super::start_time_us_sql("k.start_time"));
    as_superuser(|| {
        spi(Spi::connect(|c| {
            let t = c.select(q.as_str(), None, args)?;
            let mut out = Vec::new();
            for row in t {
                out.push(consumer_from_row(&row)?);
            }
            Ok(out)
        }))
    })
}

pub fn consumer(id: i32) -> Option<Consumer> {
    select_consumers("WHERE k.id = $1", &[id.into()]).into_iter().next()
}

pub fn all_consumers() -> Vec<Consumer> {
    select_consumers("", &[])
}

/// The consumer of `stream` at `endpoint` into the relation `relid`.
pub fn consumer_by_key(endpoint: &str, stream: &str, relid: pg_sys::Oid) -> Option<Consumer> {
    select_consumers("WHERE k.endpoint = $1 AND k.stream = $2 AND k.relation = $3", &[endpoint.into(), stream.into(), relid.into()])
        .into_iter()
        .next()
}

/// Consumers of `stream` at `endpoint` whose relation no longer exists and whose stored name is
/// `name` (a name as a user writes it; unqualified, it matches that table name in any schema).
pub fn consumers_of_missing_relation(endpoint: &str, stream: &str, name: &str) -> Vec<Consumer> {
    select_consumers(
        &format!("WHERE k.endpoint = $1 AND k.stream = $2 AND {}", super::consumers::missing_relation_named(3)),
        &[endpoint.into(), stream.into(), name.into()],
    )
}



/// Where a consumer starts reading, as `consume_begin` was told.
pub enum Start {
    /// TRIM_HORIZON: the oldest record each shard still holds.
    TrimHorizon,
    /// LATEST as of this transaction's start (now()), stored as a time so that a worker started
    /// later, or again after a crash, reads from the same point.
    Now,
    /// AT_TIMESTAMP: the given time.
    At(pgrx::datum::TimestampWithTimeZone),
}

/// Replaces a consumer's positions: stores where shards without a checkpoint start and forgets
/// every shard's checkpoint (the workers list the shards again and start them all from there).
pub fn restart_from(consumer_id: i32, start: Start) {
    let (sql, at) = match start {
        Start::TrimHorizon => ("UPDATE pipeline_kinesis.consumers SET start_time = NULL WHERE id = $1", None),
        Start::Now => ("UPDATE pipeline_kinesis.consumers SET start_time = now() WHERE id = $1", None),
        Start::At(t) => ("UPDATE pipeline_kinesis.consumers SET start_time = $2 WHERE id = $1", Some(t)),
    };
    as_superuser(|| {
        match at {
            Some(t) => spi(Spi::run_with_args(sql, &[consumer_id.into(), t.into()])),
            None => spi(Spi::run_with_args(sql, &[consumer_id.into()])),
        }
        spi(Spi::run_with_args("DELETE FROM pipeline_kinesis.seqnums WHERE consumer_id = $1", &[consumer_id.into()]));
    });
}
