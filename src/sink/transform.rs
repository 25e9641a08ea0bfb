//! Batches through a user's transform function (consume_begin's `transform`): the function gets
//! the batch as pipeline_kafka.message[] / pipeline_kinesis.record[] and runs as the consumer's
//! owner inside the batch transaction, so what it writes commits with the positions.
//!
//! A function returning SETOF the relation's row type has its rows inserted into the relation (as
//! the owner); one returning void wrote what it wanted itself. When it fails on the data (SQLSTATE
//! classes of `PgError::is_data_error`), it is called again on each half of the messages, each in
//! its own subtransaction, down to the messages it fails on: those are rejected (dead letters with
//! their raw bytes and the function's error), the others' effects stay, as with COPY.
//!
//! The array's element type and columns are the source's (`System::composite`); the messages'
//! positions fill their own columns of it (`PosValues`): nothing here depends on the source.

use super::isolate::bisect;
use super::target::{Target, Written};
use crate::error::{raise, spi};
use crate::xact::PgError;
use ingest_core::batch::Message;
use ingest_core::headers::ByName;
use ingest_core::position::{Composite, Part, Position, SqlValue};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

pub fn write<P: Position>(target: &Target, relid: pg_sys::Oid, messages: &[Message<P>]) -> Result<Written, PgError> {
    if messages.is_empty() {
        return Ok(Written::default());
    }
    let composite = P::SYSTEM.composite();
    let stored = target.features.transform.as_deref().unwrap_or_default();
    let (function, returns_rows) = resolve(stored, relid);
    let statement = statement(composite, &function, returns_rows.then(|| insert_target(relid)).as_ref());
    let all: Vec<usize> = (0..messages.len()).collect();
    let mut written = Written::default();
    let mut done: Vec<(usize, usize)> = Vec::new();
    bisect(
        &all,
        &mut |part| {
            let rows = crate::xact::as_role(target.owner, || {
                let rows = call(composite, &statement, &target.source_name, messages, part);
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

/// The function to call (schema-qualified, quoted) and whether it returns rows for the relation.
/// The pipeline checked (worker::pin) and locked the pinned function of the stored signature before,
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
    let table = super::relation::quoted_name(relid);
    let columns: Vec<String> = super::relation::insertable_columns(relid).iter().map(quote_identifier).collect();
    (table, columns.join(", "))
}

/// The statement calling the function on one array argument of the composite, built from
/// parallel arrays of the messages' values (`Composite::array_sql`). With rows: inserts them and
/// returns how many; void: returns 0.
fn statement(composite: &Composite, function: &str, insert: Option<&(String, String)>) -> String {
    let array = composite.array_sql();
    match insert {
        Some((table, columns)) => format!(
            "WITH ins AS (INSERT INTO {table} ({columns}) SELECT {columns} FROM {function}({array}) RETURNING 1) \
             SELECT pg_catalog.count(*) FROM ins"
        ),
        None => format!("SELECT 0::int8 FROM {function}({array}) f"),
    }
}

/// Calls the prepared statement on the messages at `part`; the number of rows it inserted. Each
/// column's array is of the column's SQL type, the positions filling their own columns.
fn call<P: Position>(composite: &Composite, statement: &str, source_name: &str, messages: &[Message<P>], part: &[usize]) -> usize {
    let each = |f: &dyn Fn(&Message<P>) -> Option<Vec<u8>>| -> Vec<Option<Vec<u8>>> { part.iter().map(|&i| f(&messages[i])).collect() };
    let mut args: Vec<DatumWithOid> = vec![source_name.into()];
    for (c, element) in composite.array_parameters() {
        let arg: DatumWithOid = match (c.part, element) {
            (Part::Source, _) => continue,
            (Part::Pos(n), "int4") => {
                let v: Vec<Option<i32>> = part.iter().map(|&i| match messages[i].pos.value(n) {
                    SqlValue::Int4(v) => Some(v),
                    _ => None,
                }).collect();
                v.into()
            }
            (Part::Pos(n), "int8") => {
                let v: Vec<Option<i64>> = part.iter().map(|&i| match messages[i].pos.value(n) {
                    SqlValue::Int4(v) => Some(i64::from(v)),
                    SqlValue::Int8(v) => Some(v),
                    _ => None,
                }).collect();
                v.into()
            }
            (Part::Pos(n), _) => {
                let v: Vec<Option<String>> = part.iter().map(|&i| match messages[i].pos.value(n) {
                    SqlValue::Null => None,
                    SqlValue::Int4(v) => Some(v.to_string()),
                    SqlValue::Int8(v) => Some(v.to_string()),
                    SqlValue::Text(t) => Some(t.into_owned()),
                }).collect();
                v.into()
            }
            (Part::Key, "bytea") => each(&|m| m.key.clone()).into(),
            // a text key (a Kinesis partition key is text; invalid UTF-8 replaced)
            (Part::Key, _) => {
                let v: Vec<Option<String>> =
                    part.iter().map(|&i| messages[i].key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned())).collect();
                v.into()
            }
            (Part::Value, _) => each(&|m| m.payload.clone()).into(),
            (Part::Timestamp, _) => {
                let v: Vec<Option<i64>> = part.iter().map(|&i| messages[i].timestamp_ms).collect();
                v.into()
            }
            (Part::Headers, _) => {
                let v: Vec<Option<String>> = part
                    .iter()
                    .map(|&i| {
                        pgrx::check_for_interrupts!();
                        messages[i].headers.as_deref().map(headers_json)
                    })
                    .collect();
                v.into()
            }
        };
        args.push(arg);
    }
    let rows = spi(Spi::get_one_with_args::<i64>(statement, &args));
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
