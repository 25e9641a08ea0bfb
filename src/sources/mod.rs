//! Where messages come from. A worker's pipeline (poll -> batch -> COPY -> checkpoint) is the same
//! for every system; what differs (connecting, assigning partitions or shards, polling) lives
//! behind `Source`.

pub mod error;
pub mod kafka;
pub(crate) mod kafka_brokers;
pub mod kinesis;

use error::SourceError;
use ingest_core::batch::{Batch, Limits, Position};
use std::collections::BTreeMap;

pub trait Source {
    /// Where a message is: (partition, offset) for Kafka, (shard, sequence number) for Kinesis.
    type Pos: Position;

    /// Moves messages that are already available into `batch` without waiting, until the batch
    /// is full or none are left. Returns how many were added.
    fn fill(&mut self, batch: &mut Batch<Self::Pos>, limits: &Limits) -> usize;

    /// The last `fill` took everything that was available: nothing more is at hand right now
    /// (a batch may then be committed without waiting for its timeout).
    /// The consumer's fast-path plan (rows::fast): a source that reads in a thread of its own
    /// makes its messages ready there. Default: the source does not.
    fn set_fast_plan(&mut self, _plan: Option<std::sync::Arc<ingest_core::rows::fast::FastPlan>>) {}

    fn drained(&self) -> bool {
        false
    }

    /// A file descriptor that becomes readable when messages may be available, for latch waits.
    fn wait_fd(&self) -> Option<i32>;

    /// Drains whatever made `wait_fd` readable.
    fn drain_wakeups(&mut self);

    /// The latest client-side error (connection lost, topic gone), taken once.
    fn take_error(&mut self) -> Option<String>;

    /// Periodic upkeep between batches, e.g. taking on partitions added to the topic.
    fn maintain(&mut self) -> Result<(), SourceError>;

    /// What the checkpoint of each stream this worker owns holds, as far as the worker knows
    /// (None: nothing stored yet). The batch transaction checks the catalog still says so.
    fn checkpoints(&self) -> BTreeMap<<Self::Pos as Position>::Stream, Option<<Self::Pos as Position>::Checkpoint>>;

    /// The streams this worker reads, with the latest position the source reported for each (for
    /// the status view: Kafka's high watermark), without asking the server.
    fn owned(&self) -> Vec<(<Self::Pos as Position>::Stream, Option<i64>)>;

    /// Every stream of the source as last seen, owned by this worker or not (the supervisor starts
    /// the workers of streams added later).
    fn all_streams(&self) -> Vec<<Self::Pos as Position>::Stream>;

    /// Checkpoints to commit even without messages, with the next batch or alone (Kinesis: a
    /// shard read to SHARD_END, whose end must be committed before its children are read).
    fn pending_checkpoints(&self) -> BTreeMap<<Self::Pos as Position>::Stream, <Self::Pos as Position>::Checkpoint> {
        BTreeMap::new()
    }

    /// How soon `fill` may find something without a wakeup on `wait_fd` (Kinesis: the next shard
    /// poll is due). None: only `wait_fd` or the batch timeout wake the worker.
    fn next_wakeup(&self) -> Option<std::time::Duration> {
        None
    }

    /// Messages each stream left out since the last call, for the status view (Kinesis: KPL user
    /// records skipped for lying outside their shard's hash key range).
    fn take_skipped(&mut self) -> Vec<(<Self::Pos as Position>::Stream, i64)> {
        Vec::new()
    }

    /// Called after a batch committed, with the checkpoints it stored.
    fn committed(&mut self, saved: &BTreeMap<<Self::Pos as Position>::Stream, <Self::Pos as Position>::Checkpoint>);
}
