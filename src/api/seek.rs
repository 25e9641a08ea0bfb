//! `pipeline_kafka.seek`: moves a consumer's partitions to an offset or a time from SQL, fenced
//! against its running workers.
//!
//! The new offsets and a bumped generation commit together in the caller's transaction. A worker's
//! batch transaction locks the consumer row and compares the generation and its stored offsets
//! with what it believes (worker::pipeline): a batch in flight when the seek commits sees the new
//! generation and rolls back, so nothing read from the old positions commits afterwards; the
//! supervisor then starts the workers again at the new positions.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

/// Microseconds from 2000-01-01 (PostgreSQL's epoch) to 1970-01-01.
const UNIX_TO_PG_US: i64 = 946_684_800_000_000;

/// A start_time as microseconds since the Unix epoch; infinity is refused (22023), and so is a
/// time outside 4713 BC .. 9999-12-31 (22008), which no Kafka timestamp or Kinesis
/// AT_TIMESTAMP can name and whose microseconds since 1970 would not fit a bigint.
pub fn epoch_us(t: TimestampWithTimeZone) -> i64 {
    checked_epoch_us(t, "start_time", crate::catalog::MIN_START_TIME_EPOCH)
}

/// `t` (a parameter called `what`) as microseconds since the Unix epoch: refused when infinite
/// (22023) or before `min_epoch` seconds or from 10000-01-01 on (22008).
pub fn checked_epoch_us(t: TimestampWithTimeZone, what: &str, min_epoch: i64) -> i64 {
    if !t.is_finite() {
        crate::error::raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("{what} must be a finite time"));
    }
    let pg: i64 = t.into();
    let us = pg.checked_add(UNIX_TO_PG_US).filter(|us| {
        (min_epoch.saturating_mul(1_000_000)..crate::catalog::MAX_START_TIME_EPOCH * 1_000_000).contains(us)
    });
    us.unwrap_or_else(|| {
        let from = if min_epoch == 0 { "1970-01-01" } else { "4713 BC" };
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            format!("{what} must be from {from} to 9999-12-31 (UTC)"),
        )
    })
}

#[pg_schema]
mod pipeline_kafka {
    use crate::api::{is_superuser, wake_at_commit};
    use crate::catalog::kafka as cat;
    use crate::error::{raise, required};
    use crate::sources::kafka::{client_config, time_ms_from_us, Probe, ProbeError};
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[track_caller]
    fn probe_error(topic: &str, e: ProbeError) -> ! {
        crate::api::raise_probe_error(topic, "offsets", e)
    }

    /// Moves the consumer of `topic` into `relation` to `offset` (-2: the beginning, -1: the end,
    /// n >= 0) or to the first message stamped at or after `start_time`, in one partition or in
    /// all (`partition` NULL). Running workers restart there when the transaction commits; a
    /// batch they were writing does not commit. Returns how many partitions were moved.
    // Its own Rust (and C symbol) name, so a Kinesis seek could have one too.
    #[pg_extern(volatile, parallel_unsafe, name = "seek")]
    fn kafka_seek(
        topic: Option<&str>,
        relation: Option<&str>,
        partition: default!(Option<i32>, "NULL"),
        offset: default!(Option<i64>, "NULL"),
        start_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    ) -> i32 {
        let topic = required(topic, "topic");
        let relation = required(relation, "relation");
        if offset.is_some() == start_time.is_some() {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "give exactly one of offset and start_time");
        }
        if let Some(o) = offset.filter(|o| *o < -2) {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("offset must be -2 (beginning), -1 (end) or an offset >= 0; got {o}"),
            );
        }
        let time_ms = start_time.map(|t| time_ms_from_us(super::epoch_us(t)));
        let c = crate::api::named_kafka_consumer(topic, relation);
        // The row lock first: a batch in flight either committed before (and its offsets are
        // overwritten below) or waits and then finds the new generation.
        cat::bump_generation(c.id);

        let (brokers, broker_config) = cat::brokers();
        if brokers.is_empty() {
            raise(PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, "no Kafka broker is configured");
        }
        // The consumer's own settings as well (they may be needed to reach the brokers), unless
        // a superuser gave settings the caller could not give: those are for the worker only.
        let own = if ingest_core::settings::check(&c.settings.config, is_superuser()).is_ok() { c.settings.config.clone() } else { Default::default() };
        let mut cfg = client_config(&brokers, &[&broker_config, &own])
            .unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e));
        if let Some(g) = &c.group_id {
            cfg.set("group.id", g);
        }
        let timeout_ms = crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64;
        let probe = Probe::new(&cfg, Duration::from_millis(timeout_ms)).unwrap_or_else(|e| probe_error(topic, e));
        let all = probe.partitions(topic).unwrap_or_else(|e| probe_error(topic, e));
        let chosen: Vec<i32> = match partition {
            None => all,
            Some(p) if all.contains(&p) => vec![p],
            Some(p) => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("topic \"{topic}\" has no partition {p} (it has {})", all.len()),
            ),
        };
        let next: BTreeMap<i32, i64> = match time_ms {
            Some(t) => probe.offsets_for_time(topic, &chosen, t).unwrap_or_else(|e| probe_error(topic, e)),
            None => {
                let wanted = offset.unwrap_or(-1);
                let mut next = BTreeMap::new();
                for p in &chosen {
                    let (low, high) = probe.watermarks(topic, *p).unwrap_or_else(|e| probe_error(topic, e));
                    let off = match wanted {
                        -2 => low,
                        -1 => high,
                        // Deleted by retention: the first message that still exists.
                        n if n < low => low,
                        // librdkafka would reset an offset past the end to the beginning (and
                        // read everything again): refused instead.
                        n if n > high => raise(
                            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                            format!("offset {n} is past the end of partition {p} of topic \"{topic}\" (its end offset is {high})"),
                        ),
                        n => n,
                    };
                    next.insert(*p, off);
                }
                next
            }
        };
        cat::save_offsets(c.id, &next);
        wake_at_commit();
        next.len() as i32
    }
}
