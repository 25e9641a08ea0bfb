//! What one previewed message became (api::preview writes the messages and fills these).

use crate::xact::PgError;

/// What one previewed message became: its rows (jsonb text) or its error.
pub struct Outcome {
    pub rows: Vec<String>,
    pub error: Option<PgError>,
    /// Rows its write made (or deleted) when it was written, before the later messages.
    pub written: usize,
    /// An upsert's tombstone (no value): its write deletes the row of its key.
    pub tombstone: bool,
    /// A Citus table: its rows are not read back (`inserted` then says its write made rows).
    pub rows_unknown: bool,
}

impl Outcome {
    /// What happened to the message, for the `action` column: `inserted` (its rows are in the
    /// relation), `replaced` (it made rows that a later message of the batch replaced or deleted),
    /// `deleted` (an upsert's tombstone), `skipped` (it became no row: an empty message, a
    /// transform that returned none) or `error`.
    pub fn action(&self) -> &'static str {
        if self.error.is_some() {
            "error"
        } else if !self.rows.is_empty() {
            "inserted"
        } else if self.tombstone {
            "deleted"
        } else if self.rows_unknown && self.written > 0 {
            "inserted"
        } else if self.written > 0 {
            "replaced"
        } else {
            "skipped"
        }
    }
}
