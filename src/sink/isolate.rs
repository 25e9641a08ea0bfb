//! Inserting a prepared batch as the relation's owner, isolating bad messages: the batch is COPYed
//! in one subtransaction; when COPY fails on the data of some message, the batch is bisected, each
//! half in its own subtransaction, down to the messages that fail, and the rest is inserted. A
//! batch without bad messages costs one subtransaction. The same for every source.

use super::copy::{copy_rows, CopyOptionList};
use crate::error::raise;
use crate::xact::PgError;
use ingest_core::format::Format;
use ingest_core::prepare::{copy_jobs, Item, Prepared, Rejected};
use pgrx::prelude::*;

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
        if items.is_empty() {
            return Ok(Vec::new());
        }
        match crate::xact::in_subtransaction(|| self.copy(items)) {
            Ok(()) => Ok(Vec::new()),
            Err(e) if !e.is_data_error() => Err(e),
            Err(e) if items.len() == 1 => {
                let mut error = e.message.clone();
                if let Some(d) = &e.detail {
                    error.push_str(&format!(" ({d})"));
                }
                Ok(vec![Rejected { msg: items[0].msg, error, sqlstate: e.sqlstate }])
            }
            Err(_) => {
                let (left, right) = items.split_at(items.len() / 2);
                let mut bad = self.insert_isolating(left)?;
                bad.extend(self.insert_isolating(right)?);
                Ok(bad)
            }
        }
    }

    fn copy(&self, items: &[Item]) {
        crate::xact::as_role(self.owner, || {
            for job in copy_jobs(items) {
                let cols: Option<Vec<&str>> = job
                    .columns
                    .map(|set| self.prepared.column_sets[set].iter().map(|i| self.columns[*i].as_str()).collect());
                let data = &self.prepared.data[job.range.clone()];
                let n = copy_rows(self.relid, cols.as_deref(), &self.copy_options, data);
                if n as usize != job.rows && self.format != Format::Csv {
                    raise(
                        PgSqlErrorCode::ERRCODE_BAD_COPY_FILE_FORMAT,
                        format!("COPY took {n} rows where the messages hold {}", job.rows),
                    );
                }
            }
            // Deferred constraint triggers would fire at COMMIT, as the superuser the worker is
            // connected as: fire them now, as the owner (their errors are this COPY's errors).
            crate::catalog::spi(Spi::run("SET CONSTRAINTS ALL IMMEDIATE"));
        });
    }
}
