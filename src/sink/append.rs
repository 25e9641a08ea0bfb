//! Plain COPY of a batch's rows (mode 'append', and the staging of upserts and stream-partitioned
//! writes): the layout read from the relation, metadata columns filled by the messages' positions
//! and metadata, bad messages isolated (sink::isolate).

use super::copy::copy_option_list;
use super::isolate::BatchSink;
use super::target::{Target, Written};
use crate::xact::PgError;
use crate::sink::relation::insertable_column_types;
use ingest_core::spec::{json_whole_message, raw_shape_error};
use ingest_core::batch::{Message, Position};
use ingest_core::format::Format;
use ingest_core::metadata::{Encoding, MetaValues, Metadata};
use ingest_core::prepare::{prepare_with, Plan, Whole};
use pgrx::prelude::*;

/// Plain COPY of every message's rows, bad messages isolated by bisection. Works for any relation
/// with the consumer's relation's columns (upserts and transforms COPY into staging tables): the
/// layout (data columns, metadata columns, whole-message values) is read from `relid` each batch.
pub fn append<P: Position>(
    target: &Target,
    relid: pg_sys::Oid,
    messages: &[Message<P>],
) -> Result<Written, PgError> {
    if messages.is_empty() {
        return Ok(Written::default());
    }
    let opts = &target.opts;
    // The relation's columns and types decide the layout; text and csv without metadata columns
    // need neither (COPY names the listed columns, or none), so they skip the catalog lookup.
    let needs_columns = target.features.metadata.is_some() || matches!(opts.format, Format::Json | Format::Raw | Format::Avro | Format::Protobuf);
    let relation = if needs_columns { insertable_column_types(relid) } else { Vec::new() };
    // Checked at consume_begin; a relation changed since (a column dropped or retyped) fails the
    // batch, which is retried, the error in last_error, until the table or the consumer is fixed.
    let metadata = match &target.features.metadata {
        Some(json) => Metadata::parse(P::SYSTEM, json, &relation).map_err(|e| PgError {
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
                    message: raw_shape_error(data.len()),
                    detail: None,
                });
            };
            let kind = if typ == "bytea" { Whole::Bytea } else { Whole::Text };
            (vec![column.clone()], true, Some(kind))
        }
        (Format::Json, _) if json_whole_message(&data) => (vec![data[0].0.clone()], true, Some(Whole::Text)),
        // json: fields match the data columns by name.
        (Format::Json, _) => (data.iter().map(|(c, _)| c.clone()).collect(), false, None),
        // avro, protobuf: record fields match the data columns by name, as json's do.
        (Format::Avro | Format::Protobuf, _) => (data.iter().map(|(c, _)| c.clone()).collect(), false, None),
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
    let decoder = super::typed::decoder(target, &relation);
    let typed = decoder.as_deref().map(|d| d as &dyn ingest_core::decode::TypedDecoder);
    // Typed records into COPY BINARY where every column has a binary encoding (pipeline_ingest.fast_path).
    let binary = (typed.is_some() && metadata.is_empty() && crate::guc::FAST_PATH.get())
        .then(|| super::plans::column_plans(relid, &columns))
        .flatten();
    let plan = Plan { opts, columns: &columns, listed, whole, metadata: metadata.len(), typed, binary: binary.as_deref() };
    let encoding = Encoding::of(opts);
    let (prepared, mut rejected) = prepare_with(
        payloads,
        &plan,
        |i, buf| {
            let m = &messages[i];
            let values = MetaValues {
                source: &target.source_name,
                pos: &m.pos,
                key: m.key.as_deref(),
                timestamp_ms: m.timestamp_ms,
                headers: m.headers.as_deref(),
            };
            metadata.encode(&values, encoding, buf).map_err(|e| (e.error, e.sqlstate))
        },
        bytes,
    );
    // (a reader thread decoding the next messages with it need not wait for the COPY)
    drop(decoder);
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
