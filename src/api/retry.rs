//! `retry_dead_letters`: a consumer's dead letters put through its current settings again (after
//! the table or the settings were fixed), in the caller's transaction, as the table's owner
//! (worker::retry). Only who may manage the consumer may.

use crate::worker::consumer::target_settings;
use crate::worker::pipeline::TargetSettings;
use crate::worker::retry::Retry;
use pgrx::prelude::*;

/// `max` as given: NULL is every dead letter, a negative number an error (22023).
fn max_arg(max: Option<i64>) -> Option<i64> {
    if let Some(m) = max.filter(|m| *m < 0) {
        crate::error::raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("max must be NULL (all) or >= 0; got {m}"));
    }
    max
}

/// A Kafka consumer's retry: its settings as its worker reads them, its letters in
/// (partition, offset) order.
fn retry_kafka(c: crate::catalog::kafka::Consumer, max: Option<i64>) -> i64 {
    use crate::catalog::dead_letters as dl;
    use ingest_core::batch::KafkaPos;
    let settings = TargetSettings {
        maxbytes: c.maxbytes,
        partitioned: c.partitioned,
        ..target_settings(c.relid, c.owner, &c.settings, &c.topic, &c.features)
    };
    let retry = Retry::new(crate::shmem::SourceKind::Kafka, c.id, c.generation, settings, max_arg(max));
    let mut after = dl::KAFKA_START;
    retry.run(
        |p: &KafkaPos| format!("partition {} offset {}", p.partition, p.offset),
        |n| {
            let letters = dl::kafka_letters(c.id, c.owner, after, n);
            if let Some((id, m)) = letters.last() {
                after = (m.pos.partition, m.pos.offset, *id);
            }
            letters
        },
    )
}

#[pg_schema]
mod pipeline_kafka {
    use crate::api::can_act_as;
    use crate::catalog::kafka as cat;
    use crate::error::{raise, required};
    use pgrx::prelude::*;

    /// Puts the dead letters of the consumer of `topic` into `relation` through its current
    /// settings again, oldest first (at most `max`), as the table's owner, in the caller's
    /// transaction: those that become rows leave the dead letters, the others stay with their new
    /// error. Returns how many became rows.
    #[pg_extern(volatile, parallel_unsafe, name = "retry_dead_letters")]
    fn kafka_retry_dead_letters(topic: Option<&str>, relation: Option<&str>, max: default!(Option<i64>, "NULL")) -> i64 {
        let topic = required(topic, "topic");
        let relation = required(relation, "relation");
        let c = crate::api::named_kafka_consumer(topic, relation);
        super::retry_kafka(c, max)
    }

    /// As `retry_dead_letters`, for the stream-partitioned consumer of `topic`: each message goes
    /// to the table its key names now, as that table's owner, under the consumer's rules.
    #[pg_extern(volatile, parallel_unsafe)]
    fn retry_dead_letters_stream_partitioned(topic: Option<&str>, max: default!(Option<i64>, "NULL")) -> i64 {
        let topic = required(topic, "topic");
        let c = cat::partitioned_consumer(topic).unwrap_or_else(|| {
            raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("there is no stream-partitioned consumer of topic \"{topic}\""))
        });
        if !can_act_as(c.owner) {
            raise(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("must be a member of the role that owns the stream-partitioned consumer of topic \"{topic}\""),
            );
        }
        super::retry_kafka(c, max)
    }
}

#[pg_schema]
mod pipeline_kinesis {
    use crate::catalog::dead_letters as dl;
    use crate::error::required;
    use crate::worker::consumer::target_settings;
    use crate::worker::retry::Retry;
    use ingest_core::batch::KinesisPos;
    use pgrx::prelude::*;

    /// Puts the dead letters of the consumer of `stream` at `endpoint` into `relation` through its
    /// current settings again, oldest first (at most `max`), as the table's owner, in the caller's
    /// transaction: those that become rows leave the dead letters, the others stay with their new
    /// error. Returns how many became rows.
    #[pg_extern(volatile, parallel_unsafe, name = "retry_dead_letters")]
    fn kinesis_retry_dead_letters(
        endpoint: Option<&str>,
        stream: Option<&str>,
        relation: Option<&str>,
        max: default!(Option<i64>, "NULL"),
    ) -> i64 {
        let endpoint = required(endpoint, "endpoint");
        let stream = required(stream, "stream");
        let relation = required(relation, "relation");
        let c = crate::api::named_kinesis_consumer(endpoint, stream, relation);
        // (maxbytes is not used by a retry: letters are written CHUNK at a time)
        let settings = target_settings(c.relid, c.owner, &c.settings, &c.stream, &c.features);
        let retry = Retry::new(crate::shmem::SourceKind::Kinesis, c.id, c.generation, settings, super::max_arg(max));
        let mut after = 0i64;
        retry.run(
            |p: &KinesisPos| format!("shard {} sequence number {}", p.shard, p.at.seq.as_str()),
            |n| {
                let letters = dl::kinesis_letters(c.id, c.owner, after, n);
                if let Some((id, _)) = letters.last() {
                    after = *id;
                }
                letters
            },
        )
    }
}
