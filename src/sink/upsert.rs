//! mode 'upsert': INSERT ... ON CONFLICT (key columns) DO UPDATE, the last message of a key in a
//! batch winning, tombstones (no value) deleting the key's row.
//!
//! A batch is staged first: the values are COPYed (`append`, bad messages isolated as always) into
//! a temporary table with the relation's columns, and tombstones become rows holding only their key
//! (parsed from the message key with key_format) and a delete flag; an identity column numbers the
//! rows in message order. Then one DELETE (keys whose last row is a tombstone) and one INSERT ...
//! SELECT DISTINCT ON (keys) ... ON CONFLICT DO UPDATE (keys whose last row is a value) apply it,
//! so a key seen many times in a batch is written once ("cannot affect row a second time" never
//! happens) and a value after a tombstone re-creates the row. When the DELETE or INSERT fails on
//! the data (a constraint, a trigger), the batch's messages are staged and applied again by halves,
//! each in a subtransaction, down to the messages responsible.
//!
//! The staging table is one per (worker session, relation, column layout), created by the worker
//! as the superuser, ON COMMIT DELETE ROWS, and reused by every batch. The owner gets only SELECT,
//! INSERT and DELETE on it (no ownership: it cannot attach triggers to it), and everything done to
//! it after its creation is done as the owner.

use super::append::append;
use super::isolate::bisect;
use super::target::{Target, Written};
use crate::error::{raise, spi};
use crate::xact::{as_role, as_superuser, PgError};
use ingest_core::batch::{Message, Position};
use ingest_core::format::Format;
use ingest_core::keys as message_keys;
use ingest_core::prepare::Rejected;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use std::borrow::Cow;

const SEQ: &str = "\"pipeline_ingest.seq\"";
const DELETE: &str = "pipeline_ingest.delete";

pub fn write<P: Position>(target: &Target, relid: pg_sys::Oid, messages: &[Message<P>]) -> Result<Written, PgError> {
    if messages.is_empty() {
        return Ok(Written::default());
    }
    let Some(keys) = target.features.key_columns.clone() else {
        raise(PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE, "mode 'upsert' without key columns (run consume_begin again)")
    };
    let plan = Plan::new(target, relid, &keys);
    let key_format = target.features.key_format.as_deref();
    // json values without a key field take it from the message key
    let messages: Cow<[Message<P>]> = if target.opts.format == Format::Json {
        Cow::Owned(messages.iter().map(|m| with_key_fields(m, &keys, key_format)).collect())
    } else {
        Cow::Borrowed(messages)
    };
    // text/csv without a column list fill every column (not the staging table's own two)
    let staging_target = Target {
        columns: Some(target.columns.clone().unwrap_or_else(|| plan.columns.clone())),
        ..target.clone()
    };
    let all: Vec<usize> = (0..messages.len()).collect();
    let mut failed: Option<PgError> = None;
    let mut attempts: Vec<(Vec<Rejected>, Vec<(usize, usize)>)> = Vec::new();
    let mut rejected = Vec::new();
    bisect(
        &all,
        &mut |part| {
            if failed.is_some() {
                return (Vec::new(), Vec::new());
            }
            match plan.attempt(&staging_target, &messages, part[0]..part[part.len() - 1] + 1, &keys, key_format) {
                Ok(done) => done,
                Err(e) => {
                    // Not about the data: the whole batch rolls back (below), nothing else matters.
                    failed = Some(e);
                    (Vec::new(), Vec::new())
                }
            }
        },
        &mut attempts,
        &mut rejected,
    )?;
    if let Some(e) = failed {
        return Err(e);
    }
    let mut written = Written { rejected, rows: Vec::new() };
    for (r, rows) in attempts {
        written.rejected.extend(r);
        written.rows.extend(rows);
    }
    Ok(written)
}

/// What applying staged rows to one relation takes (read from the catalog for every batch: the
/// relation may have changed).
struct Plan {
    owner: pg_sys::Oid,
    /// The staging table, `pg_temp.name`.
    staging: String,
    staging_oid: pg_sys::Oid,
    /// The relation's insertable columns (unquoted).
    columns: Vec<String>,
    delete_sql: String,
    insert_sql: String,
}

impl Plan {
    fn new(target: &Target, relid: pg_sys::Oid, keys: &[String]) -> Plan {
        let owner = target.owner;
        let (columns, identity) = identity_columns(relid);
        let table = super::relation::quoted_name(relid);
        let equals = equality_operators(relid, keys);
        let (staging, staging_oid) = staging_table(relid, owner, keys);
        let q = |c: &String| quote_identifier(c);
        let key_list = keys.iter().map(q).collect::<Vec<_>>().join(", ");
        let last = format!("SELECT DISTINCT ON ({key_list}) * FROM {staging} ORDER BY {key_list}, {SEQ} DESC");
        let matches = keys
            .iter()
            .zip(&equals)
            .map(|(k, op)| format!("t.{k} {op} s.{k}", k = q(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let delete_sql = format!("DELETE FROM {table} t USING ({last}) s WHERE s.{d} AND {matches}", d = quote_identifier(DELETE));
        // An identity column that is not a key column is never written from a message: the
        // INSERT leaves it out (it is generated, GENERATED ALWAYS or BY DEFAULT alike) and the
        // update does not touch it. A key column that is an identity column takes the message's
        // key, GENERATED ALWAYS included (OVERRIDING SYSTEM VALUE, as COPY in append mode does).
        let generated = |c: &String| !keys.contains(c) && identity.iter().any(|(i, _)| i == c);
        let written: Vec<&String> = columns.iter().filter(|c| !generated(c)).collect();
        let insert_list = written.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
        let overriding = if identity.iter().any(|(c, always)| *always && keys.contains(c)) { " OVERRIDING SYSTEM VALUE" } else { "" };
        let updates: Vec<String> =
            written.iter().filter(|c| !keys.contains(c)).map(|c| format!("{c} = EXCLUDED.{c}", c = q(c))).collect();
        let on_conflict = if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
        let insert_sql = format!(
            "INSERT INTO {table} AS t ({insert_list}){overriding} SELECT {insert_list} FROM ({last}) s WHERE NOT s.{d} \
             ON CONFLICT ({key_list}) {on_conflict}",
            d = quote_identifier(DELETE)
        );
        Plan { owner, staging, staging_oid, columns, delete_sql, insert_sql }
    }

    /// Stages the messages `range` (in order) and applies them to the relation. Returns the
    /// messages that could not be staged (bad values, bad tombstone keys) and the rows staged per
    /// message; an Err is not about the data.
    #[allow(clippy::type_complexity)]
    fn attempt<P: Position>(
        &self,
        staging_target: &Target,
        messages: &[Message<P>],
        range: std::ops::Range<usize>,
        keys: &[String],
        key_format: Option<&str>,
    ) -> Result<(Vec<Rejected>, Vec<(usize, usize)>), PgError> {
        let mut rejected = Vec::new();
        let mut rows = Vec::new();
        let mut start = range.start;
        while start < range.end {
            let tombstone = messages[start].payload.is_none();
            let end = (start..range.end).find(|&i| messages[i].payload.is_none() != tombstone).unwrap_or(range.end);
            if tombstone {
                rejected.extend(self.stage_tombstones(&messages[start..end], start, keys, key_format)?);
            } else {
                let w = append(staging_target, self.staging_oid, &messages[start..end])?;
                rejected.extend(w.rejected.into_iter().map(|r| Rejected { msg: r.msg + start, ..r }));
                rows.extend(w.rows.into_iter().map(|(i, n)| (i + start, n)));
            }
            start = end;
        }
        as_role(self.owner, || {
            spi(Spi::run(&self.delete_sql));
            spi(Spi::run(&self.insert_sql));
            spi(Spi::run(&format!("DELETE FROM {}", self.staging)));
            // Deferred constraint triggers would fire at COMMIT, as the superuser the worker is
            // connected as: fire them now, as the owner (their errors are this batch's errors).
            spi(Spi::run("SET CONSTRAINTS ALL IMMEDIATE"));
        });
        Ok((rejected, rows))
    }

    /// Stages tombstones (messages `first`.. of the batch) as delete rows of their keys; returns
    /// those whose key cannot be parsed or stored.
    fn stage_tombstones<P: Position>(
        &self,
        tombstones: &[Message<P>],
        first: usize,
        keys: &[String],
        key_format: Option<&str>,
    ) -> Result<Vec<Rejected>, PgError> {
        let mut rejected = Vec::new();
        let mut lines: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, m) in tombstones.iter().enumerate() {
            let parsed = match m.key.as_deref() {
                None => Err(("a tombstone without a key deletes nothing".to_string(), "22004")),
                Some(k) => message_keys::key_fields(k, key_format, keys).map_err(|e| (e, "22P02")),
            };
            match parsed {
                Ok(fields) => {
                    // Every column is listed, the non-key ones NULL: no default is evaluated for
                    // a row that only deletes (a sequence would advance for nothing).
                    let mut line = Vec::new();
                    for c in &self.columns {
                        match keys.iter().position(|k| k == c).and_then(|i| fields[i].as_deref()) {
                            None => line.extend_from_slice(b"\\N"),
                            Some(s) => message_keys::copy_text_escape(s, &mut line),
                        }
                        line.push(b'\t');
                    }
                    line.extend_from_slice(b"t\n");
                    lines.push((first + i, line));
                }
                Err((error, sqlstate)) => {
                    rejected.push(Rejected { msg: first + i, error: format!("message key: {error}"), sqlstate: sqlstate.to_string() })
                }
            }
        }
        let mut columns: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        columns.push(DELETE);
        let options: super::copy::CopyOptionList = vec![("format", "text".to_string()), ("encoding", "UTF8".to_string())];
        let ids: Vec<usize> = (0..lines.len()).collect();
        let mut ok = Vec::new();
        let mut bad_copies = Vec::new();
        bisect(
            &ids,
            &mut |part| {
                let data: Vec<u8> = part.iter().flat_map(|&j| lines[j].1.iter().copied()).collect();
                as_role(self.owner, || super::copy::copy_rows(self.staging_oid, Some(&columns), &options, &data));
            },
            &mut ok,
            &mut bad_copies,
        )?;
        // bisect reports indices into `lines`: back to the batch
        rejected.extend(bad_copies.into_iter().map(|r| Rejected { msg: lines[r.msg].0, ..r }));
        Ok(rejected)
    }
}

/// The relation's insertable columns in order, and which of them are identity columns (with
/// whether they are GENERATED ALWAYS).
fn identity_columns(relid: pg_sys::Oid) -> (Vec<String>, Vec<(String, bool)>) {
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT attname::text, attidentity::text FROM pg_catalog.pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            None,
            &[relid.into()],
        )?;
        let (mut columns, mut identity) = (Vec::new(), Vec::new());
        for row in t {
            let (Some(name), kind) = (row.get::<String>(1)?, row.get::<String>(2)?) else { continue };
            match kind.as_deref() {
                Some("a") => identity.push((name.clone(), true)),
                Some("d") => identity.push((name.clone(), false)),
                _ => {}
            }
            columns.push(name);
        }
        Ok((columns, identity))
    }))
}

/// The staging table for the relation's current column layout (and this owner): found in this
/// session's temporary schema or created. Its name carries a digest of the layout, so a relation
/// whose columns changed gets a new one.
fn staging_table(relid: pg_sys::Oid, owner: pg_sys::Oid, keys: &[String]) -> (String, pg_sys::Oid) {
    // The column definitions as the superuser with search_path pg_catalog: types, collations and
    // default expressions come out schema-qualified. Key columns keep their type and are NOT NULL
    // (a value without its key is a bad message). Every other column has its type's base type
    // when that is a domain, with the column's default or else the domain's: a tombstone row
    // holds only its key, NULL elsewhere, which a NOT NULL (or CHECK) domain would refuse; values
    // meet the domain's constraints at the final INSERT. The relation's other NOT NULLs and
    // constraints stay with it; identity columns get no default here (the final INSERT leaves a
    // non-key one out, see Plan::new).
    let (columns, digest) = as_superuser(|| {
        spi(Spi::get_two_with_args::<String, String>(
            "WITH RECURSIVE a AS (SELECT a.attnum, a.attname, a.atttypid, a.atttypmod, a.attcollation, a.attname = ANY ($2) AS is_key \
                FROM pg_catalog.pg_attribute a \
                WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), \
             b(attnum, typ, typmod) AS (SELECT attnum, atttypid, atttypmod FROM a WHERE NOT is_key \
                UNION ALL SELECT b.attnum, t.typbasetype, t.typtypmod FROM b JOIN pg_catalog.pg_type t ON t.oid = b.typ AND t.typtype = 'd'), \
             c AS (SELECT a.*, coalesce(bt.typ, a.atttypid) AS typ, coalesce(bt.typmod, a.atttypmod) AS typmod \
                FROM a LEFT JOIN (SELECT b.* FROM b JOIN pg_catalog.pg_type t ON t.oid = b.typ AND t.typtype <> 'd') bt USING (attnum)), \
             d AS (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c.attname) || ' ' || pg_catalog.format_type(c.typ, c.typmod) \
                    || CASE WHEN c.attcollation <> t.typcollation THEN ' COLLATE ' || \
                         (SELECT pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname) \
                          FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace \
                          WHERE co.oid = c.attcollation) ELSE '' END \
                    || CASE WHEN ad.adbin IS NOT NULL THEN ' DEFAULT ' || pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) \
                            WHEN NOT c.is_key AND t0.typdefaultbin IS NOT NULL THEN ' DEFAULT ' || pg_catalog.pg_get_expr(t0.typdefaultbin, 0) \
                            ELSE '' END \
                    || CASE WHEN c.is_key THEN ' NOT NULL' ELSE '' END, ', ' ORDER BY c.attnum) AS cols \
                FROM c JOIN pg_catalog.pg_type t ON t.oid = c.typ JOIN pg_catalog.pg_type t0 ON t0.oid = c.atttypid \
                LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = $1 AND ad.adnum = c.attnum) \
             SELECT cols, pg_catalog.left(pg_catalog.md5(cols || ' ' || $3::text), 16) FROM d",
            &[relid.into(), keys.to_vec().into(), owner.to_u32().to_string().into()],
        ))
    });
    let (Some(columns), Some(digest)) = (columns, digest) else {
        raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, "the consumer's relation has no columns")
    };
    let name = format!("pipeline_ingest_upsert_{}_{digest}", relid.to_u32());
    let existing = spi(Spi::get_one_with_args::<pg_sys::Oid>(
        "SELECT (SELECT oid FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema() AND relname = $1)",
        &[name.as_str().into()],
    ));
    let qualified = format!("pg_temp.{}", quote_identifier(&name));
    if let Some(oid) = existing {
        return (qualified, oid);
    }
    as_superuser(|| {
        let role = spi(Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.quote_ident(rolname::text) FROM pg_catalog.pg_authid WHERE oid = $1",
            &[owner.into()],
        ))
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "the consumer's owner no longer exists"));
        spi(Spi::run(&format!(
            "CREATE TEMPORARY TABLE {qualified} ({columns}, {SEQ} bigint GENERATED ALWAYS AS IDENTITY, \
             {d} boolean NOT NULL DEFAULT false) ON COMMIT DELETE ROWS",
            d = quote_identifier(DELETE)
        )));
        spi(Spi::run(&format!("GRANT SELECT, INSERT, DELETE ON {qualified} TO {role}")));
    });
    // Read-only SPI queries of this transaction (e.g. the column list `append` reads) run on the
    // batch transaction's snapshot, taken before the table existed: let it see the new table.
    // SAFETY: in a transaction whose active snapshot is the batch's own (pushed once, not
    // registered), as SPI does before each statement that writes.
    unsafe {
        pg_sys::CommandCounterIncrement();
        pg_sys::UpdateActiveSnapshotCommandId();
    }
    let oid = spi(Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::pg_catalog.regclass::oid", &[qualified.as_str().into()]))
        .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "staging table missing after its creation"));
    (qualified, oid)
}

/// The equality operator (`OPERATOR(schema.=)`) of each key column, from the unique index ON
/// CONFLICT uses: the DELETE of tombstones matches rows exactly as the index does, without
/// looking an operator up in anyone's search_path.
fn equality_operators(relid: pg_sys::Oid, keys: &[String]) -> Vec<String> {
    let found = spi(Spi::connect(|c| {
        let t = c.select(
            "WITH i AS (SELECT i.indkey::int2[] AS indkey, i.indclass::oid[] AS indclass FROM pg_catalog.pg_index i \
                 WHERE i.indrelid = $1 AND i.indisunique AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL \
                   AND (SELECT pg_catalog.array_agg(x ORDER BY x) FROM pg_catalog.unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) x) \
                     = (SELECT pg_catalog.array_agg(attnum ORDER BY attnum) FROM pg_catalog.pg_attribute \
                        WHERE attrelid = $1 AND attname = ANY ($2) AND NOT attisdropped) \
                 ORDER BY i.indisprimary DESC LIMIT 1) \
             SELECT a.attname::text, 'OPERATOR(' || pg_catalog.quote_ident(n.nspname) || '.' || o.oprname || ')' \
             FROM i CROSS JOIN LATERAL pg_catalog.generate_subscripts(i.indclass, 1) AS s(j) \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = $1 AND a.attnum = (i.indkey)[s.j] \
             JOIN pg_catalog.pg_opclass oc ON oc.oid = (i.indclass)[s.j] \
             JOIN pg_catalog.pg_amop am ON am.amopfamily = oc.opcfamily AND am.amoplefttype = oc.opcintype \
                  AND am.amoprighttype = oc.opcintype AND am.amopstrategy = 3 AND am.amopmethod = oc.opcmethod \
             JOIN pg_catalog.pg_operator o ON o.oid = am.amopopr \
             JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace",
            None,
            &[relid.into(), keys.to_vec().into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((r.get::<String>(1)?.unwrap_or_default(), r.get::<String>(2)?.unwrap_or_default()));
        }
        Ok(out)
    }));
    keys.iter()
        .map(|k| {
            found.iter().find(|(c, _)| c == k).map(|(_, op)| op.clone()).unwrap_or_else(|| {
                raise(
                    PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE,
                    format!("no unique index matches the key columns ({}) any more", keys.join(", ")),
                )
            })
        })
        .collect()
}

/// A json value without some key fields gets them from the message key (ingest_core::keys).
fn with_key_fields<P: Position>(m: &Message<P>, keys: &[String], key_format: Option<&str>) -> Message<P> {
    match (m.payload.as_deref(), m.key.as_deref()) {
        (Some(payload), Some(key)) => match message_keys::json_with_key_fields(payload, key, key_format, keys) {
            Some(filled) => Message { payload: Some(filled), ..m.clone() },
            None => m.clone(),
        },
        _ => m.clone(),
    }
}
