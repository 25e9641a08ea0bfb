//! `pipeline_kafka.brokers`, `.consumers` and `.offsets`.

use super::spi;
use crate::xact::as_superuser;
use pgrx::prelude::*;
use std::collections::BTreeMap;

pub fn broker_exists(host: &str) -> bool {
    spi(Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pipeline_kafka.brokers WHERE host = $1)",
        &[host.into()],
    ))
    .unwrap_or(false)
}

/// Adds a broker with its settings: `shown` (secrets masked) in the readable table, `secrets`
/// apart.
pub fn insert_broker(host: &str, shown: &str, secrets: &[(String, String)]) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            "INSERT INTO pipeline_kafka.brokers (host, config) VALUES ($1, $2::jsonb)",
            &[host.into(), shown.into()],
        ));
        for (k, v) in secrets {
            spi(Spi::run_with_args(
                "INSERT INTO pipeline_kafka.secrets (broker, key, value) VALUES ($1, $2, $3)",
                &[host.into(), k.as_str().into(), v.as_str().into()],
            ));
        }
    });
}

/// Replaces the secret settings of a consumer.
pub fn set_consumer_secrets(consumer_id: i32, secrets: &[(String, String)]) {
    as_superuser(|| {
        spi(Spi::run_with_args("DELETE FROM pipeline_kafka.secrets WHERE consumer_id = $1", &[consumer_id.into()]));
        for (k, v) in secrets {
            spi(Spi::run_with_args(
                "INSERT INTO pipeline_kafka.secrets (consumer_id, key, value) VALUES ($1, $2, $3)",
                &[consumer_id.into(), k.as_str().into(), v.as_str().into()],
            ));
        }
    });
}

/// (owner, key, value) of secrets: `broker` is the broker host or the consumer id as text.
fn secrets(of_brokers: bool) -> Vec<(String, String, String)> {
    let q = if of_brokers {
        "SELECT broker, key, value FROM pipeline_kafka.secrets WHERE broker IS NOT NULL"
    } else {
        "SELECT consumer_id::text, key, value FROM pipeline_kafka.secrets WHERE consumer_id IS NOT NULL"
    };
    as_superuser(|| {
        spi(Spi::connect(|c| {
            let t = c.select(q, None, &[])?;
            let mut out = Vec::new();
            for row in t {
                out.push((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                ));
            }
            Ok(out)
        }))
    })
}

/// Deletes a broker; false when there was none.
pub fn delete_broker(host: &str) -> bool {
    as_superuser(|| {
        spi(Spi::get_one_with_args::<bool>(
            "WITH d AS (DELETE FROM pipeline_kafka.brokers WHERE host = $1 RETURNING 1) SELECT count(*) > 0 FROM d",
            &[host.into()],
        ))
    })
    .unwrap_or(false)
}

/// All brokers and the union of their extra client settings (later entries win on conflict).
pub fn brokers() -> (Vec<String>, serde_json::Map<String, serde_json::Value>) {
    let rows: Vec<(String, String)> = spi(Spi::connect(|c| {
        let t = c.select("SELECT host, config::text FROM pipeline_kafka.brokers ORDER BY host", None, &[])?;
        let mut out = Vec::new();
        for row in t {
            out.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
        }
        Ok(out)
    }));
    let secrets = if rows.is_empty() { Vec::new() } else { secrets(true) };
    let mut hosts = Vec::new();
    let mut config = serde_json::Map::new();
    for (h, c) in rows {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&c) {
            config.extend(m);
        }
        for (_, k, v) in secrets.iter().filter(|(owner, _, _)| *owner == h) {
            config.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        hosts.push(h);
    }
    (hosts, config)
}

/// A consumer as stored in `pipeline_kafka.consumers`.
#[derive(Debug, Clone)]
pub struct Consumer {
    pub id: i32,
    pub topic: String,
    pub relid: pg_sys::Oid,
    pub owner: pg_sys::Oid,
    pub group_id: Option<String>,
    pub maxbytes: i32,
    pub parallelism: i32,
    pub enabled: bool,
    pub generation: i64,
    /// Format, batches, error policy and client settings (`config`, secrets included).
    pub settings: crate::catalog::RowSettings,
    /// `config` was given by a superuser.
    pub config_by_superuser: bool,
    /// 0.4.0: metadata columns, transform, mode and keys (as stored), and the start time
    /// (microseconds since the Unix epoch) of partitions without a stored offset.
    pub features: crate::catalog::Features,
    pub start_time_us: Option<i64>,
    /// A stream-partitioned consumer (consume_begin_stream_partitioned): no relation of its own,
    /// each message's key names the relation its rows go to (`relid` is invalid).
    pub partitioned: bool,
}

// config_by_superuser is read through the row's jsonb: a database still at 0.1.0 (before ALTER
// EXTENSION UPDATE) calls this library through its old functions and has no such column.
const CONSUMER_COLUMNS: &str = "k.id, k.topic, k.relation::oid, k.owner::oid, k.group_id, k.maxbytes, k.parallelism, \
     k.enabled, k.generation, coalesce((to_jsonb(k) ->> 'config_by_superuser')::boolean, false), \
     k.relation IS NULL, {START_TIME_US}, {SETTINGS}, {FEATURES}";

fn consumer_from_row(row: &pgrx::spi::SpiHeapTupleData) -> pgrx::spi::SpiResult<Consumer> {
    Ok(Consumer {
        id: row.get(1)?.unwrap_or_default(),
        topic: row.get(2)?.unwrap_or_default(),
        relid: row.get(3)?.unwrap_or(pg_sys::Oid::INVALID),
        owner: row.get(4)?.unwrap_or(pg_sys::Oid::INVALID),
        group_id: row.get(5)?,
        maxbytes: row.get(6)?.unwrap_or(32_000_000),
        parallelism: row.get(7)?.unwrap_or(1),
        enabled: row.get(8)?.unwrap_or(false),
        generation: row.get(9)?.unwrap_or(0),
        config_by_superuser: row.get(10)?.unwrap_or(false),
        partitioned: row.get(11)?.unwrap_or(false),
        start_time_us: row.get(12)?,
        settings: crate::catalog::RowSettings::from_row(row, 13)?,
        features: crate::catalog::Features::from_row(row, 23)?,
    })
}

fn select_consumers(where_sql: &str, args: &[pgrx::datum::DatumWithOid]) -> Vec<Consumer> {
    let q = format!("SELECT {CONSUMER_COLUMNS} FROM pipeline_kafka.consumers k {where_sql} ORDER BY id")
        .replace("{FEATURES}", super::FEATURE_COLUMNS)
        .replace("{SETTINGS}", super::ROW_SETTINGS_COLUMNS)
        .replace("{START_TIME_US}", &super::start_time_us_sql("(to_jsonb(k) ->> 'start_time')::timestamptz"));
    // As the superuser: row-level security hides other roles' consumers from the caller, but the
    // functions must see them (to refuse changing them, not to create a second one).
    let mut consumers: Vec<Consumer> = as_superuser(|| {
        spi(Spi::connect(|c| {
            let t = c.select(q.as_str(), None, args)?;
            let mut out = Vec::new();
            for row in t {
                out.push(consumer_from_row(&row)?);
            }
            Ok(out)
        }))
    });
    if consumers.iter().any(|c| c.settings.config.values().any(|v| v.as_str() == Some(ingest_core::settings::MASK))) {
        let secrets = secrets(false);
        for c in consumers.iter_mut() {
            let id = c.id.to_string();
            for (_, k, v) in secrets.iter().filter(|(owner, _, _)| *owner == id) {
                c.settings.config.insert(k.clone(), serde_json::Value::String(v.clone()));
            }
        }
    }
    consumers
}

pub fn consumer(id: i32) -> Option<Consumer> {
    select_consumers("WHERE id = $1", &[id.into()]).into_iter().next()
}

pub fn consumer_by_key(topic: &str, relid: pg_sys::Oid) -> Option<Consumer> {
    select_consumers("WHERE topic = $1 AND relation = $2", &[topic.into(), relid.into()]).into_iter().next()
}

pub fn all_consumers() -> Vec<Consumer> {
    select_consumers("", &[])
}

/// Consumers of `topic` whose relation no longer exists and whose stored name is `name` (a name
/// as a user writes it; unqualified, it matches that table name in any schema).
pub fn consumers_of_missing_relation(topic: &str, name: &str) -> Vec<Consumer> {
    select_consumers(
        &format!("WHERE topic = $1 AND {}", super::consumers::missing_relation_named(2)),
        &[topic.into(), name.into()],
    )
}



/// Records whether a consumer's config was given by a superuser (the worker checks the config
/// against the owner's rights otherwise). A database still at 0.1.0 has no column for it; its
/// workers do not run before ALTER EXTENSION UPDATE, and until then owners are the callers.
pub fn set_config_by_superuser(consumer_id: i32, by_superuser: bool) {
    let has_column = spi(Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'pipeline_kafka.consumers'::regclass \
         AND attname = 'config_by_superuser' AND NOT attisdropped)",
    ))
    .unwrap_or(false);
    if has_column {
        as_superuser(|| {
            spi(Spi::run_with_args(
                "UPDATE pipeline_kafka.consumers SET config_by_superuser = $2 WHERE id = $1",
                &[consumer_id.into(), by_superuser.into()],
            ))
        });
    }
}

/// Stores where partitions without a stored offset start by time (None: by start_offset's rules).
pub fn set_start_time(consumer_id: i32, start_time: Option<pgrx::datum::TimestampWithTimeZone>) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            "UPDATE pipeline_kafka.consumers SET start_time = $2 WHERE id = $1",
            &[consumer_id.into(), start_time.into()],
        ))
    });
}

/// Bumps the generation of every enabled consumer of this database (all of them use every
/// broker entry), so the supervisor restarts their workers with the current broker list.
pub fn bump_all_generations() {
    as_superuser(|| {
        spi(Spi::run("UPDATE pipeline_kafka.consumers SET generation = generation + 1 WHERE enabled"))
    });
}

/// (partition, offset) rows of a query on pipeline_kafka.offsets.
fn select_offsets(query: &str, args: &[pgrx::datum::DatumWithOid]) -> BTreeMap<i32, i64> {
    spi(Spi::connect(|c| {
        let t = c.select(query, None, args)?;
        let mut out = BTreeMap::new();
        for row in t {
            if let (Some(p), Some(o)) = (row.get::<i32>(1)?, row.get::<i64>(2)?) {
                out.insert(p, o);
            }
        }
        Ok(out)
    }))
}

pub fn stored_offsets(consumer_id: i32) -> BTreeMap<i32, i64> {
    select_offsets(
        "SELECT \"partition\", \"offset\" FROM pipeline_kafka.offsets WHERE consumer_id = $1",
        &[consumer_id.into()],
    )
}

/// Upserts the next offset to read of each partition.
pub fn save_offsets(consumer_id: i32, next: &BTreeMap<i32, i64>) {
    if next.is_empty() {
        return;
    }
    let parts: Vec<i32> = next.keys().copied().collect();
    let offs: Vec<i64> = next.values().copied().collect();
    as_superuser(|| {
        spi(Spi::run_with_args(
            "INSERT INTO pipeline_kafka.offsets (consumer_id, \"partition\", \"offset\") \
             SELECT $1, p, o FROM unnest($2::int[], $3::bigint[]) AS u(p, o) \
             ON CONFLICT (consumer_id, \"partition\") DO UPDATE SET \"offset\" = EXCLUDED.\"offset\"",
            &[consumer_id.into(), parts.into(), offs.into()],
        ))
    });
}

pub fn clear_offsets(consumer_id: i32) {
    as_superuser(|| {
        spi(Spi::run_with_args("DELETE FROM pipeline_kafka.offsets WHERE consumer_id = $1", &[consumer_id.into()]))
    });
}

/// Locks and returns the stored next offsets of some partitions.
pub fn lock_offsets(consumer_id: i32, partitions: &[i32]) -> BTreeMap<i32, i64> {
    let parts: Vec<i32> = partitions.to_vec();
    as_superuser(|| {
        select_offsets(
            "SELECT \"partition\", \"offset\" FROM pipeline_kafka.offsets \
             WHERE consumer_id = $1 AND \"partition\" = ANY($2) FOR UPDATE",
            &[consumer_id.into(), parts.into()],
        )
    })
}

/// A message that could not become rows.
pub struct DeadLetter<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub error: String,
    pub sqlstate: String,
}

/// Stores dead letters (in the batch's transaction): one statement per 10,000, as a batch may
/// hold thousands (a statement each was most of the cost of a batch with 1% bad messages).
pub fn insert_dead_letters(consumer_id: i32, topic: &str, letters: &[DeadLetter]) {
    // 0.6.0: a dead letter belongs to the consumer's owner when it was written (it stays that
    // role's when another role takes the consumer over); a database not updated yet has no column.
    let (owner_column, owner_value) = if super::has_column("pipeline_kafka.dead_letters", "owner") {
        (", owner", ", (SELECT c.owner FROM pipeline_kafka.consumers c WHERE c.id = $1)")
    } else {
        ("", "")
    };
    for part in letters.chunks(10_000) {
        let partitions: Vec<i32> = part.iter().map(|d| d.partition).collect();
        let offsets: Vec<i64> = part.iter().map(|d| d.offset).collect();
        let keys: Vec<Option<&[u8]>> = part.iter().map(|d| d.key).collect();
        let values: Vec<Option<&[u8]>> = part.iter().map(|d| d.value).collect();
        let errors: Vec<&str> = part.iter().map(|d| d.error.as_str()).collect();
        let sqlstates: Vec<&str> = part.iter().map(|d| d.sqlstate.as_str()).collect();
        as_superuser(|| {
            spi(Spi::run_with_args(
                &format!(
                    "INSERT INTO pipeline_kafka.dead_letters \
                         (consumer_id, topic, \"partition\", \"offset\", key, value, error, sqlstate{owner_column}) \
                     SELECT $1, $2, p, o, k, v, e, s{owner_value} \
                     FROM unnest($3::int4[], $4::int8[], $5::bytea[], $6::bytea[], $7::text[], $8::text[]) AS u(p, o, k, v, e, s)"
                ),
                &[
                    consumer_id.into(),
                    topic.into(),
                    partitions.into(),
                    offsets.into(),
                    keys.into(),
                    values.into(),
                    errors.into(),
                    sqlstates.into(),
                ],
            ))
        });
    }
}

/// Bumps one consumer's generation (locking its row for the rest of the transaction), so its
/// running workers' batches roll back and the supervisor starts them again (pipeline_kafka.seek).
pub fn bump_generation(consumer_id: i32) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            "UPDATE pipeline_kafka.consumers SET generation = generation + 1 WHERE id = $1",
            &[consumer_id.into()],
        ))
    });
}

/// The stream-partitioned consumer of a topic (at most one: a partial unique index).
pub fn partitioned_consumer(topic: &str) -> Option<Consumer> {
    select_consumers("WHERE topic = $1 AND relation IS NULL", &[topic.into()]).into_iter().next()
}

