//! Kinesis, the parts that need no network and no PostgreSQL: sequence numbers and positions,
//! shard lineage, and KPL de-aggregation.

pub mod kpl;
pub mod lineage;
pub mod read;
pub mod seqnum;
