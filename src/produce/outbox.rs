//! The outbox table: rows written by producing transactions, read and deleted by the producer.

use crate::catalog::spi;
use crate::xact::as_superuser;
use pgrx::prelude::*;

/// A message to send.
pub struct Pending {
    pub id: i64,
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub message: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: Option<i64>,
}

thread_local! {
    /// The outbox INSERT, planned once per backend (the plan cache replans it if the table changes).
    static INSERT_PLAN: std::cell::RefCell<Option<pgrx::spi::OwnedPreparedStatement>> = const { std::cell::RefCell::new(None) };
}

const INSERT_SQL: &str = "INSERT INTO pipeline_kafka.outbox (topic, \"partition\", key, message, headers, \"timestamp\") \
                          VALUES ($1, $2, $3, $4, $5::jsonb, $6) RETURNING id";

/// Adds a message to the outbox in the current transaction; returns its id.
pub fn insert(
    topic: &str,
    message: Option<&[u8]>,
    partition: Option<i32>,
    key: Option<&[u8]>,
    headers: Option<&str>,
    timestamp: Option<pgrx::datum::TimestampWithTimeZone>,
) -> i64 {
    use pgrx::pg_sys::{PgBuiltInOids as T, PgOid};
    as_superuser(|| {
        INSERT_PLAN.with(|cell| {
            let mut plan = cell.borrow_mut();
            spi(Spi::connect_mut(|c| {
                if plan.is_none() {
                    let types = [T::TEXTOID, T::INT4OID, T::BYTEAOID, T::BYTEAOID, T::TEXTOID, T::TIMESTAMPTZOID]
                        .map(PgOid::BuiltIn);
                    *plan = Some(c.prepare_mut(INSERT_SQL, &types)?.keep());
                }
                let stmt = plan.as_ref().expect("prepared just above");
                c.update(
                    stmt,
                    None,
                    &[topic.into(), partition.into(), key.into(), message.into(), headers.into(), timestamp.into()],
                )?
                .first()
                .get_one::<i64>()
            }))
            .expect("INSERT ... RETURNING id returns a row")
        })
    })
}

/// The oldest `limit` committed messages, except those of the topics in `skip` (topics waiting
/// out a delivery failure, or with messages still in flight).
pub fn oldest(limit: i64, skip: &[String]) -> Vec<Pending> {
    let skip = skip.to_vec();
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT id, topic, \"partition\", key, message, headers::text, \
                    (extract(epoch FROM \"timestamp\") * 1000)::bigint \
             FROM pipeline_kafka.outbox WHERE topic <> ALL($2) ORDER BY id LIMIT $1",
            None,
            &[limit.into(), skip.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            let headers_text: Option<String> = row.get(6)?;
            let headers = match headers_text.and_then(|h| serde_json::from_str::<serde_json::Value>(&h).ok()) {
                Some(serde_json::Value::Object(m)) => m
                    .into_iter()
                    .map(|(k, v)| {
                        let value = match v {
                            serde_json::Value::Null => None,
                            serde_json::Value::String(s) => Some(s.into_bytes()),
                            other => Some(other.to_string().into_bytes()),
                        };
                        (k, value)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            out.push(Pending {
                id: row.get(1)?.unwrap_or_default(),
                topic: row.get(2)?.unwrap_or_default(),
                partition: row.get(3)?,
                key: row.get(4)?,
                message: row.get(5)?,
                headers,
                timestamp_ms: row.get(7)?,
            });
        }
        Ok(out)
    }))
}

/// Deletes delivered messages.
pub fn delete(ids: &[i64]) {
    if ids.is_empty() {
        return;
    }
    let ids = ids.to_vec();
    spi(Spi::run_with_args("DELETE FROM pipeline_kafka.outbox WHERE id = ANY($1)", &[ids.into()]));
}

/// Records the last delivery error of a topic, or clears it (None).
pub fn set_topic_error(topic: &str, error: Option<&str>) {
    match error {
        Some(e) => spi(Spi::run_with_args(
            "INSERT INTO pipeline_kafka.producer_errors (topic, last_error) VALUES ($1, $2) \
             ON CONFLICT (topic) DO UPDATE SET last_error = EXCLUDED.last_error, last_error_at = now()",
            &[topic.into(), e.into()],
        )),
        None => spi(Spi::run_with_args("DELETE FROM pipeline_kafka.producer_errors WHERE topic = $1", &[topic.into()])),
    }
}
