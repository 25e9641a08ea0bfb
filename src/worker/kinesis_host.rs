//! What a Kinesis worker gives its source (`sources::kinesis::KinesisHost`): its consumer's shard
//! lineage and checkpoints in pipeline_kinesis.seqnums, and the worker's stop flag. Here, so the
//! source never imports the catalog or the worker.

use crate::catalog::seqnums;
use crate::sources::kinesis::KinesisHost;
use crate::xact::{in_transaction, PgError};
use ingest_core::kinesis::lineage::Shard;
use ingest_core::kinesis::read::ShardCheckpoint;
use std::collections::BTreeMap;

/// The catalog rows of one Kinesis consumer.
pub struct Seqnums {
    pub consumer_id: i32,
}

impl KinesisHost for Seqnums {
    fn note_lineage(&self, shards: &[&Shard]) -> Result<(), PgError> {
        let lineage: Vec<seqnums::Lineage> = shards
            .iter()
            .map(|s| seqnums::Lineage { shard_id: s.id.clone(), parents: s.parents().map(str::to_string).collect(), closed: s.closed })
            .collect();
        in_transaction(|| seqnums::note_lineage(self.consumer_id, &lineage))
    }

    fn stored(&self) -> Result<BTreeMap<String, ShardCheckpoint>, PgError> {
        in_transaction(|| seqnums::stored(self.consumer_id))
    }

    fn stop_requested(&self) -> bool {
        super::shutdown_requested()
    }
}
