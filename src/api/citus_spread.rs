//! `pipeline_kafka.consume_spread`: one consumer's partitions spread over the nodes of a Citus
//! cluster (README "Scaling out with Citus").

use pgrx::prelude::*;

#[pg_schema]
mod pipeline_kafka {
    use crate::error::{raise, required};
    use crate::xact::as_superuser;
    use pgrx::prelude::*;

    /// Makes this node's consumer of `topic` into `relation` take only its share of the topic's
    /// partitions: run on every node of a Citus cluster (`run_command_on_all_nodes`), each node
    /// holding the same consumer (created there by `consume_begin`). The node's place (slot of
    /// slots, from Citus's node list) is stored once and kept: run again, it changes nothing, so a
    /// partition's offsets live on one node only (partition p on the node of slot p mod slots).
    /// Meant for a consumer being created (in the statement of its `consume_begin`): the stored
    /// offsets of the other nodes' partitions are removed here. Returns the node's slot.
    #[pg_extern(volatile, parallel_unsafe)]
    fn consume_spread(topic: Option<&str>, relation: Option<&str>) -> i32 {
        let c = crate::api::named_kafka_consumer(required(topic, "topic"), required(relation, "relation"));
        if c.relid == pg_sys::InvalidOid {
            raise(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, "a stream-partitioned consumer cannot be spread");
        }
        if let Some((slot, _)) = crate::citus::spread_of(crate::shmem::SourceKind::Kafka, c.id) {
            return slot;
        }
        let (slot, slots) = crate::citus::local_slot();
        as_superuser(|| {
            crate::error::spi(Spi::run_with_args(
                "INSERT INTO pipeline_kafka.spread (consumer_id, slot, slots) VALUES ($1, $2, $3)",
                &[c.id.into(), slot.into(), slots.into()],
            ));
            // Offsets consume_begin stored for the other nodes' partitions (where they start):
            // not this node's to keep (its lag would count them).
            crate::error::spi(Spi::run_with_args(
                "DELETE FROM pipeline_kafka.offsets WHERE consumer_id = $1 AND \"partition\" % $2 <> $3",
                &[c.id.into(), slots.into(), slot.into()],
            ));
            // the running workers restart with their share
            crate::error::spi(Spi::run_with_args(
                "UPDATE pipeline_kafka.consumers SET generation = generation + 1 WHERE id = $1",
                &[c.id.into()],
            ));
        });
        crate::api::wake_at_commit();
        slot
    }
}

#[pg_schema]
mod pipeline_kinesis {
    use crate::error::{raise, required};
    use crate::shmem::SourceKind;
    use crate::xact::as_superuser;
    use ingest_core::kinesis::lineage::worker_of;
    use pgrx::prelude::*;

    /// Makes this node's consumer of `stream` at `endpoint` into `relation` read only its share of
    /// the stream's shards: run on every node of a Citus cluster (`run_command_on_all_nodes`), in
    /// the statement that creates the consumer there. Shard s is read on the node of slot
    /// (the number ending its id) mod slots, whatever the resharding: a child whose parent is read
    /// on another node waits until that node's catalog says the parent is finished (asked through
    /// Citus, README "Scaling out with Citus"). The slot is stored once; a consumer that read
    /// records already is refused (its positions would be on this node for shards now read by
    /// others). Returns the node's slot.
    #[pg_extern(volatile, parallel_unsafe, name = "consume_spread")]
    fn kinesis_consume_spread(endpoint: Option<&str>, stream: Option<&str>, relation: Option<&str>) -> i32 {
        let c = crate::api::named_kinesis_consumer(required(endpoint, "endpoint"), required(stream, "stream"), required(relation, "relation"));
        if c.relid == pg_sys::InvalidOid {
            raise(PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED, "a stream-partitioned consumer cannot be spread");
        }
        if let Some((slot, _)) = crate::citus::spread_of(SourceKind::Kinesis, c.id) {
            return slot;
        }
        let (slot, slots) = crate::citus::local_slot();
        as_superuser(|| {
            let read = crate::error::spi(Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT FROM pipeline_kinesis.seqnums WHERE consumer_id = $1 AND (seqnum IS NOT NULL OR finished))",
                &[c.id.into()],
            ));
            if read == Some(true) {
                raise(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!(
                        "the consumer of Kinesis stream \"{}\" has read records already: spread a consumer in the statement that creates it",
                        c.stream
                    ),
                );
            }
            crate::error::spi(Spi::run_with_args(
                "INSERT INTO pipeline_kinesis.spread (consumer_id, slot, slots) VALUES ($1, $2, $3)",
                &[c.id.into(), slot.into(), slots.into()],
            ));
            // Shards this node noted (lineage only, nothing read): the others' are not its own.
            let known = crate::error::spi(Spi::connect(|client| {
                let mut out = Vec::new();
                for row in client.select("SELECT shard_id FROM pipeline_kinesis.seqnums WHERE consumer_id = $1", None, &[c.id.into()])? {
                    if let Some(id) = row.get::<String>(1)? {
                        out.push(id);
                    }
                }
                Ok::<_, pgrx::spi::SpiError>(out)
            }));
            let others: Vec<String> = known.into_iter().filter(|id| worker_of(id, slots) != slot).collect();
            crate::error::spi(Spi::run_with_args(
                "DELETE FROM pipeline_kinesis.seqnums WHERE consumer_id = $1 AND shard_id = ANY ($2)",
                &[c.id.into(), others.into()],
            ));
            crate::error::spi(Spi::run_with_args(
                "UPDATE pipeline_kinesis.consumers SET generation = generation + 1 WHERE id = $1",
                &[c.id.into()],
            ));
        });
        crate::api::wake_at_commit();
        slot
    }
}
