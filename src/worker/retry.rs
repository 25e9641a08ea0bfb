//! Retrying a consumer's dead letters (`retry_dead_letters`): the letters, oldest first, go through
//! the same write the consumer's workers use (`sink::write::write_batch`, with a `Target` made
//! from the consumer's current settings), in the caller's transaction, as the table's owner.
//!
//! Those that become rows now leave the dead letters; the others stay with the error they failed
//! with now. Nothing here touches the consumer's offsets or checkpoints: a dead letter lies behind
//! its consumer's committed position, so the workers never read it again, and each letter is
//! locked (`FOR UPDATE SKIP LOCKED`) before it is written, so two retries never write one twice.

use super::pipeline::{make_target, Target, TargetSettings, WorkerArgs};
use crate::catalog::consumers::{self, RelationProblem};
use crate::catalog::dead_letters;
use crate::error::{raise, raise_with};
use crate::shmem::SourceKind;
use crate::xact::PgError;
use ingest_core::batch::{Message, Position};
use ingest_core::policy::OnError;
use pgrx::prelude::*;

/// At most this many dead letters are written at a time (one write, as one batch of a worker).
const CHUNK: usize = 200;

/// A consumer whose dead letters are retried.
pub struct Retry {
    pub source: SourceKind,
    pub consumer_id: i32,
    pub target: Target,
    /// At most this many dead letters are tried (None: all).
    pub max: Option<i64>,
}

impl Retry {
    /// The consumer's current settings as a worker would write with them.
    pub fn new(source: SourceKind, consumer_id: i32, generation: i64, s: TargetSettings, max: Option<i64>) -> Retry {
        // SAFETY: MyDatabaseId is set for the whole life of a connected backend.
        let args = WorkerArgs { dboid: unsafe { pg_sys::MyDatabaseId }, consumer: consumer_id, index: 0, generation };
        let mut target = make_target(&args, s).unwrap_or_else(|e| {
            raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("the consumer's stored settings are not usable: {e}"))
        });
        super::typed::attach_stored(&mut target);
        Retry { source, consumer_id, target, max }
    }

    /// Retries the dead letters `fetch(n)` hands out (the next n at most, locked; none when there
    /// are no more); `describe` names a message's place in errors. Returns how many became rows.
    pub fn run<P: Position>(
        &self,
        describe: impl Fn(&P) -> String,
        mut fetch: impl FnMut(i64) -> Vec<(i64, Message<P>)>,
    ) -> i64 {
        let target = &self.target;
        if !dead_letters::lock_consumer(self.source, self.consumer_id) {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, "the consumer was dropped meanwhile");
        }
        let relid = if target.partitioned {
            target.relid
        } else {
            match consumers::current_relation(self.source, self.consumer_id, target.relid, target.owner) {
                Ok(oid) => oid,
                Err(RelationProblem::OtherOwner(why)) => raise_stored(PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE, &why),
                Err(RelationProblem::Missing(name)) => raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                    format!("relation \"{name}\" (oid {}) no longer exists; create it again first", target.relid.to_u32()),
                ),
            }
        };
        if !target.partitioned {
            let name = consumers::relation_name_and_owner(relid).map(|(n, _)| n).unwrap_or_default();
            crate::citus::refuse(relid, &name);
        }
        // The transform function consume_begin checked, not another of the same name.
        if let Err(why) = super::pin::check(self.source, self.consumer_id, target.owner, &target.features) {
            raise(why.sqlstate(), why.text());
        }
        let chunk = target.limits_now().max_messages.min(CHUNK) as i64;
        let (mut tried, mut ingested) = (0i64, 0i64);
        loop {
            let want = self.max.map_or(chunk, |m| chunk.min(m - tried));
            if want <= 0 {
                break;
            }
            let letters = fetch(want);
            if letters.is_empty() {
                break;
            }
            pgrx::check_for_interrupts!();
            let (ids, messages): (Vec<i64>, Vec<Message<P>>) = letters.into_iter().unzip();
            let written = crate::sink::write::write_batch(target, relid, &messages).unwrap_or_else(|e| raise_error(e));
            let mut rejected = written.rejected;
            rejected.sort_by_key(|r| r.msg);
            rejected.dedup_by_key(|r| r.msg);
            if let (OnError::Stop, Some(first)) = (target.on_error, rejected.first()) {
                raise_with(
                    code_of(&first.sqlstate),
                    format!("the dead letter at {} still fails: {}", describe(&messages[first.msg].pos), first.error),
                    None,
                    Some("The consumer's on_error is 'stop': nothing was retried. Fix what fails, or change on_error with consume_begin.".into()),
                );
            }
            if target.on_error == OnError::Skip {
                for r in &rejected {
                    warning!("skipped the dead letter at {}: {} [SQLSTATE {}]", describe(&messages[r.msg].pos), r.error, r.sqlstate);
                }
                dead_letters::delete(self.source, &ids);
            } else {
                // `rejected` is sorted by message.
                let done: Vec<i64> = (0..ids.len())
                    .filter(|i| rejected.binary_search_by_key(i, |r| r.msg).is_err())
                    .map(|i| ids[i])
                    .collect();
                dead_letters::delete(self.source, &done);
                let failed: Vec<(i64, &str, &str)> =
                    rejected.iter().map(|r| (ids[r.msg], r.error.as_str(), r.sqlstate.as_str())).collect();
                dead_letters::set_errors(self.source, &failed);
            }
            tried += ids.len() as i64;
            ingested += (ids.len() - rejected.len()) as i64;
        }
        ingested
    }
}

/// Raises an error whose text ends in ` [SQLSTATE xxxxx]` (as the catalog's stop reasons do) with
/// that SQLSTATE, or `default`.
#[track_caller]
fn raise_stored(default: PgSqlErrorCode, why: &str) -> ! {
    match why.strip_suffix(']').and_then(|w| w.rsplit_once(" [SQLSTATE ")) {
        Some((text, state)) if state.len() == 5 => raise(code_of(state), text),
        _ => raise(default, why),
    }
}

/// Raises a write's error that is not about a message (privileges, a cancel) as it was.
#[track_caller]
fn raise_error(e: PgError) -> ! {
    raise_with(code_of(&e.sqlstate), e.message, e.detail, None)
}

/// A SQLSTATE's code from its five characters (as PostgreSQL's MAKE_SQLSTATE).
fn code_of(state: &str) -> PgSqlErrorCode {
    let code = state.bytes().take(5).enumerate().fold(0i32, |acc, (i, b)| acc | ((i32::from(b.wrapping_sub(b'0')) & 0x3f) << (6 * i)));
    PgSqlErrorCode::from(code)
}
