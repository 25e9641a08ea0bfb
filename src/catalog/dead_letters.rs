//! A consumer's dead letters as `retry_dead_letters` reads and settles them: taken oldest first,
//! a chunk at a time, each row locked (`FOR UPDATE SKIP LOCKED`, so two retries of one consumer
//! never take the same letter), then deleted (it became rows) or given its new error.

use super::spi;
use crate::shmem::SourceKind;
use crate::xact::as_superuser;
use ingest_core::batch::{KafkaPos, KinesisPos, Message};
use ingest_core::kinesis::seqnum::{SeqNum, ShardPos};
use pgrx::prelude::*;

/// Locks the consumer row (FOR SHARE) for the rest of the transaction: `consume_begin`, `seek` and
/// `consume_drop` wait until the retry's transaction ends, so the settings it read stay the
/// consumer's. False when the consumer is gone.
pub fn lock_consumer(sys: SourceKind, consumer_id: i32) -> bool {
    as_superuser(|| {
        spi(Spi::get_one_with_args::<i32>(
            &format!("SELECT id FROM {t} WHERE id = $1 FOR SHARE", t = sys.consumers()),
            &[consumer_id.into()],
        ))
    })
    .is_some()
}

/// Where the last chunk of Kafka dead letters ended: (partition, offset, id).
pub type KafkaAfter = (i32, i64, i64);

/// The first Kafka dead letter key, before every stored one.
pub const KAFKA_START: KafkaAfter = (i32::MIN, i64::MIN, i64::MIN);

/// Up to `limit` dead letters of a Kafka consumer written while `owner` owned it, after `after`
/// in (partition, offset, id) order, locked; (id, message). Timestamps and headers are not kept
/// in dead letters: the messages have none.
pub fn kafka_letters(consumer_id: i32, owner: pg_sys::Oid, after: KafkaAfter, limit: i64) -> Vec<(i64, Message<KafkaPos>)> {
    as_superuser(|| {
        spi(Spi::connect(|c| {
            let rows = c.select(
                "SELECT id, \"partition\", \"offset\", key, value FROM pipeline_kafka.dead_letters \
                 WHERE consumer_id = $1 AND owner::oid = $2 AND (\"partition\", \"offset\", id) > ($3, $4, $5) \
                 ORDER BY \"partition\", \"offset\", id LIMIT $6 FOR UPDATE SKIP LOCKED",
                None,
                &[consumer_id.into(), owner.into(), after.0.into(), after.1.into(), after.2.into(), limit.into()],
            )?;
            let mut out = Vec::new();
            for row in rows {
                let pos = KafkaPos { partition: row.get(2)?.unwrap_or_default(), offset: row.get(3)?.unwrap_or_default() };
                let message = Message { pos, key: row.get(4)?, payload: row.get(5)?, timestamp_ms: None, headers: None };
                out.push((row.get::<i64>(1)?.unwrap_or_default(), message));
            }
            Ok(out)
        }))
    })
}

/// Up to `limit` dead letters of a Kinesis consumer written while `owner` owned it, after id
/// `after`, oldest first, locked; (id, record). Arrival times are not kept in dead letters: the
/// records have none. A stored sequence number that is not one (written by hand) is kept as its
/// digits, or 0.
pub fn kinesis_letters(consumer_id: i32, owner: pg_sys::Oid, after: i64, limit: i64) -> Vec<(i64, Message<KinesisPos>)> {
    as_superuser(|| {
        spi(Spi::connect(|c| {
            let rows = c.select(
                "SELECT id, shard_id, sequence_number, sub_sequence, partition_key, data FROM pipeline_kinesis.dead_letters \
                 WHERE consumer_id = $1 AND owner::oid = $2 AND id > $3 \
                 ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED",
                None,
                &[consumer_id.into(), owner.into(), after.into(), limit.into()],
            )?;
            let mut out = Vec::new();
            for row in rows {
                let seq: String = row.get(3)?.unwrap_or_default();
                let seq = SeqNum::parse(&seq).unwrap_or_else(|_| SeqNum::parse("0").expect("0 is a sequence number"));
                let sub: Option<i64> = row.get(4)?;
                let pos = KinesisPos { shard: row.get(2)?.unwrap_or_default(), at: ShardPos { seq, sub: sub.map(|n| n.max(0) as u64) } };
                let key: Option<String> = row.get(5)?;
                let message = Message { pos, key: key.map(String::into_bytes), payload: row.get(6)?, timestamp_ms: None, headers: None };
                out.push((row.get::<i64>(1)?.unwrap_or_default(), message));
            }
            Ok(out)
        }))
    })
}

/// Removes dead letters (their messages became rows, or were skipped).
pub fn delete(sys: SourceKind, ids: &[i64]) {
    if ids.is_empty() {
        return;
    }
    as_superuser(|| spi(Spi::run_with_args(&format!("DELETE FROM {t} WHERE id = ANY($1)", t = sys.dead_letters()), &[ids.to_vec().into()])));
}

/// Gives dead letters the error they failed with now: (id, error, sqlstate).
pub fn set_errors(sys: SourceKind, letters: &[(i64, &str, &str)]) {
    if letters.is_empty() {
        return;
    }
    let ids: Vec<i64> = letters.iter().map(|l| l.0).collect();
    let errors: Vec<&str> = letters.iter().map(|l| l.1).collect();
    let sqlstates: Vec<&str> = letters.iter().map(|l| l.2).collect();
    as_superuser(|| {
        spi(Spi::run_with_args(
            &format!(
                "UPDATE {t} d SET error = u.e, sqlstate = u.s, failed_at = pg_catalog.now() \
                 FROM unnest($1::int8[], $2::text[], $3::text[]) AS u(i, e, s) WHERE d.id = u.i",
                t = sys.dead_letters()
            ),
            &[ids.into(), errors.into(), sqlstates.into()],
        ))
    });
}
