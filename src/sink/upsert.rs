//! mode 'upsert': INSERT ... ON CONFLICT (key columns) DO UPDATE, the last message of a key in a
//! batch winning, tombstones (no value) deleting the key's row.

use super::write::Written;
use crate::error::raise;
use crate::worker::pipeline::Target;
use crate::xact::PgError;
use ingest_core::batch::{Message, Position};
use pgrx::prelude::*;

pub fn write<P: Position>(
    _target: &Target,
    _relid: pg_sys::Oid,
    _messages: &[Message<P>],
) -> Result<Written, PgError> {
    raise(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        "mode 'upsert' is not implemented yet",
    )
}
