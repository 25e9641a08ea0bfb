//! Writing a batch into a Citus table (hash-distributed, reference, distributed partitioned) from
//! the node the worker runs on, through a path Citus routes. Core `CopyFrom` into the relation would
//! fill the coordinator's shell table, which Citus never reads (docs/citus-findings.md), so rows
//! never go there.
//!
//! mode 'append': the batch is COPYed (`append`: bad messages isolated by COPY's line, metadata
//! columns, json/raw layouts, as for any table) into a temporary staging table of the relation's
//! columns (the one upserts use, `upsert::staging_table`), then one `INSERT INTO relation SELECT ...
//! FROM staging` hands the rows to Citus: a pull-to-coordinator INSERT ... SELECT, which Citus runs
//! through its COPY into the shards and commits with two-phase commit whatever the number of shards
//! touched ("all modifications use 2PC", multi_copy.c), one shard included. The local commit of the
//! batch transaction (offsets, dead letters) is the single decision point: the shard rows commit if
//! and only if it does (after a crash, Citus's recovery of prepared transactions finishes the job).
//! `citus.multi_shard_modify_mode = 'sequential'` (one connection per worker instead of one per
//! shard) is set for the batch transaction: 20x faster here. An `INSERT ... VALUES` is never used: to
//! a single shard Citus commits it with one-phase commit, before the local commit.
//!
//! mode 'upsert': `upsert::write` as for any table (its statements are INSERT ... SELECT from the
//! staging table, which Citus also runs with 2PC); on a reference table a tombstone's DELETE ...
//! USING the staging table is refused by Citus, so a batch with tombstones fails there (0A000).
//! Transforms: `transform::write`; its rows reach the relation through `INSERT ... SELECT`.
//!
//! Errors from the shards come back through Citus's COPY without their SQLSTATE (XX000, the remote
//! message kept): constraint violations are recognised by their message and get their class-23
//! SQLSTATE back, so their messages become dead letters (the batch bisected down to them, as shards
//! give no line); every other XX000 (a node that went away) fails the batch, which is retried.

use super::target::{Target, Written};
use crate::error::spi;
use crate::xact::{as_role, PgError};
use ingest_core::batch::{Message, Position};
use ingest_core::metadata::Metadata;
use ingest_core::prepare::Rejected;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;

/// SQLSTATE of what stays refused on Citus tables.
const NOT_SUPPORTED: &str = "0A000";

pub fn write<P: Position>(target: &Target, relid: pg_sys::Oid, kind: &str, messages: &[Message<P>]) -> Result<Written, PgError> {
    if messages.is_empty() {
        return Ok(Written::default());
    }
    // One connection per worker node for the whole batch (SET LOCAL: the batch transaction only).
    spi(Spi::run("SET LOCAL citus.multi_shard_modify_mode = 'sequential'"));
    if target.features.transform.is_some() {
        return super::transform::write(target, relid, messages);
    }
    if target.features.mode == "upsert" {
        if kind == crate::citus::REFERENCE && messages.iter().any(|m| m.payload.is_none()) {
            return Err(PgError {
                sqlstate: NOT_SUPPORTED.to_string(),
                message: "a tombstone cannot delete from a Citus reference table (Citus refuses the DELETE ... USING \
                          a staging table pipeline_ingest uses); upsert into a hash-distributed table instead"
                    .to_string(),
                detail: None,
            });
        }
        return super::upsert::write(target, relid, messages);
    }
    append(target, relid, messages)
}

/// mode 'append': stage and INSERT ... SELECT, bisecting the messages when a shard refuses a row.
fn append<P: Position>(target: &Target, relid: pg_sys::Oid, messages: &[Message<P>]) -> Result<Written, PgError> {
    let owner = target.owner;
    let columns = super::relation::insertable_columns(relid);
    if let Some(c) = identity_column(relid) {
        return Err(PgError {
            sqlstate: NOT_SUPPORTED.to_string(),
            message: format!("column \"{c}\" is an identity column: pipeline_ingest cannot write it through Citus yet"),
            detail: None,
        });
    }
    let (staging, staging_oid) = super::upsert::staging_table(relid, owner, &[]);
    // text/csv fields fill the listed columns, or every data column (not the metadata columns, nor
    // the staging table's own two).
    let metadata = match &target.features.metadata {
        Some(json) => Metadata::parse(P::SYSTEM, json, &super::relation::insertable_column_types(relid)).map_err(|e| PgError {
            sqlstate: e.sqlstate().to_string(),
            message: format!("metadata: {e}"),
            detail: None,
        })?,
        None => Metadata::default(),
    };
    let data: Vec<String> = columns.iter().filter(|c| !metadata.contains(c)).cloned().collect();
    let staging_target = Target { columns: Some(target.columns.clone().unwrap_or(data)), ..target.clone() };
    let list = columns.iter().map(quote_identifier).collect::<Vec<_>>().join(", ");
    let table = super::relation::quoted_name(relid);
    let insert = format!("INSERT INTO {table} ({list}) SELECT {list} FROM {staging}");
    let clear = format!("DELETE FROM {staging}");

    let step = Step { staging_target: &staging_target, staging_oid, owner, insert: &insert, clear: &clear };
    let mut written = Written::default();
    step.apply(messages, 0..messages.len(), &mut written)?;
    Ok(written)
}

/// One way of applying staged messages: what `Step::apply` needs.
struct Step<'a> {
    staging_target: &'a Target,
    staging_oid: pg_sys::Oid,
    owner: pg_sys::Oid,
    insert: &'a str,
    clear: &'a str,
}

impl Step<'_> {
    /// Stages the messages of `range` and INSERTs them through Citus; when a shard refuses a row,
    /// each half again, down to the message responsible, which is rejected with the shard's error.
    ///
    /// No subtransaction is nested in another while Citus holds connections to the workers: the
    /// staging (its own isolation subtransactions) runs first, then the INSERT alone in a
    /// subtransaction. Citus 14 loses track of a failed connection's savepoints when a savepoint
    /// nested in the one rolled back was released (it skips the failed connection's ROLLBACK TO
    /// SAVEPOINT, and the next rollback fails with "savepoint does not exist"): measured.
    fn apply<P: Position>(&self, messages: &[Message<P>], range: std::ops::Range<usize>, out: &mut Written) -> Result<(), PgError> {
        if range.is_empty() {
            return Ok(());
        }
        let start = range.start;
        let staged = super::append::append(self.staging_target, self.staging_oid, &messages[range.clone()])?;
        let inserted = crate::xact::try_in_subtransaction(|| {
            as_role(self.owner, || {
                spi(Spi::run(self.insert));
                spi(Spi::run("SET CONSTRAINTS ALL IMMEDIATE"));
            });
            Ok(())
        })
        .map_err(shard_error);
        as_role(self.owner, || spi(Spi::run(self.clear)));
        match inserted {
            Ok(()) => {
                out.rejected.extend(staged.rejected.into_iter().map(|r| Rejected { msg: r.msg + start, ..r }));
                out.rows.extend(staged.rows.into_iter().map(|(i, n)| (i + start, n)));
                Ok(())
            }
            Err(e) if !e.is_data_error() => Err(e),
            Err(e) if range.len() == 1 => {
                out.rejected.push(Rejected { msg: start, error: e.message_with_detail(), sqlstate: e.sqlstate });
                Ok(())
            }
            Err(_) => {
                let mid = start + range.len() / 2;
                self.apply(messages, start..mid, out)?;
                self.apply(messages, mid..range.end, out)
            }
        }
    }
}

/// An identity column of the relation, if any (the staging table gives it no value).
fn identity_column(relid: pg_sys::Oid) -> Option<String> {
    spi(Spi::get_one_with_args::<String>(
        "SELECT (SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 \
         AND NOT attisdropped AND attidentity <> '' ORDER BY attnum LIMIT 1)",
        &[relid.into()],
    ))
}

/// A shard's constraint violation as Citus's COPY reports it (XX000, the remote message kept) gets
/// the SQLSTATE PostgreSQL gives that message; anything else is left as it is.
pub fn shard_error(e: PgError) -> PgError {
    if e.sqlstate != "XX000" {
        return e;
    }
    let m = e.message.as_str();
    let sqlstate = if m.contains("violates not-null constraint") {
        "23502"
    } else if m.contains("violates unique constraint") {
        "23505"
    } else if m.contains("violates foreign key constraint") {
        "23503"
    } else if m.contains("violates exclusion constraint") {
        "23P01"
    } else if m.contains("violates check constraint") || m.contains("violates partition constraint") || m.contains("no partition of relation") {
        "23514"
    } else {
        return e;
    };
    PgError { sqlstate: sqlstate.to_string(), ..e }
}
