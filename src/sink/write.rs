//! How a batch's messages become rows, the same for every source: the one place the pipeline
//! calls between "the batch is due" and "save the checkpoints". It picks the way by the consumer's
//! settings: a transform function (sink::transform), an upsert (sink::upsert), or plain COPY
//! (append, below); each returns the messages that could not become rows, for the error policy.

use super::copy::copy_option_list;
use super::isolate::BatchSink;
use crate::worker::pipeline::Target;
use crate::xact::PgError;
use ingest_core::batch::{Message, Position};
use ingest_core::format::Format;
use ingest_core::prepare::{prepare, Rejected};
use pgrx::prelude::*;

/// What writing a batch did.
#[derive(Debug, Default)]
pub struct Written {
    /// Messages that could not become rows (bad data, a constraint, a trigger or transform error).
    pub rejected: Vec<Rejected>,
    /// (message index, rows it became) of the messages written; rejected ones may appear too
    /// (the pipeline ignores them).
    pub rows: Vec<(usize, usize)>,
}

/// Writes the batch's messages into `relid` (the consumer's relation now) as the relation's owner,
/// inside the batch transaction. An Err is not about the data (privileges, a missing table): the
/// whole batch is rolled back and retried.
pub fn write_batch<P: Position>(
    target: &Target,
    relid: pg_sys::Oid,
    messages: &[Message<P>],
) -> Result<Written, PgError> {
    if target.partitioned {
        return super::partitioned::write(target, messages);
    }
    if target.features.transform.is_some() {
        return super::transform::write(target, relid, messages);
    }
    if target.features.mode == "upsert" {
        return super::upsert::write(target, relid, messages);
    }
    append(target, relid, messages)
}

/// Plain COPY of every message's rows, bad messages isolated by bisection.
pub fn append<P: Position>(
    target: &Target,
    relid: pg_sys::Oid,
    messages: &[Message<P>],
) -> Result<Written, PgError> {
    let opts = &target.opts;
    // json: fields match the relation's columns by name; text/csv with a column list: one column
    // set naming them.
    let columns = match (&target.columns, opts.format) {
        (Some(list), Format::Text | Format::Csv) => list.clone(),
        (_, Format::Json) => crate::catalog::insertable_columns(relid),
        _ => Vec::new(),
    };
    let payloads = messages.iter().map(|m| m.payload.as_deref());
    let bytes: usize = messages
        .iter()
        .map(|m| m.payload.as_ref().map_or(0, Vec::len) + 1)
        .sum();
    let (prepared, mut rejected) =
        prepare(payloads, opts, &columns, target.columns.is_some(), bytes);
    let sink = BatchSink {
        relid,
        owner: target.owner,
        format: opts.format,
        columns: &columns,
        copy_options: copy_option_list(opts),
        prepared: &prepared,
    };
    rejected.extend(sink.insert_isolating(&prepared.items)?);
    let rows = prepared.items.iter().map(|i| (i.msg, i.rows())).collect();
    Ok(Written { rejected, rows })
}
