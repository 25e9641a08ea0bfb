//! How a batch's messages become rows, the same for every source: the one place the pipeline
//! calls between "the batch is due" and "save the checkpoints". It picks the way by the consumer's
//! settings: a transform function (sink::transform), an upsert (sink::upsert), or plain COPY
//! (append, below); each returns the messages that could not become rows, for the error policy.

use super::copy::copy_option_list;
use super::isolate::BatchSink;
use crate::worker::pipeline::Target;
use crate::xact::PgError;
use crate::catalog::columns as metadata_args;
use ingest_core::batch::{Message, PosFields, Position};
use ingest_core::format::Format;
use ingest_core::metadata::{Encoding, MetaValues, Metadata, System};
use ingest_core::prepare::{prepare_with, Plan, Rejected, Whole};
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

/// Plain COPY of every message's rows, bad messages isolated by bisection. Works for any relation
/// with the consumer's relation's columns (upserts and transforms COPY into staging tables): the
/// layout (data columns, metadata columns, whole-message values) is read from `relid` each batch.
pub fn append<P: Position>(
    target: &Target,
    relid: pg_sys::Oid,
    messages: &[Message<P>],
) -> Result<Written, PgError> {
    let Some(first) = messages.first() else { return Ok(Written::default()) };
    let opts = &target.opts;
    // The relation's columns and types decide the layout; text and csv without metadata columns
    // need neither (COPY names the listed columns, or none), so they skip the catalog lookup.
    let needs_columns = target.features.metadata.is_some() || matches!(opts.format, Format::Json | Format::Raw);
    let relation = if needs_columns { metadata_args::insertable_column_types(relid) } else { Vec::new() };
    let system = match first.pos.fields() {
        PosFields::Kafka { .. } => System::Kafka,
        PosFields::Kinesis { .. } => System::Kinesis,
    };
    // Checked at consume_begin; a relation changed since (a column dropped or retyped) fails the
    // batch, which is retried, the error in last_error, until the table or the consumer is fixed.
    let metadata = match &target.features.metadata {
        Some(json) => Metadata::parse(system, json, &relation).map_err(|e| PgError {
            sqlstate: e.sqlstate().to_string(),
            message: format!("metadata: {e}"),
            detail: None,
        })?,
        None => Metadata::default(),
    };
    let data: Vec<&(String, String)> = relation.iter().filter(|(c, _)| !metadata.contains(c)).collect();
    let (columns, listed, whole) = match (opts.format, &target.columns) {
        (Format::Raw, _) => {
            let [(column, typ)] = data.as_slice() else {
                return Err(PgError {
                    sqlstate: "42P10".to_string(),
                    message: metadata_args::raw_shape_error(data.len()),
                    detail: None,
                });
            };
            let kind = if typ == "bytea" { Whole::Bytea } else { Whole::Text };
            (vec![column.clone()], true, Some(kind))
        }
        (Format::Json, _) if metadata_args::json_whole_message(&data) => (vec![data[0].0.clone()], true, Some(Whole::Text)),
        // json: fields match the data columns by name.
        (Format::Json, _) => (data.iter().map(|(c, _)| c.clone()).collect(), false, None),
        (_, Some(list)) => (list.clone(), true, None),
        // text/csv with metadata columns: the fields fill the other columns, in order.
        (_, None) if !metadata.is_empty() => (data.iter().map(|(c, _)| c.clone()).collect(), true, None),
        (_, None) => (Vec::new(), false, None),
    };
    let mut names = columns.clone();
    names.extend(metadata.column_names().map(str::to_string));
    // Preparing is linear in the messages' bytes, which may be hundreds of megabytes: a cancel,
    // statement_timeout or SIGTERM is seen between two messages.
    let payloads = messages.iter().map(|m| {
        pgrx::check_for_interrupts!();
        m.payload.as_deref()
    });
    let bytes: usize = messages
        .iter()
        .map(|m| m.payload.as_ref().map_or(0, Vec::len) + 1)
        .sum();
    let plan = Plan { opts, columns: &columns, listed, whole, metadata: metadata.len() };
    let encoding = Encoding::of(opts);
    let (prepared, mut rejected) = prepare_with(
        payloads,
        &plan,
        |i, buf| {
            let m = &messages[i];
            let pos = m.pos.fields();
            let values = MetaValues {
                source: &target.source_name,
                pos: &pos,
                key: m.key.as_deref(),
                timestamp_ms: m.timestamp_ms,
                headers: m.headers.as_deref(),
            };
            metadata.encode(&values, encoding, buf).map_err(|e| (e.error, e.sqlstate))
        },
        bytes,
    );
    let sink = BatchSink {
        relid,
        owner: target.owner,
        format: opts.format,
        columns: &names,
        copy_options: copy_option_list(opts),
        prepared: &prepared,
    };
    rejected.extend(sink.insert_isolating(&prepared.items)?);
    let rows = prepared.items.iter().map(|i| (i.msg, i.rows())).collect();
    Ok(Written { rejected, rows })
}
