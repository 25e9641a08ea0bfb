//! `pipeline_kinesis.seek`: moves a Kinesis consumer's shards to a record or a time from SQL,
//! fenced against its running workers as `pipeline_kafka.seek` is (src/api/seek.rs).
//!
//! The new positions and a bumped generation commit together in the caller's transaction: a
//! batch in flight sees the new generation (and checkpoints it does not expect) and rolls back,
//! and the workers start again from the new positions. A moved shard has no checkpoint; it
//! starts where `pipeline_kinesis.seeks` says until its first batch commits.

use pgrx::prelude::*;

#[pg_schema]
mod pipeline_kinesis {
    use crate::api::wake_at_commit;
    use crate::catalog::kinesis_seek::{self as seek, SeekTo};
    use crate::error::{raise, raise_with, required};
    use ingest_core::kinesis::read::StartAt;
    use ingest_core::kinesis::seqnum::SeqNum;
    use ingest_kinesis::{Kinesis, KinesisError};
    use pgrx::datum::TimestampWithTimeZone;
    use pgrx::prelude::*;
    use std::time::Duration;

    /// Raises the error of a Kinesis request made by seek (`doing`: what it asked), with the
    /// service's own message (which names no credentials).
    #[track_caller]
    fn raise_call_error(endpoint: &str, stream: &str, doing: &str, e: KinesisError) -> ! {
        let sqlstate = match &e {
            KinesisError::NotFound(_) => raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("Kinesis stream \"{stream}\" does not exist at endpoint \"{endpoint}\""),
            ),
            KinesisError::Credentials(_) => PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            KinesisError::Unavailable(_) => PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            KinesisError::Interrupted => {
                // A cancel or statement timeout arrived while the call waited: PostgreSQL raises it.
                pg_sys::check_for_interrupts!();
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED
            }
            KinesisError::Throttled(_) => PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            KinesisError::Refused(m) if m.starts_with("AccessDenied") => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            // An invalid argument: above all a sequence number that is not of this shard.
            KinesisError::Refused(m) if m.starts_with("InvalidArgument") || m.starts_with("ValidationException") => {
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
            }
            KinesisError::IteratorExpired(_) | KinesisError::Refused(_) => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        };
        raise(sqlstate, format!("could not {doing} (Kinesis stream \"{stream}\" at endpoint \"{endpoint}\"): {e}"))
    }

    /// Moves the consumer of `stream` at `endpoint` into `relation`: shard `shard_id` to the record
    /// `sequence_number` (it is read next, again if it was read: AT_SEQUENCE_NUMBER), or one shard
    /// or all (`shard_id` NULL) to the first record that arrived at or after `start_time`
    /// (AT_TIMESTAMP). Running workers restart there when the transaction commits; a batch they
    /// were writing does not commit. Returns how many shards were moved.
    #[pg_extern(volatile, parallel_unsafe, name = "seek")]
    fn kinesis_seek(
        endpoint: Option<&str>,
        stream: Option<&str>,
        relation: Option<&str>,
        shard_id: default!(Option<&str>, "NULL"),
        sequence_number: default!(Option<&str>, "NULL"),
        start_time: default!(Option<TimestampWithTimeZone>, "NULL"),
    ) -> i32 {
        let endpoint = required(endpoint, "endpoint");
        let stream = required(stream, "stream");
        let relation = required(relation, "relation");
        let to = match (sequence_number, start_time) {
            (Some(_), Some(_)) | (None, None) => {
                raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, "give exactly one of sequence_number and start_time")
            }
            (Some(s), None) => {
                let seq = SeqNum::parse(s).unwrap_or_else(|e| raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e.to_string()));
                if shard_id.is_none() {
                    raise_with(
                        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                        "a sequence_number needs its shard_id",
                        None,
                        Some("A sequence number names a record of one shard; start_time moves every shard.".into()),
                    );
                }
                SeekTo::Sequence(seq)
            }
            (None, Some(t)) => {
                // 22023 infinite, 22008 outside 4713 BC .. 9999-12-31, as consume_begin's start_time.
                crate::api::seek::epoch_us(t);
                SeekTo::Time(t)
            }
        };
        let c = crate::api::named_kinesis_consumer(endpoint, stream, relation);
        // The row lock first: a batch in flight either committed before (and its checkpoints are
        // overwritten below) or waits and then finds the new generation.
        seek::bump_generation(c.id);

        let ep = ingest_kinesis::Endpoint { region: c.region.clone(), url: c.url.clone(), credfile: c.credfile.clone() };
        let timeout_ms = crate::guc::BROKER_TIMEOUT_MS.get().max(100) as u64;
        let client = Kinesis::connect(&ep, Duration::from_millis(timeout_ms))
            .unwrap_or_else(|e| raise_call_error(endpoint, stream, "connect", e))
            .interruptible(crate::worker::interrupt_pending);
        let listed: Vec<String> = client
            .list_shards(stream)
            .unwrap_or_else(|e| raise_call_error(endpoint, stream, "list the shards", e))
            .into_iter()
            .map(|s| s.id)
            .collect();
        let chosen: Vec<String> = match shard_id {
            None => listed,
            Some(s) if listed.iter().any(|l| l == s) => vec![s.to_string()],
            Some(s) => raise(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("Kinesis stream \"{stream}\" has no shard \"{s}\" (it has {} listed)", listed.len()),
            ),
        };
        if let SeekTo::Sequence(seq) = &to {
            // Kinesis itself says whether the record is of this shard (it refuses the iterator).
            client
                .iterator(stream, &chosen[0], &StartAt::AtSequence(seq.clone()))
                .unwrap_or_else(|e| raise_call_error(endpoint, stream, &format!("read shard \"{}\" at sequence number {seq}", chosen[0]), e));
        }
        for shard in &chosen {
            seek::move_shard(c.id, shard, &to);
        }
        wake_at_commit();
        chosen.len() as i32
    }
}
