//! Batches through a user's transform function (consume_begin's `transform`): the function gets
//! the batch as pipeline_kafka.message[] / pipeline_kinesis.record[] and runs as the consumer's
//! owner inside the batch transaction.

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
        "transform is not implemented yet",
    )
}
