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
        if let Some((slot, _)) = crate::citus::spread_of(c.id) {
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
