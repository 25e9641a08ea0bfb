//! The fast path (issue 23): a consumer whose rows the reader thread already parsed and converted
//! into COPY BINARY tuples (ingest_core::rows::fast) is written by `COPY ... (FORMAT binary)`, the
//! main thread only inserting. Its plan (the COPY column list with each column's type) is made
//! from the catalog when the worker starts and checked against the catalog again for every batch
//! (one query): a batch made with a plan that no longer matches the relation goes the text path,
//! and the source gets the new plan. Messages the reader declined go the text path in the same
//! batch, in order (their COPY jobs are text ones), so a value is never different, only slower;
//! messages the reader found bad are dead letters with PostgreSQL's own error before any COPY.
//! Constraints, triggers, defaults, partitions and generated columns are COPY's, as before.
//!
//! Typed records (Avro, Protobuf) take it too: the plan carries the consumer's decoder, which the
//! reader decodes with when it holds the message's schema; a message naming a schema it does not
//! hold yet is prepared here (after the batch's schemas are fetched), into COPY BINARY as well.
//!
//! Only plain appends take it: metadata columns, transforms, upserts, stream-partitioned
//! consumers, raw and whole-message json stay on the text path.

use super::copy::copy_option_list;
use super::isolate::BatchSink;
use super::target::{Target, Written};
use crate::xact::PgError;
use ingest_core::batch::{Message, Position};
use ingest_core::format::Format;
use ingest_core::prepare::{prepare_with, set_index, Chunk, Item, Plan, Prepared, Rejected};
use ingest_core::rows::fast::{FastPlan, Pre};
use ingest_core::rows::ColumnPlan;
use super::plans::{catalog_columns, server_settings, CatalogColumn};
use pgrx::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether the consumer's batches may take the fast path at all.
pub fn eligible(target: &Target) -> bool {
    !target.partitioned
        && target.features.transform.is_none()
        && target.features.metadata.is_none()
        && target.features.mode != "upsert"
        && matches!(
            target.opts.format,
            Format::Csv | Format::Text | Format::Json | Format::Avro | Format::Protobuf
        )
}

fn typed(format: Format) -> bool {
    matches!(format, Format::Avro | Format::Protobuf)
}


/// The plan a consumer worker starts with (None, a warning logged, when it cannot be made):
/// `pipeline_ingest.fast_path` on and an eligible consumer.
pub fn start_plan(target: &Target, label: &str) -> Option<FastPlan> {
    if !crate::guc::FAST_PATH.get() || !eligible(target) {
        return None;
    }
    crate::xact::in_transaction(|| plan_for(target, target.relid, None)).unwrap_or_else(|e| {
        warning!("{label}: no fast path: {e}");
        None
    })
}

static NEXT_PLAN: AtomicU64 = AtomicU64::new(1);


/// The relation's columns as its relcache entry has them (name, type, typmod, dropped,
/// generated), read without SQL: what a plan was made from, so a batch whose relation still
/// shows the same can keep its plan without the catalog query. (A constraint added to a domain
/// does not show here: binary COPY runs the domain's checks too, so rows stay the same.)
type Fingerprint = Vec<(String, u32, i32, bool, i8)>;

fn fingerprint(relid: pg_sys::Oid) -> Fingerprint {
    // SAFETY: in a transaction; RowExclusiveLock is the lock the batch's COPY takes anyway (so no
    // lock upgrade later), kept to the end of the transaction; the tuple descriptor is read while
    // the relation is open.
    let rel = unsafe { pgrx::PgRelation::with_lock(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
    let fp = rel
        .tuple_desc()
        .iter()
        .map(|a| (a.name().to_string(), a.type_oid().value().to_u32(), a.type_mod(), a.is_dropped(), a.attgenerated as i8))
        .collect();
    fp
}

thread_local! {
    /// The plan last made or kept (its id, relation and fingerprint).
    static LAST: std::cell::RefCell<Option<(u64, pg_sys::Oid, Fingerprint)>> = const { std::cell::RefCell::new(None) };
}

/// The consumer's plan for relation `relid` as the catalog stands (in a transaction); None when
/// it stays on the text path. `like`: a plan to keep (same id) when nothing changed.
pub fn plan_for(target: &Target, relid: pg_sys::Oid, like: Option<&FastPlan>) -> Option<FastPlan> {
    // A Citus table is written through Citus (sink::citus): a COPY would fill the shell table.
    if !eligible(target) || crate::citus::table_kind(relid).is_some() {
        return None;
    }
    let fp = fingerprint(relid);
    if let Some(old) = like {
        let same = LAST.with(|l| matches!(&*l.borrow(), Some((id, r, f)) if *id == old.id && *r == relid && *f == fp));
        if same {
            return Some(old.clone());
        }
    }
    let plan = make_plan(target, relid, like);
    let id = plan.as_ref().map_or(0, |p| p.id);
    LAST.with(|l| *l.borrow_mut() = Some((id, relid, fp)));
    plan
}

/// The plan from the catalog (one query); `like` kept (same id) when its columns are the same.
fn make_plan(target: &Target, relid: pg_sys::Oid, like: Option<&FastPlan>) -> Option<FastPlan> {
    let settings = server_settings();
    let all = catalog_columns(relid);
    let wanted: Vec<&CatalogColumn> = match (&target.opts.format, &target.columns) {
        // records fill the columns named like their fields, as json objects do
        (Format::Avro | Format::Protobuf, _) => all.iter().collect(),
        (Format::Json, _) => {
            if let [(_, t, _, _)] = all.as_slice() {
                if t == "json" || t == "jsonb" {
                    return None; // one json column: every message is one whole value
                }
            }
            all.iter().collect()
        }
        (_, Some(list)) => {
            let mut v = Vec::with_capacity(list.len());
            for name in list {
                v.push(all.iter().find(|c| &c.0 == name)?);
            }
            v
        }
        (_, None) => all.iter().collect(),
    };
    let columns: Vec<ColumnPlan> = wanted
        .iter()
        .map(|(n, t, m, d)| ColumnPlan::new(n, t, *m, *d, &settings))
        .collect();
    if let Some(old) = like {
        if old.rows.columns == columns {
            return Some(old.clone());
        }
    }
    let mut plan = FastPlan::new(&target.opts, columns, NEXT_PLAN.fetch_add(1, Ordering::Relaxed))?;
    if typed(target.opts.format) {
        let t = target.typed.as_ref().filter(|t| t.values)?;
        // (The decoder's array columns need no setting here: a plan exists only when every column
        // has a binary encoding, arrays have none, and a relation changed since the last plan was
        // written by the text path first, which sets them for each batch.)
        plan.typed = Some(t.rows_handle());
    }
    Some(plan)
}

/// Writes a batch: the fast path when the reader made it ready (`pre`) with `plan` and the
/// relation still matches that plan (one catalog query), else today's text path
/// (sink::write). Also the plan the source should have now, when it changed (Some(None): none).
#[allow(clippy::type_complexity)]
pub fn write_batch<P: Position>(
    target: &Target,
    relid: pg_sys::Oid,
    plan: Option<&FastPlan>,
    messages: &[Message<P>],
    pre: Option<&[Pre]>,
) -> (Result<Written, PgError>, Option<Option<FastPlan>>) {
    if let (Some(plan), Some(pre)) = (plan, pre) {
        if typed(target.opts.format) {
            // The schemas the reader did not hold, and the columns auto_evolve adds for new
            // fields (a new column changes the relation: the plan is made again below), as the
            // text path does first.
            let first = super::typed::resolve(target, messages).and_then(|()| super::evolve::evolve(target, relid, messages));
            if let Err(e) = first {
                return (Err(e), None);
            }
        }
        let now = plan_for(target, relid, Some(plan));
        if now.as_ref().is_some_and(|p| p.id == plan.id) {
            return (write(target, relid, plan, messages, pre), None);
        }
        return (super::write::write_batch(target, relid, messages), Some(now));
    }
    (super::write::write_batch(target, relid, messages), None)
}

/// Writes a batch the reader made ready with `plan` (checked current by the caller): binary
/// COPYs for its tuples, text COPYs for the messages it declined, dead letters for the ones it
/// found bad.
pub fn write<P: Position>(
    target: &Target,
    relid: pg_sys::Oid,
    plan: &FastPlan,
    messages: &[Message<P>],
    pre: &[Pre],
) -> Result<Written, PgError> {
    let names = plan.names();
    let n = names.len();
    let opts = &target.opts;
    // Typed messages the reader left: the decoder now holds every schema of the batch (fetched
    // by write_batch); locked only when some message needs it.
    let declined = pre.iter().any(|p| p.plan() != Some(plan.id));
    let decoder = if declined { super::typed::values_decoder(target) } else { None };
    let text_plan = Plan {
        opts,
        columns: &names,
        listed: !matches!(opts.format, Format::Json | Format::Avro | Format::Protobuf),
        whole: None,
        metadata: 0,
        typed: decoder.as_deref().map(|d| d as &dyn ingest_core::decode::TypedDecoder),
        binary: decoder.as_ref().map(|_| plan.rows.columns.as_slice()),
    };
    let size: usize = pre
        .iter()
        .map(|p| match p {
            Pre::Rows { chunks, .. } => chunks.iter().map(|c| c.range.len()).sum(),
            _ => 0,
        })
        .sum();
    let mut out = Prepared {
        data: Vec::with_capacity(size),
        ..Default::default()
    };
    let mut rejected = Vec::new();
    // The set of every column in binary, looked up once (most chunks fill every column).
    let mut all_set: Option<usize> = None;
    for (i, (m, p)) in messages.iter().zip(pre).enumerate() {
        match p {
            Pre::Rows {
                plan: id,
                buf,
                chunks: pre_chunks,
            } if *id == plan.id => {
                let chunks = pre_chunks
                    .iter()
                    .map(|c| {
                        let set = match &c.columns {
                            None => *all_set.get_or_insert_with(|| set_index(&mut out, (0..n).collect(), true)),
                            Some(cols) => set_index(&mut out, cols.clone(), true),
                        };
                        let start = out.data.len();
                        out.data.extend_from_slice(&buf[c.range.clone()]);
                        Chunk {
                            columns: Some(set),
                            range: start..out.data.len(),
                            rows: c.rows,
                        }
                    })
                    .collect();
                out.items.push(Item { msg: i, chunks });
            }
            Pre::Empty { plan: id } if *id == plan.id => {}
            Pre::Rejected { plan: id, error } if *id == plan.id => {
                rejected.push(Rejected {
                    msg: i,
                    error: error.message_with_detail(),
                    sqlstate: error.sqlstate.to_string(),
                });
            }
            _ => {
                // The text path for this message alone (typed: the main thread's decoding, into
                // COPY BINARY where the model is sure), merged in its place.
                pgrx::check_for_interrupts!();
                let payload = m.payload.as_deref();
                let (one, bad) = prepare_with(
                    std::iter::once(payload),
                    &text_plan,
                    |_, _| Ok(()),
                    payload.map_or(0, <[u8]>::len) + 1,
                );
                rejected.extend(bad.into_iter().map(|r| Rejected { msg: i, ..r }));
                for item in one.items {
                    let chunks = item
                        .chunks
                        .into_iter()
                        .map(|c| {
                            let set = c.columns.map(|k| {
                                let binary = one.binary.get(k).copied().unwrap_or(false);
                                set_index(&mut out, one.column_sets[k].clone(), binary)
                            });
                            let start = out.data.len();
                            out.data.extend_from_slice(&one.data[c.range]);
                            Chunk {
                                columns: set,
                                range: start..out.data.len(),
                                rows: c.rows,
                            }
                        })
                        .collect();
                    out.items.push(Item { msg: i, chunks });
                }
            }
        }
    }
    // (the reader decodes the next chunks meanwhile)
    drop(decoder);
    // SAFETY: reads the backend's log settings.
    if unsafe { pg_sys::message_level_is_interesting(pg_sys::DEBUG1 as i32) } {
        let ready = pre.iter().filter(|p| p.plan() == Some(plan.id)).count();
        debug1!("fast path: {ready} of {} messages made ready by the reader", messages.len());
    }
    let sink = BatchSink {
        relid,
        owner: target.owner,
        format: opts.format,
        columns: &names,
        copy_options: copy_option_list(opts),
        prepared: &out,
    };
    rejected.extend(sink.insert_isolating(&out.items)?);
    let rows = out.items.iter().map(|i| (i.msg, i.rows())).collect();
    Ok(Written { rejected, rows })
}
