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
    /// A spread consumer (consume_spread): where its namesakes on the other nodes are found.
    pub nodes: Option<Nodes>,
}

/// What names a spread consumer on every node of the Citus cluster (its id is each node's own).
pub struct Nodes {
    pub endpoint: String,
    pub stream: String,
    pub relid: pgrx::pg_sys::Oid,
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
        let mut stored = in_transaction(|| seqnums::stored(self.consumer_id))?;
        if let Some(n) = &self.nodes {
            // Parents read on other nodes: finished there (committed with their last rows) is
            // what lets a child be read here. Only `finished` of these is used (lineage).
            for id in in_transaction(|| crate::citus::finished_shards_on_nodes(&n.endpoint, &n.stream, n.relid))? {
                let cp = stored.entry(id).or_insert(ShardCheckpoint { last: None, finished: true });
                cp.finished = true;
            }
        }
        Ok(stored)
    }

    fn stop_requested(&self) -> bool {
        super::shutdown_requested()
    }
}
