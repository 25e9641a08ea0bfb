//! What `pipeline_kinesis.seek` writes and Kinesis workers read back: a shard moved to a record or
//! a time (`pipeline_kinesis.seeks`), which holds while the shard has no checkpoint (the seek
//! clears it in `seqnums`; the first batch read from there writes a new one).

use super::spi;
use crate::xact::as_superuser;
use ingest_core::kinesis::read::StartAt;
use ingest_core::kinesis::seqnum::SeqNum;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// Where a seek moves a shard.
pub enum SeekTo {
    /// This record is the next one read (AT_SEQUENCE_NUMBER), a KPL aggregate whole.
    Sequence(SeqNum),
    /// The first record that arrived at or after this time is the next one read (AT_TIMESTAMP).
    Time(TimestampWithTimeZone),
}

/// Locks the consumer's row and gives it a new generation: its running workers stop (a batch in
/// flight does not commit) and start again from the positions this transaction stores.
pub fn bump_generation(consumer_id: i32) {
    as_superuser(|| {
        spi(Spi::run_with_args(
            "UPDATE pipeline_kinesis.consumers SET generation = generation + 1 WHERE id = $1",
            &[consumer_id.into()],
        ))
    });
}

/// Moves one shard of a consumer: forgets its checkpoint (and that it was read to its end) and
/// stores where it starts instead. Its lineage columns are kept (or filled by the next listing).
pub fn move_shard(consumer_id: i32, shard_id: &str, to: &SeekTo) {
    let (seq, time) = match to {
        SeekTo::Sequence(s) => (Some(s.as_str().to_string()), None),
        SeekTo::Time(t) => (None, Some(*t)),
    };
    as_superuser(|| {
        spi(Spi::run_with_args(
            "INSERT INTO pipeline_kinesis.seqnums (consumer_id, shard_id) VALUES ($1, $2) \
             ON CONFLICT (consumer_id, shard_id) DO UPDATE SET seqnum = NULL, sub_sequence = NULL, finished = false",
            &[consumer_id.into(), shard_id.into()],
        ));
        spi(Spi::run_with_args(
            "INSERT INTO pipeline_kinesis.seeks (consumer_id, shard_id, sequence_number, start_time) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (consumer_id, shard_id) DO UPDATE SET sequence_number = EXCLUDED.sequence_number, \
                 start_time = EXCLUDED.start_time",
            &[consumer_id.into(), shard_id.into(), seq.into(), time.into()],
        ));
    });
}

/// The shards of a consumer that a seek moved and that have no checkpoint since, with where they
/// start. A database whose extension is not updated to 0.7.0 yet has none.
pub fn sought(consumer_id: i32) -> BTreeMap<String, StartAt> {
    let exists = spi(Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('pipeline_kinesis.seeks') IS NOT NULL")).unwrap_or(false);
    if !exists {
        return BTreeMap::new();
    }
    as_superuser(|| {
        spi(Spi::connect(|c| {
            // Kinesis stamps records in whole milliseconds: the time rounded down takes that
            // millisecond whole, as a consumer's start_time does (never skips a record after it).
            let t = c.select(
                "SELECT k.shard_id, k.sequence_number, \
                        pg_catalog.floor(EXTRACT(epoch FROM k.start_time) * 1000)::pg_catalog.int8 \
                 FROM pipeline_kinesis.seeks k \
                 JOIN pipeline_kinesis.seqnums q ON q.consumer_id = k.consumer_id AND q.shard_id = k.shard_id \
                 WHERE k.consumer_id = $1 AND q.seqnum IS NULL AND NOT q.finished",
                None,
                &[consumer_id.into()],
            )?;
            let mut out = BTreeMap::new();
            for row in t {
                let shard: String = row.get(1)?.unwrap_or_default();
                let seq: Option<String> = row.get(2)?;
                let ms: Option<i64> = row.get(3)?;
                let at = match (seq.and_then(|s| SeqNum::parse(&s).ok()), ms) {
                    (Some(s), _) => StartAt::AtSequence(s),
                    (None, Some(ms)) if ms >= 0 => StartAt::AtTimestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)),
                    (None, Some(ms)) => StartAt::AtTimestamp(SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())),
                    (None, None) => continue,
                };
                out.insert(shard, at);
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        }))
    })
}
