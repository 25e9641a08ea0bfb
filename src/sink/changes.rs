//! Change events (format 'debezium'): a batch's events applied to a keyed table, in the batch's
//! transaction (with its offsets, so exactly once).
//!
//! Each message is decoded (ingest_core::debezium: a bad one is rejected with its SQLSTATE) into
//! steps; the batch's steps are folded into one final change per key, in message order
//! (`collapse`: the last wins, a TOAST placeholder keeps the batch's earlier value or else the
//! stored one). The finals are staged in the upsert's staging table (sink::upsert, the same
//! table, privileges and role switch) and applied as the relation's owner: a truncate the
//! consumer applies (mode 'replicate') as `DELETE FROM` the table first, then one DELETE of the
//! deleted keys (and of keys deleted and created again), then per set of given columns an
//! INSERT ... ON CONFLICT DO UPDATE, or (a column missing) an UPDATE of just the given columns and
//! an INSERT of new keys, so a column Debezium did not send is never overwritten. A staged row that fails (a key that is not of its column's type) rejects
//! its key's messages; a statement that fails on the data (a constraint, a trigger) has the
//! messages applied again by halves, each in a subtransaction, down to the ones responsible.

use super::isolate::bisect;
use super::target::{Target, Written};
use super::upsert::{equality_operators, identity_columns, staging_table, DELETE, SEQ};
use crate::error::{raise, spi};
use crate::xact::{as_role, PgError};
use ingest_core::batch::{Message, Position};
use ingest_core::debezium::{collapse, decode_event, decode_key, step_of, Collapsed, Op, Step};
use ingest_core::decode::DecodeError;
use ingest_core::format::{push_text_field, Format};
use ingest_core::prepare::Rejected;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use std::collections::BTreeMap;

/// What one attempt did: the messages it rejected, and the rows each message became.
type Attempt = (Vec<Rejected>, Vec<(usize, usize)>);

pub fn write<P: Position>(target: &Target, relid: pg_sys::Oid, messages: &[Message<P>]) -> Result<Written, PgError> {
    if messages.is_empty() {
        return Ok(Written::default());
    }
    let Some(keys) = target.features.key_columns.clone() else {
        raise(PgSqlErrorCode::ERRCODE_INVALID_COLUMN_REFERENCE, "format debezium without key columns (run consume_begin again)")
    };
    let apply_truncate = target.features.mode == "replicate";
    let (columns, identity) = identity_columns(relid);
    let mut rejected = Vec::new();
    // steps[i]: message i's steps (None: rejected)
    let mut steps: Vec<Option<Vec<Step>>> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        pgrx::check_for_interrupts!();
        match steps_of(target, m, &keys, &columns) {
            Ok(s) => {
                if !apply_truncate && s.contains(&Step::Truncate) {
                    log!(
                        "pipeline_ingest consumer {}: a truncate event of {} at {:?} skipped (mode 'replicate' applies them)",
                        target.consumer_id,
                        target.source_name,
                        m.pos
                    );
                }
                steps.push(Some(s));
            }
            Err(e) => {
                rejected.push(Rejected { msg: i, error: e.message, sqlstate: e.sqlstate.to_string() });
                steps.push(None);
            }
        }
    }
    let plan = Plan::new(target, relid, &keys, columns, &identity);
    let good: Vec<usize> = (0..messages.len()).filter(|&i| steps[i].is_some()).collect();
    let mut failed: Option<PgError> = None;
    let mut attempts: Vec<Attempt> = Vec::new();
    bisect(
        &good,
        &mut |part| {
            if failed.is_some() {
                return (Vec::new(), Vec::new());
            }
            let folded = collapse(part.iter().map(|&i| (i, steps[i].as_deref().unwrap_or_default())), apply_truncate);
            match plan.apply(folded) {
                Ok(bad) => {
                    let rows = part
                        .iter()
                        .filter(|i| !bad.iter().any(|r| r.msg == **i))
                        .map(|&i| (i, usize::from(!steps[i].as_ref().is_none_or(Vec::is_empty))))
                        .collect();
                    (bad, rows)
                }
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

/// A message's steps: a tombstone (no value) has none; a delete without the key in `before`
/// takes it from the message key. Format 'debezium-avro' decodes both with the consumer's Avro
/// decoder (its schemas fetched for the batch by sink::typed), 'debezium' as JSON.
fn steps_of<P: Position>(target: &Target, m: &Message<P>, keys: &[String], columns: &[String]) -> Result<Vec<Step>, DecodeError> {
    let Some(payload) = m.payload.as_deref() else { return Ok(Vec::new()) };
    let avro = target.typed.as_ref().filter(|_| target.opts.format == Format::DebeziumAvro);
    let event = match avro {
        Some(t) => t.debezium_event(payload)?,
        None => decode_event(payload)?,
    };
    let message_key = match (&event, m.key.as_deref()) {
        // a key that does not decode is no help: the delete then names what it lacks
        (Some(e), Some(k)) if e.op == Op::Delete => match avro {
            Some(t) => t.debezium_key(k).ok().flatten(),
            None => decode_key(k).ok().flatten(),
        },
        _ => None,
    };
    step_of(event.as_ref(), message_key.as_ref(), keys, columns)
}

/// How a batch's final changes are applied to one relation (read from the catalog every batch:
/// the relation may have changed).
struct Plan {
    owner: pg_sys::Oid,
    table: String,
    staging: String,
    staging_oid: pg_sys::Oid,
    /// The relation's insertable columns (unquoted).
    columns: Vec<String>,
    keys: Vec<String>,
    /// Columns the INSERT writes: all but identity columns that are not key columns.
    written: Vec<String>,
    overriding: &'static str,
    /// `SELECT DISTINCT ON (keys) * FROM staging ORDER BY keys, seq DESC`
    last: String,
    /// `t.key = s.key AND ...` with the unique index's equality operators.
    matches: String,
    delete_sql: String,
    /// The text of every column of the row whose key is $1 (jsonb of the key's texts).
    stored_sql: String,
}

impl Plan {
    fn new(target: &Target, relid: pg_sys::Oid, keys: &[String], columns: Vec<String>, identity: &[(String, bool)]) -> Plan {
        let table = super::relation::quoted_name(relid);
        let equals = equality_operators(relid, keys);
        let (staging, staging_oid) = staging_table(relid, target.owner, keys);
        let q = |c: &String| quote_identifier(c);
        let key_list = keys.iter().map(q).collect::<Vec<_>>().join(", ");
        let last = format!("SELECT DISTINCT ON ({key_list}) * FROM {staging} ORDER BY {key_list}, {SEQ} DESC");
        let matches = keys.iter().zip(&equals).map(|(k, op)| format!("t.{k} {op} s.{k}", k = q(k))).collect::<Vec<_>>().join(" AND ");
        let delete_sql = format!("DELETE FROM {table} t USING ({last}) s WHERE s.{d} AND {matches}", d = quote_identifier(DELETE));
        // as sink::upsert: a non-key identity column is generated, never written from an event
        let written = columns.iter().filter(|c| keys.contains(c) || !identity.iter().any(|(i, _)| i == *c)).cloned().collect();
        let overriding = if identity.iter().any(|(c, always)| *always && keys.contains(c)) { " OVERRIDING SYSTEM VALUE" } else { "" };
        let by_key = keys.iter().zip(&equals).map(|(k, op)| format!("t.{k} {op} k.{k}", k = q(k))).collect::<Vec<_>>().join(" AND ");
        let texts = columns.iter().map(|c| format!("t.{}::pg_catalog.text", q(c))).collect::<Vec<_>>().join(", ");
        let stored_sql = format!(
            "SELECT (SELECT ARRAY[{texts}]::pg_catalog.text[] FROM {table} t, \
             pg_catalog.jsonb_populate_record(NULL::{table}, $1::pg_catalog.jsonb) k WHERE {by_key})"
        );
        Plan { owner: target.owner, table, staging, staging_oid, columns, keys: keys.to_vec(), written, overriding, last, matches, delete_sql, stored_sql }
    }

    /// The statements that write staged rows giving the `given` columns. All written columns
    /// given: one INSERT ... ON CONFLICT DO UPDATE. Some missing (a TOAST placeholder): an UPDATE
    /// of just the given ones, then an INSERT of the keys the table lacks, the others taking their
    /// defaults (not ON CONFLICT DO UPDATE: PostgreSQL checks NOT NULL on the proposed row before
    /// it sees the conflict, so an update would meet a NOT NULL column without a default).
    fn upsert_sql(&self, given: &[usize]) -> Vec<String> {
        let q = |c: &String| quote_identifier(c);
        let list = self.written.iter().map(q).collect::<Vec<_>>().join(", ");
        let key_list = self.keys.iter().map(q).collect::<Vec<_>>().join(", ");
        let d = quote_identifier(DELETE);
        let (table, last, o) = (&self.table, &self.last, self.overriding);
        let sets: Vec<String> = given
            .iter()
            .map(|&i| &self.columns[i])
            .filter(|c| !self.keys.contains(c) && self.written.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}", c = q(c)))
            .collect();
        if self.written.iter().all(|c| given.iter().any(|&i| &self.columns[i] == c)) {
            let on_conflict = if sets.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", sets.join(", ")) };
            return vec![format!("INSERT INTO {table} AS t ({list}){o} SELECT {list} FROM ({last}) s WHERE NOT s.{d} ON CONFLICT ({key_list}) {on_conflict}")];
        }
        let mut out = Vec::with_capacity(2);
        if !sets.is_empty() {
            let sets = sets.iter().map(|s| s.replace("EXCLUDED.", "s.")).collect::<Vec<_>>().join(", ");
            out.push(format!("UPDATE {table} t SET {sets} FROM ({last}) s WHERE NOT s.{d} AND {m}", m = self.matches));
        }
        out.push(format!(
            "INSERT INTO {table} AS t ({list}){o} SELECT {list} FROM ({last}) s WHERE NOT s.{d} \
             AND NOT EXISTS (SELECT FROM {table} t WHERE {m}) ON CONFLICT ({key_list}) DO NOTHING",
            m = self.matches
        ));
        out
    }

    /// Applies the final changes; returns the messages whose staged rows failed (their keys are
    /// left as they were). An Err is raised, not returned, when a statement fails on the data.
    fn apply(&self, mut folded: Collapsed) -> Result<Vec<Rejected>, PgError> {
        let mut rejected = Vec::new();
        // a key change's new row takes its placeholders' values from the old row, read before
        // anything is deleted
        for f in folded.finals.iter_mut() {
            let Some(values) = f.upsert.as_mut() else { continue };
            for fill in std::mem::take(&mut f.fill) {
                if let Some(stored) = self.stored_row(&fill.from) {
                    values.extend(fill.columns.iter().map(|&c| (c, stored.get(c).cloned().flatten())));
                }
            }
            values.sort_by_key(|(c, _)| *c);
        }
        let folded = &folded;
        if folded.truncate {
            as_role(self.owner, || spi(Spi::run(&format!("DELETE FROM {}", self.table))));
        }
        // deleted keys, and keys deleted before they were created again
        let deletes: Vec<usize> = (0..folded.finals.len()).filter(|&f| folded.finals[f].delete_first || folded.finals[f].upsert.is_none()).collect();
        if !deletes.is_empty() {
            let mut all: Vec<&str> = self.columns.iter().map(String::as_str).collect();
            all.push(DELETE);
            let lines: Vec<(usize, Vec<u8>)> = deletes
                .iter()
                .map(|&f| {
                    // every column listed, the non-key ones NULL: no default is evaluated for a
                    // row that only deletes
                    let mut line = Vec::new();
                    for c in &self.columns {
                        match self.keys.iter().position(|k| k == c) {
                            Some(k) => push_text_field(&mut line, &folded.finals[f].key[k]),
                            None => line.extend_from_slice(b"\\N"),
                        }
                        line.push(b'\t');
                    }
                    line.extend_from_slice(b"t\n");
                    (f, line)
                })
                .collect();
            rejected.extend(self.stage(&all, &lines, folded)?);
            self.run(std::slice::from_ref(&self.delete_sql));
        }
        // upserts, by the set of columns they give
        let mut groups: BTreeMap<Vec<usize>, Vec<(usize, Vec<u8>)>> = BTreeMap::new();
        for (f, fin) in folded.finals.iter().enumerate() {
            let Some(values) = &fin.upsert else { continue };
            let mut line = Vec::new();
            for (n, (_, v)) in values.iter().enumerate() {
                if n > 0 {
                    line.push(b'\t');
                }
                match v {
                    None => line.extend_from_slice(b"\\N"),
                    Some(t) => push_text_field(&mut line, t),
                }
            }
            line.push(b'\n');
            groups.entry(values.iter().map(|(c, _)| *c).collect()).or_default().push((f, line));
        }
        for (given, lines) in &groups {
            let names: Vec<&str> = given.iter().map(|&c| self.columns[c].as_str()).collect();
            rejected.extend(self.stage(&names, lines, folded)?);
            self.run(&self.upsert_sql(given));
        }
        as_role(self.owner, || {
            // Deferred constraint triggers would fire at COMMIT, as the superuser the worker is
            // connected as: fire them now, as the owner (their errors are this batch's errors).
            spi(Spi::run("SET CONSTRAINTS ALL IMMEDIATE"))
        });
        Ok(rejected)
    }

    /// The stored row of `key` (every column's text), read as the owner.
    fn stored_row(&self, key: &[String]) -> Option<Vec<Option<String>>> {
        let json = serde_json::Value::Object(self.keys.iter().cloned().zip(key.iter().map(|k| serde_json::Value::String(k.clone()))).collect());
        let text = json.to_string();
        as_role(self.owner, || spi(Spi::get_one_with_args::<Vec<Option<String>>>(&self.stored_sql, &[text.as_str().into()])))
    }

    /// Runs statements of the apply as the owner, then empties the staging table.
    fn run(&self, statements: &[String]) {
        as_role(self.owner, || {
            for sql in statements {
                spi(Spi::run(sql));
            }
            spi(Spi::run(&format!("DELETE FROM {}", self.staging)));
        });
    }

    /// COPYs staged lines (final index, line) into the staging table as the owner; a line that
    /// fails rejects its key's messages.
    fn stage(&self, columns: &[&str], lines: &[(usize, Vec<u8>)], folded: &Collapsed) -> Result<Vec<Rejected>, PgError> {
        let options: super::copy::CopyOptionList = vec![("format", "text".to_string()), ("encoding", "UTF8".to_string())];
        let ids: Vec<usize> = (0..lines.len()).collect();
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        bisect(
            &ids,
            &mut |part| {
                let data: Vec<u8> = part.iter().flat_map(|&j| lines[j].1.iter().copied()).collect();
                as_role(self.owner, || super::copy::copy_rows(self.staging_oid, Some(columns), &options, &data));
            },
            &mut ok,
            &mut bad,
        )?;
        let mut rejected: Vec<Rejected> = Vec::new();
        for r in bad {
            for &msg in &folded.finals[lines[r.msg].0].msgs {
                if !rejected.iter().any(|x| x.msg == msg) {
                    rejected.push(Rejected { msg, error: format!("change event key {}: {}", key_text(&folded.finals[lines[r.msg].0].key), r.error), sqlstate: r.sqlstate.clone() });
                }
            }
        }
        Ok(rejected)
    }
}

fn key_text(key: &[String]) -> String {
    format!("({})", key.join(", "))
}
