//! Batches through a user's transform function (consume_begin's `transform`): the function gets
//! the batch as pipeline_kafka.message[] / pipeline_kinesis.record[] and runs as the consumer's
//! owner inside the batch transaction, so what it writes commits with the positions.
//!
//! A function returning SETOF the relation's row type has its rows inserted into the relation (as
//! the owner); one returning void wrote what it wanted itself. When it fails on the data (SQLSTATE
//! classes of `PgError::is_data_error`), it is called again on each half of the messages, each in
//! its own subtransaction, down to the messages it fails on: those are rejected (dead letters with
//! their raw bytes and the function's error), the others' effects stay, as with COPY.

use super::write::Written;
use crate::catalog::spi;
use crate::error::raise;
use crate::worker::pipeline::Target;
use crate::xact::PgError;
use ingest_core::batch::{Message, PosFields, Position};
use ingest_core::headers::ByName;
use ingest_core::prepare::Rejected;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

pub fn write<P: Position>(target: &Target, relid: pg_sys::Oid, messages: &[Message<P>]) -> Result<Written, PgError> {
    let Some(first) = messages.first() else { return Ok(Written::default()) };
    let kind = kind_of(first);
    let stored = target.features.transform.as_deref().unwrap_or_default();
    let (function, returns_rows) = resolve(stored, relid);
    let statement = statement(kind, &function, returns_rows.then(|| insert_target(relid)).as_ref());
    let all: Vec<usize> = (0..messages.len()).collect();
    let mut written = Written::default();
    let mut done: Vec<(usize, usize)> = Vec::new();
    bisect(
        &all,
        &mut |part| {
            let rows = crate::xact::as_role(target.owner, || {
                let rows = call(kind, &statement, &target.source_name, messages, part);
                // Deferred constraint triggers of what the function wrote would fire at COMMIT,
                // as the superuser the worker connects as: fire them now, as the owner.
                spi(Spi::run("SET CONSTRAINTS ALL IMMEDIATE"));
                rows
            });
            // The rows of a SETOF function are not tied to messages: they count for the last one.
            (part[part.len() - 1], rows)
        },
        &mut done,
        &mut written.rejected,
    )?;
    written.rows = done;
    Ok(written)
}

/// Runs `attempt` on `msgs` (batch indices, in order) in a subtransaction; when it fails on the
/// data, on each half instead, down to single messages, which are rejected with the error. The
/// results of the attempts that succeeded go to `ok`. An error not about the data is returned (the
/// batch is rolled back and retried).
pub(super) fn bisect<T>(
    msgs: &[usize],
    attempt: &mut dyn FnMut(&[usize]) -> T,
    ok: &mut Vec<T>,
    rejected: &mut Vec<Rejected>,
) -> Result<(), PgError> {
    if msgs.is_empty() {
        return Ok(());
    }
    match crate::xact::in_subtransaction(|| attempt(msgs)) {
        Ok(v) => {
            ok.push(v);
            Ok(())
        }
        Err(e) if !e.is_data_error() => Err(e),
        Err(e) if msgs.len() == 1 => {
            rejected.push(Rejected { msg: msgs[0], error: e.message_with_detail(), sqlstate: e.sqlstate });
            Ok(())
        }
        Err(_) => {
            let (left, right) = msgs.split_at(msgs.len() / 2);
            bisect(left, attempt, ok, rejected)?;
            bisect(right, attempt, ok, rejected)
        }
    }
}

/// The function to call (schema-qualified, quoted) and whether it returns rows for the relation.
/// The pipeline checked (sink::pin) and locked the pinned function of the stored signature before,
/// in this transaction, so the name finds it. Checked again for every batch: the relation may have
/// been recreated with another row type since consume_begin (errors not about the data: the batch
/// is retried, the error shown in last_error).
fn resolve(stored: &str, relid: pg_sys::Oid) -> (String, bool) {
    // As the superuser with search_path pg_catalog: the stored text is schema-qualified.
    let found = crate::xact::as_superuser(|| {
        spi(Spi::connect(|c| {
            let t = c.select(
                "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname), \
                        p.proretset AND p.prorettype = (SELECT reltype FROM pg_catalog.pg_class WHERE oid = $2), \
                        p.prorettype = 'pg_catalog.void'::pg_catalog.regtype AND NOT p.proretset \
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.oid = pg_catalog.to_regprocedure($1)",
                Some(1),
                &[stored.into(), relid.into()],
            )?;
            let mut out = None;
            for r in t {
                out = Some((r.get::<String>(1)?.unwrap_or_default(), r.get::<bool>(2)?.unwrap_or(false), r.get::<bool>(3)?.unwrap_or(false)));
            }
            Ok(out)
        }))
    });
    match found {
        Some((name, rows, _)) if rows => (name, true),
        Some((name, _, true)) => (name, false),
        Some(_) => raise(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("transform function {stored} returns neither void nor SETOF the row type of the consumer's relation"),
        ),
        None => raise(PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION, format!("transform function {stored} does not exist")),
    }
}

/// `schema.table (columns)` of the relation, for INSERT: every column a row may fill (generated
/// columns compute themselves).
fn insert_target(relid: pg_sys::Oid) -> (String, String) {
    let table = spi(Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[relid.into()],
    ))
    .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, "the consumer's relation no longer exists"));
    let columns: Vec<String> = crate::catalog::insertable_columns(relid).iter().map(quote_identifier).collect();
    (table, columns.join(", "))
}

/// The statement calling the function on one array argument built from parallel arrays of the
/// messages' fields ($2...; $1 is the topic or stream). With rows: inserts them and returns how
/// many; void: returns 0.
fn statement(kind: Kind, function: &str, insert: Option<&(String, String)>) -> String {
    let array = if matches!(kind, Kind::Kafka) {
        "(SELECT pg_catalog.array_agg(ROW($1, m.p, m.o, m.k, m.v, 'epoch'::pg_catalog.timestamptz + m.ts * interval '1 millisecond', \
                m.h::pg_catalog.jsonb)::pipeline_kafka.message ORDER BY m.n) \
          FROM ROWS FROM (pg_catalog.unnest($2::int4[]), pg_catalog.unnest($3::int8[]), pg_catalog.unnest($4::bytea[]), \
                          pg_catalog.unnest($5::bytea[]), pg_catalog.unnest($6::int8[]), pg_catalog.unnest($7::text[])) \
               WITH ORDINALITY AS m(p, o, k, v, ts, h, n))"
    } else {
        "(SELECT pg_catalog.array_agg(ROW($1, m.s, m.q, m.u, m.k, m.v, 'epoch'::pg_catalog.timestamptz + m.ts * interval '1 millisecond') \
                ::pipeline_kinesis.record ORDER BY m.n) \
          FROM ROWS FROM (pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::int8[]), \
                          pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::bytea[]), pg_catalog.unnest($7::int8[])) \
               WITH ORDINALITY AS m(s, q, u, k, v, ts, n))"
    };
    match insert {
        Some((table, columns)) => format!(
            "WITH ins AS (INSERT INTO {table} ({columns}) SELECT {columns} FROM {function}({array}) RETURNING 1) \
             SELECT pg_catalog.count(*) FROM ins"
        ),
        None => format!("SELECT 0::int8 FROM {function}({array}) f"),
    }
}

/// Which composite a source's messages become.
#[derive(Clone, Copy)]
enum Kind {
    Kafka,
    Kinesis,
}

fn kind_of<P: Position>(m: &Message<P>) -> Kind {
    match m.pos.fields() {
        PosFields::Kafka { .. } => Kind::Kafka,
        PosFields::Kinesis { .. } => Kind::Kinesis,
    }
}

/// Calls the prepared statement on the messages at `part`; the number of rows it inserted.
fn call<P: Position>(kind: Kind, statement: &str, source_name: &str, messages: &[Message<P>], part: &[usize]) -> usize {
    let ts: Vec<Option<i64>> = part.iter().map(|&i| messages[i].timestamp_ms).collect();
    let values: Vec<Option<Vec<u8>>> = part.iter().map(|&i| messages[i].payload.clone()).collect();
    let rows = match kind {
        Kind::Kafka => {
            let mut partitions: Vec<Option<i32>> = Vec::with_capacity(part.len());
            let mut offsets: Vec<Option<i64>> = Vec::with_capacity(part.len());
            for &i in part {
                if let PosFields::Kafka { partition, offset } = messages[i].pos.fields() {
                    partitions.push(Some(partition));
                    offsets.push(Some(offset));
                }
            }
            let keys: Vec<Option<Vec<u8>>> = part.iter().map(|&i| messages[i].key.clone()).collect();
            let headers: Vec<Option<String>> = part
                .iter()
                .map(|&i| {
                    pgrx::check_for_interrupts!();
                    messages[i].headers.as_deref().map(headers_json)
                })
                .collect();
            spi(Spi::get_one_with_args::<i64>(
                statement,
                &[source_name.into(), partitions.into(), offsets.into(), keys.into(), values.into(), ts.into(), headers.into()],
            ))
        }
        Kind::Kinesis => {
            let mut shards: Vec<Option<String>> = Vec::with_capacity(part.len());
            let mut seqs: Vec<Option<String>> = Vec::with_capacity(part.len());
            let mut subs: Vec<Option<i64>> = Vec::with_capacity(part.len());
            for &i in part {
                if let PosFields::Kinesis { shard_id, sequence_number, sub_sequence } = messages[i].pos.fields() {
                    shards.push(Some(shard_id));
                    seqs.push(Some(sequence_number));
                    subs.push(sub_sequence.map(|s| s as i64));
                }
            }
            let keys: Vec<Option<String>> =
                part.iter().map(|&i| messages[i].key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned())).collect();
            spi(Spi::get_one_with_args::<i64>(
                statement,
                &[source_name.into(), shards.into(), seqs.into(), subs.into(), keys.into(), values.into(), ts.into()],
            ))
        }
    };
    rows.unwrap_or(0).max(0) as usize
}

/// Kafka headers as a jsonb object: name -> value as text (invalid UTF-8 replaced), null for a
/// header without a value; a name that repeats maps to an array of its values in order. Grouped
/// by name in linear time (`ByName`): a message may carry 100,000 headers.
fn headers_json(headers: &[(String, Option<Vec<u8>>)]) -> String {
    let text = |v: &Option<Vec<u8>>| match v {
        Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
        None => serde_json::Value::Null,
    };
    let mut map = serde_json::Map::new();
    for (name, mut values) in ByName::new(headers).groups() {
        let v = if values.repeats() {
            serde_json::Value::Array(values.map(text).collect())
        } else {
            values.next().map_or(serde_json::Value::Null, text)
        };
        map.insert(name.to_string(), v);
    }
    serde_json::Value::Object(map).to_string()
}
