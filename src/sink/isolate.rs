//! Inserting a prepared batch as the relation's owner, isolating bad messages: the batch is COPYed
//! in one subtransaction; when COPY fails on the data of some message, the line COPY was on names
//! that message: the messages before it are COPYed again (they passed), it is rejected, and the
//! COPY goes on after it. An error with no line (deferred constraint triggers, a row count that
//! does not match) bisects the messages instead, each half in its own subtransaction. A batch
//! without bad messages costs one subtransaction, one with k bad messages about 2k + 1. The same
//! for every source.
//!
//! `bisect` isolates by halves what has no line to point at (a transform's call, an upsert's
//! statements): transform and upsert both use it.

use super::copy::{copy_rows, copy_rows_binary, take_error_line, CopyOptionList};
use crate::error::{raise, spi};
use crate::xact::PgError;
use ingest_core::format::Format;
use ingest_core::prepare::{item_at_line, Chunk, Item, Jobs, Lines, Prepared, Rejected};
use pgrx::prelude::*;
use std::cell::Cell;
use std::ops::Range;

/// One batch's isolation: its items, their COPY jobs, and the COPYs run so far.
struct Isolation<'a> {
    items: &'a [Item],
    jobs: Jobs<'a>,
    attempts: usize,
}

/// Where and how a prepared batch goes.
pub struct BatchSink<'a> {
    pub relid: pg_sys::Oid,
    /// Rows are written with this role's rights (the relation's owner).
    pub owner: pg_sys::Oid,
    pub format: Format,
    /// The column names `Prepared::column_sets` index into.
    pub columns: &'a [String],
    pub copy_options: CopyOptionList<'static>,
    pub prepared: &'a Prepared,
}

impl BatchSink<'_> {
    /// COPYs the items; returns the messages that failed on their data. An error that is not
    /// about the data (privileges, a missing table, resources) fails the whole batch.
    pub fn insert_isolating(&self, items: &[Item]) -> Result<Vec<Rejected>, PgError> {
        let mut run = Isolation { items, jobs: Jobs::new(items), attempts: 0 };
        let bad = self.isolate(&mut run, 0..items.len())?;
        if !bad.is_empty() {
            debug1!("isolated {} bad of {} messages in {} COPY attempts", bad.len(), items.len(), run.attempts);
        }
        Ok(bad)
    }

    fn isolate(&self, run: &mut Isolation, range: Range<usize>) -> Result<Vec<Rejected>, PgError> {
        let mut bad = Vec::new();
        let mut rest = range;
        while !rest.is_empty() {
            run.attempts += 1;
            let job = Cell::new(0);
            let jobs = run.jobs.of(rest.clone());
            let e = match crate::xact::in_subtransaction(|| self.copy(&jobs, &job)) {
                Ok(()) => break,
                Err(e) if !e.is_data_error() => return Err(e),
                Err(e) => e,
            };
            let line = take_error_line();
            if rest.len() == 1 {
                bad.push(rejected(&run.items[rest.start], &e));
                break;
            }
            let items = &run.items[rest.clone()];
            // binary COPY counts one line per tuple, as text format does
            let lines = if jobs.get(job.get()).is_some_and(|j| self.is_binary(j)) {
                Lines::Text
            } else {
                self.lines()
            };
            match line.and_then(|l| item_at_line(items, &self.prepared.data, job.get(), l, lines)) {
                Some(k) => {
                    // The messages before it passed in the failed COPY; usually they go in with
                    // one more (a row buffered for a later flush, or a deferred constraint, can
                    // still fail: isolate again).
                    let k = rest.start + k;
                    let before = self.isolate(run, rest.start..k)?;
                    if before.is_empty() {
                        // it failed after exactly the rows now in: bad, as bisection would find
                        bad.push(rejected(&run.items[k], &e));
                        rest = k + 1..rest.end;
                    } else {
                        // it failed next to rows now rejected (say, a duplicate of one): it is
                        // tried again, first of the next COPY
                        bad.extend(before);
                        rest = k..rest.end;
                    }
                }
                None => {
                    let mid = rest.start + rest.len() / 2;
                    bad.extend(self.isolate(run, rest.start..mid)?);
                    bad.extend(self.isolate(run, mid..rest.end)?);
                    break;
                }
            }
        }
        Ok(bad)
    }

    /// How COPY counts the lines of this batch's data.
    fn lines(&self) -> Lines {
        if self.format != Format::Csv {
            return Lines::Text;
        }
        let opt = |name: &str| self.copy_options.iter().find(|(k, _)| *k == name).and_then(|(_, v)| v.as_bytes().first().copied());
        let quote = opt("quote").unwrap_or(b'"');
        Lines::Csv { quote, escape: opt("escape").unwrap_or(quote) }
    }

    /// A job of COPY BINARY tuples (the fast path).
    fn is_binary(&self, job: &Chunk) -> bool {
        job.columns
            .is_some_and(|set| self.prepared.binary.get(set).copied().unwrap_or(false))
    }

    /// COPYs the jobs' rows, one COPY per job; `at` is the job running (the one an error came from).
    fn copy(&self, jobs: &[Chunk], at: &Cell<usize>) {
        crate::xact::as_role(self.owner, || {
            for (j, job) in jobs.iter().enumerate() {
                at.set(j);
                let cols: Option<Vec<&str>> = job
                    .columns
                    .map(|set| self.prepared.column_sets[set].iter().map(|i| self.columns[*i].as_str()).collect());
                let data = &self.prepared.data[job.range.clone()];
                let binary = self.is_binary(job);
                let n = if binary {
                    copy_rows_binary(self.relid, cols.as_deref(), data)
                } else {
                    copy_rows(self.relid, cols.as_deref(), &self.copy_options, data)
                };
                if n as usize != job.rows && (binary || self.format != Format::Csv) {
                    raise(
                        PgSqlErrorCode::ERRCODE_BAD_COPY_FILE_FORMAT,
                        format!("COPY took {n} rows where the messages hold {}", job.rows),
                    );
                }
            }
            // Deferred constraint triggers would fire at COMMIT, as the superuser the worker is
            // connected as: fire them now, as the owner (their errors are this COPY's errors).
            spi(Spi::run("SET CONSTRAINTS ALL IMMEDIATE"));
        });
    }
}

/// A message rejected with the error its COPY raised.
fn rejected(item: &Item, e: &PgError) -> Rejected {
    Rejected { msg: item.msg, error: e.message_with_detail(), sqlstate: e.sqlstate.clone() }
}

/// Runs `attempt` on `msgs` (batch indices, in order) in a subtransaction; when it fails on the
/// data, on each half instead, down to single messages, which are rejected with the error. The
/// results of the attempts that succeeded go to `ok`. An error not about the data is returned (the
/// batch is rolled back and retried).
pub fn bisect<T>(
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
