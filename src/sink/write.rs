//! How a batch's messages become rows, the same for every source: the one place the pipeline
//! calls between "the batch is due" and "save the checkpoints". It picks the way by the consumer's
//! settings: stream-partitioned (sink::partitioned), a transform function (sink::transform), an
//! upsert (sink::upsert), or plain COPY (sink::append); each returns the messages that could not
//! become rows, for the error policy.

use super::target::Target;
/// What writing a batch did (defined with the `Target`, which every way of writing takes).
pub use super::target::Written;
use crate::xact::PgError;
use ingest_core::batch::{Message, Position};
use pgrx::prelude::*;

/// Writes the batch's messages into `relid` (the consumer's relation now) as the relation's owner,
/// inside the batch transaction. An Err is not about the data (privileges, a missing table): the
/// whole batch is rolled back and retried.
pub fn write_batch<P: Position>(
    target: &Target,
    relid: pg_sys::Oid,
    messages: &[Message<P>],
) -> Result<Written, PgError> {
    super::typed::resolve(target, messages)?;
    if target.partitioned {
        return super::partitioned::write(target, messages);
    }
    if target.features.transform.is_some() {
        return super::transform::write(target, relid, messages);
    }
    if target.features.mode == "upsert" {
        return super::upsert::write(target, relid, messages);
    }
    super::append::append(target, relid, messages)
}
