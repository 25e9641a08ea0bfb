//! The outbox table: rows written by producing transactions, read and deleted by the producer.

use crate::catalog::spi;
use pgrx::prelude::*;

/// A message to send.
pub struct Pending {
    pub id: i64,
    pub topic: String,
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: Option<i64>,
}

/// Adds a message to the outbox in the current transaction; returns its id.
///
/// The row goes straight into the heap and the table's indexes, as `CatalogTupleInsert` writes
/// catalog rows, not through an INSERT statement: an executor started per message (which also
/// re-reads the table's CHECK constraints each time) cost several times the insert itself, and
/// `produce_message` / `emit_tuple` are called once per message. What the statement would add is
/// done here or by the callers: the id from the table's sequence, `created_at` now, the CHECKs
/// (a legal topic name, partition >= 0 or NULL, headers a JSON object) checked at the call, and
/// the extension's table has no triggers or row security. The row is the caller's transaction's
/// (and subtransaction's), visible to its next statements like an INSERT's. Like catalog rows,
/// it updates only plain indexes: the table's own primary key is one (an expression or partial
/// index someone added to the outbox would not be maintained correctly).
///
/// `produced_by` is the role a dead letter of the message is shown to (see `dead_letter`).
#[allow(clippy::too_many_arguments)]
pub fn insert(
    topic: &str,
    message: Option<&[u8]>,
    partition: Option<i32>,
    key: Option<&[u8]>,
    headers: Option<&str>,
    timestamp: Option<pgrx::datum::TimestampWithTimeZone>,
    produced_by: pg_sys::Oid,
) -> i64 {
    // SAFETY: in a transaction in a backend; the relation is opened and closed here (its lock
    // kept to the end of the transaction, as an INSERT's), the datums are palloc'd in the current
    // memory context and outlive heap_form_tuple, which copies them.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"pipeline_kafka".as_ptr(), false);
        let relid = pg_sys::get_relname_relid(c"outbox".as_ptr(), nsp);
        let seqid = pg_sys::get_relname_relid(c"outbox_id_seq".as_ptr(), nsp);
        if relid == pg_sys::InvalidOid || seqid == pg_sys::InvalidOid {
            crate::error::raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, "pipeline_kafka.outbox or its id sequence does not exist");
        }
        let id = next_id(seqid);
        let opened = crate::rel::OpenRelation::open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let rel = opened.as_ptr();
        let desc = (*rel).rd_att;
        let attrs = crate::compat::tuple_attrs(desc);
        let mut values = vec![pg_sys::Datum::from(0usize); attrs.len()];
        let mut nulls = vec![true; attrs.len()];
        for (i, att) in attrs.iter().enumerate() {
            if att.attisdropped {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(att.attname.data.as_ptr()).to_bytes();
            let value = match name {
                b"id" => id.into_datum(),
                b"topic" => topic.into_datum(),
                b"partition" => partition.into_datum(),
                b"key" => key.into_datum(),
                // `message` before 0.7.0: a database not yet updated (ALTER EXTENSION UPDATE)
                // still produces; its producer waits for the update.
                b"value" | b"message" => message.into_datum(),
                b"headers" => headers.map(|h| {
                    let h = std::ffi::CString::new(h).expect("JSON text has no NUL");
                    pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(h.as_ptr()))])
                        .expect("jsonb_in returns a value")
                }),
                b"timestamp" => timestamp.into_datum(),
                b"created_at" => Some(pg_sys::Datum::from(pg_sys::GetCurrentTimestamp())),
                b"produced_by" => Some(produced_by.into()),
                other => crate::error::raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("pipeline_kafka.outbox has a column this version does not write: {}", String::from_utf8_lossy(other)),
                ),
            };
            if let Some(v) = value {
                values[i] = v;
                nulls[i] = false;
            }
        }
        let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::CatalogTupleInsert(rel, tuple);
        pg_sys::heap_freetuple(tuple);
        drop(opened);
        id
    }
}

/// nextval of the outbox's id sequence, as the bootstrap superuser (callers of produce_message
/// need no rights on the sequence; nextval runs no user code, so no search_path matters).
///
/// # Safety
/// In a transaction; `seqid` is a sequence.
unsafe fn next_id(seqid: pg_sys::Oid) -> i64 {
    let mut uid = pg_sys::Oid::INVALID;
    let mut ctx: i32 = 0;
    // SAFETY: as the caller guarantees; on ERROR the (sub)transaction's abort restores the user.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut uid, &mut ctx);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            ctx | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
        let id = pgrx::direct_function_call::<i64>(pg_sys::nextval_oid, &[seqid.into_datum()]);
        pg_sys::SetUserIdAndSecContext(uid, ctx);
        id.expect("nextval returns a value")
    }
}

const PENDING_COLUMNS: &str = "id, topic, \"partition\", key, value, headers::text, \
     (LEAST(GREATEST(extract(epoch FROM \"timestamp\"), 0), 253402300800) * 1000)::bigint";

/// The oldest committed messages except those of the topics in `skip` (topics waiting out a
/// delivery failure, or with messages still in flight), at most `limit`, in id order, fetched in
/// chunks from one cursor: `next` gets the messages read so far and returns how many more to
/// fetch (0: enough).
///
/// One cursor is one snapshot, so a transaction that commits while the pass is read is wholly in
/// it or wholly out of it. Separate queries (`id > the last id read`) would each take a new
/// snapshot (the worker's transaction has an xid, so SPI does not reuse the active snapshot): one
/// committing between two of them would have its ids above the last one read sent in this pass and
/// its lower ones in a later pass, after them.
pub fn oldest(limit: i64, skip: &[String], mut next: impl FnMut(&[Pending]) -> usize) -> Vec<Pending> {
    let sql = format!("SELECT {PENDING_COLUMNS} FROM pipeline_kafka.outbox WHERE topic <> ALL($2) ORDER BY id LIMIT $1");
    spi(Spi::connect(|c| {
        let mut cursor = c.try_open_cursor(sql.as_str(), &[limit.into(), skip.to_vec().into()])?;
        let mut out = Vec::new();
        loop {
            let want = next(&out);
            if want == 0 {
                break;
            }
            let t = cursor.fetch(want as std::ffi::c_long)?;
            let got = t.len();
            rows_into(t, &mut out)?;
            if got < want {
                break;
            }
        }
        Ok(out)
    }))
}

/// The oldest committed message of `topic`, if any.
pub fn first_of(topic: &str) -> Option<Pending> {
    let sql = format!("SELECT {PENDING_COLUMNS} FROM pipeline_kafka.outbox WHERE topic = $1 ORDER BY id LIMIT 1");
    spi(Spi::connect(|c| {
        let mut out = Vec::new();
        rows_into(c.select(sql.as_str(), None, &[topic.into()])?, &mut out)?;
        Ok(out)
    }))
    .pop()
}

fn rows_into(t: pgrx::spi::SpiTupleTable<'_>, out: &mut Vec<Pending>) -> pgrx::spi::SpiResult<()> {
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
            value: row.get(5)?,
            headers,
            timestamp_ms: row.get(7)?,
        });
    }
    Ok(())
}

/// Moves messages the broker will never take (too large) from the outbox to
/// `pipeline_kafka.outbox_dead_letters`, with their (error, SQLSTATE): the topic's later messages
/// then go out. Row-level security shows each dead letter to members of the role that produced
/// it (and superusers).
pub fn dead_letter(rows: &[(i64, String, &str)]) {
    if rows.is_empty() {
        return;
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let errors: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
    let states: Vec<String> = rows.iter().map(|r| r.2.to_string()).collect();
    spi(Spi::run_with_args(
        "WITH d AS (DELETE FROM pipeline_kafka.outbox o USING unnest($1::bigint[], $2::text[], $3::text[]) AS f(id, error, sqlstate) \
                    WHERE o.id = f.id \
                    RETURNING o.id, o.topic, o.\"partition\", o.key, o.value, o.headers, o.\"timestamp\", o.produced_by, \
                              o.created_at, f.error, f.sqlstate) \
         INSERT INTO pipeline_kafka.outbox_dead_letters \
             (id, topic, \"partition\", key, value, headers, \"timestamp\", produced_by, created_at, error, sqlstate) \
         SELECT * FROM d",
        &[ids.into(), errors.into(), states.into()],
    ));
}

/// Deletes delivered messages. The ids go as ranges of consecutive ids (`lo..=hi`, every id in
/// it delivered), which one transaction's messages mostly are: the DELETE then walks the primary
/// key per range instead of testing every outbox row against a list of thousands of ids.
pub fn delete(ids: &[i64]) {
    let (lo, hi) = id_ranges(ids);
    if lo.is_empty() {
        return;
    }
    spi(Spi::run_with_args(
        "DELETE FROM pipeline_kafka.outbox o USING unnest($1::bigint[], $2::bigint[]) AS r(lo, hi) \
         WHERE o.id BETWEEN r.lo AND r.hi",
        &[lo.into(), hi.into()],
    ));
}

/// `ids` as maximal runs of consecutive integers: (starts, ends), each run's ids all in `ids`.
fn id_ranges(ids: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (mut lo, mut hi) = (Vec::new(), Vec::new());
    for id in sorted {
        match hi.last_mut() {
            Some(h) if *h + 1 == id => *h = id,
            _ => {
                lo.push(id);
                hi.push(id);
            }
        }
    }
    (lo, hi)
}

/// Deletes the pending messages of `topic` and its recorded delivery error, as the superuser (a
/// role granted `outbox_discard` needs no rights on the outbox; the search_path is pg_catalog
/// meanwhile); returns how many messages. A message the producer worker has already handed to
/// librdkafka (in flight, such as while the broker is down) can still be delivered.
pub fn discard(topic: &str) -> i64 {
    crate::xact::as_superuser(|| {
        let n = spi(Spi::get_one_with_args::<i64>(
            "WITH d AS (DELETE FROM pipeline_kafka.outbox WHERE topic = $1 RETURNING 1) SELECT count(*) FROM d",
            &[topic.into()],
        ));
        spi(Spi::run_with_args("DELETE FROM pipeline_kafka.producer_errors WHERE topic = $1", &[topic.into()]));
        n.unwrap_or(0)
    })
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
