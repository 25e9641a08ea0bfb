//! What Kinesis consumer workers write: each shard's checkpoint and lineage in
//! `pipeline_kinesis.seqnums`, and records that could not become rows in
//! `pipeline_kinesis.dead_letters`. Checkpoints and dead letters are written in the batch's
//! transaction; lineage (parents, closed) in a transaction of its own, never touching a checkpoint.

use super::spi;
use crate::xact::as_superuser;
use ingest_core::kinesis::read::ShardCheckpoint;
use ingest_core::kinesis::seqnum::{SeqNum, ShardPos};
use pgrx::prelude::*;
use std::collections::BTreeMap;

/// A shard's lineage as ListShards gives it.
pub struct Lineage {
    pub shard_id: String,
    pub parents: Vec<String>,
    pub closed: bool,
}

/// Records the lineage of shards (rows without a checkpoint are created for new shards).
pub fn note_lineage(consumer_id: i32, shards: &[Lineage]) {
    // Compared first, read-only: workers note the lineage at every shard listing, and a write
    // through SPI (even one that changes nothing) assigns the transaction an xid.
    let known: BTreeMap<String, (Vec<String>, bool)> = as_superuser(|| {
        spi(Spi::connect(|c| {
            let mut out = BTreeMap::new();
            for row in c.select(
                "SELECT shard_id, parents, closed FROM pipeline_kinesis.seqnums WHERE consumer_id = $1",
                None,
                &[consumer_id.into()],
            )? {
                let shard: Option<String> = row.get(1)?;
                let parents: Option<Vec<Option<String>>> = row.get(2)?;
                let closed: Option<bool> = row.get(3)?;
                if let Some(shard) = shard {
                    out.insert(shard, (parents.unwrap_or_default().into_iter().flatten().collect(), closed.unwrap_or(false)));
                }
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        }))
    });
    for s in shards.iter().filter(|s| known.get(&s.shard_id) != Some(&(s.parents.clone(), s.closed))) {
        as_superuser(|| {
            spi(Spi::run_with_args(
                "INSERT INTO pipeline_kinesis.seqnums AS q (consumer_id, shard_id, parents, closed) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (consumer_id, shard_id) DO UPDATE SET parents = EXCLUDED.parents, closed = EXCLUDED.closed \
                 WHERE (q.parents, q.closed) IS DISTINCT FROM (EXCLUDED.parents, EXCLUDED.closed)",
                &[consumer_id.into(), s.shard_id.as_str().into(), s.parents.clone().into(), s.closed.into()],
            ))
        });
    }
}

/// Checkpoints of a query's (shard_id, seqnum, sub_sequence, finished) rows; rows with nothing
/// consumed and not finished (lineage only) are no checkpoint.
fn select(query: &str, args: &[pgrx::datum::DatumWithOid]) -> BTreeMap<String, ShardCheckpoint> {
    as_superuser(|| {
        spi(Spi::connect(|c| {
            let t = c.select(query, None, args)?;
            let mut out = BTreeMap::new();
            for row in t {
                let shard: Option<String> = row.get(1)?;
                let seq: Option<String> = row.get(2)?;
                let sub: Option<i64> = row.get(3)?;
                let finished: bool = row.get(4)?.unwrap_or(false);
                let last = seq.and_then(|s| SeqNum::parse(&s).ok()).map(|seq| ShardPos { seq, sub: sub.map(|n| n as u64) });
                if let Some(shard) = shard {
                    if last.is_some() || finished {
                        out.insert(shard, ShardCheckpoint { last, finished });
                    }
                }
            }
            Ok(out)
        }))
    })
}

/// Every stored checkpoint of a consumer.
pub fn stored(consumer_id: i32) -> BTreeMap<String, ShardCheckpoint> {
    select(
        "SELECT shard_id, seqnum, sub_sequence, finished FROM pipeline_kinesis.seqnums WHERE consumer_id = $1",
        &[consumer_id.into()],
    )
}

/// Locks the rows of some shards for the batch's transaction and returns their checkpoints.
pub fn lock(consumer_id: i32, shards: &[String]) -> BTreeMap<String, ShardCheckpoint> {
    select(
        "SELECT shard_id, seqnum, sub_sequence, finished FROM pipeline_kinesis.seqnums \
         WHERE consumer_id = $1 AND shard_id = ANY($2) FOR UPDATE",
        &[consumer_id.into(), shards.to_vec().into()],
    )
}

/// Stores checkpoints (in the batch's transaction).
pub fn save(consumer_id: i32, checkpoints: &BTreeMap<String, ShardCheckpoint>) {
    for (shard, cp) in checkpoints {
        let seq = cp.last.as_ref().map(|p| p.seq.as_str().to_string());
        let sub = cp.last.as_ref().and_then(|p| p.sub).map(|n| n as i64);
        as_superuser(|| {
            spi(Spi::run_with_args(
                "INSERT INTO pipeline_kinesis.seqnums (consumer_id, shard_id, seqnum, sub_sequence, finished) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (consumer_id, shard_id) DO UPDATE SET seqnum = EXCLUDED.seqnum, \
                     sub_sequence = EXCLUDED.sub_sequence, finished = EXCLUDED.finished",
                &[consumer_id.into(), shard.as_str().into(), seq.into(), sub.into(), cp.finished.into()],
            ))
        });
    }
}

/// A user record that could not become rows.
pub struct DeadLetter<'a> {
    pub shard_id: &'a str,
    pub pos: &'a ShardPos,
    pub partition_key: Option<String>,
    pub data: Option<&'a [u8]>,
    pub error: &'a str,
    pub sqlstate: &'a str,
}

/// Stores dead letters (in the batch's transaction): one statement per 10,000.
pub fn insert_dead_letters(consumer_id: i32, stream: &str, letters: &[DeadLetter]) {
    // 0.6.0: a dead letter belongs to the consumer's owner when it was written (it stays that
    // role's when another role takes the consumer over); a database not updated yet has no column.
    let (owner_column, owner_value) = if super::has_column("pipeline_kinesis.dead_letters", "owner") {
        (", owner", ", (SELECT c.owner FROM pipeline_kinesis.consumers c WHERE c.id = $1)")
    } else {
        ("", "")
    };
    for part in letters.chunks(10_000) {
        let shards: Vec<&str> = part.iter().map(|d| d.shard_id).collect();
        let seqs: Vec<&str> = part.iter().map(|d| d.pos.seq.as_str()).collect();
        let subs: Vec<Option<i64>> = part.iter().map(|d| d.pos.sub.map(|n| n as i64)).collect();
        let keys: Vec<Option<&str>> = part.iter().map(|d| d.partition_key.as_deref()).collect();
        let data: Vec<Option<&[u8]>> = part.iter().map(|d| d.data).collect();
        let errors: Vec<&str> = part.iter().map(|d| d.error).collect();
        let sqlstates: Vec<&str> = part.iter().map(|d| d.sqlstate).collect();
        as_superuser(|| {
            spi(Spi::run_with_args(
                &format!(
                    "INSERT INTO pipeline_kinesis.dead_letters \
                         (consumer_id, stream, shard_id, sequence_number, sub_sequence, partition_key, data, error, sqlstate{owner_column}) \
                     SELECT $1, $2, sh, sq, sub, pk, d, e, s{owner_value} \
                     FROM unnest($3::text[], $4::text[], $5::int8[], $6::text[], $7::bytea[], $8::text[], $9::text[]) \
                          AS u(sh, sq, sub, pk, d, e, s)"
                ),
                &[
                    consumer_id.into(),
                    stream.into(),
                    shards.into(),
                    seqs.into(),
                    subs.into(),
                    keys.into(),
                    data.into(),
                    errors.into(),
                    sqlstates.into(),
                ],
            ))
        });
    }
}
