//! Which Citus tables pipeline_ingest writes, and the refusal of the others.
//!
//! The workers write ordinary tables with PostgreSQL's own `BeginCopyFrom`/`CopyFrom`, called
//! directly; Citus routes a COPY only from its ProcessUtility hook, so on a Citus table those rows
//! would land in the coordinator's shell table, which Citus never reads: committed with their
//! offsets, and invisible (docs/citus-findings.md measured it: 1,000 rows committed, `count(*)` 0).
//! Hash-distributed tables (distributed partitioned tables and their partitions included) and
//! reference tables are written through Citus instead (`sink::citus`). The other kinds (Citus local
//! and single-shard tables, range- and append-distributed tables) and stream-partitioned consumers
//! into any Citus table are refused at `consume_begin`/`preview`/`retry_dead_letters`, and a worker
//! whose table became one stops with the error instead of losing its batch.

use pgrx::prelude::*;

/// SQLSTATE of the refusal (feature_not_supported).
pub const SQLSTATE: &str = "0A000";

/// The kinds `sink::citus` writes.
pub const HASH: &str = "hash-distributed table";
pub const REFERENCE: &str = "reference table";

/// What Citus calls `relid` when its metadata holds it ("hash-distributed table", "reference
/// table", ...), None for an ordinary table or when Citus is not installed in this database.
pub fn table_kind(relid: pg_sys::Oid) -> Option<String> {
    // pg_dist_partition exists only where `CREATE EXTENSION citus` ran; looked up in the
    // syscache (no SQL: this runs for every batch), no error and no dependency on Citus elsewhere.
    // SAFETY: a syscache lookup by name in pg_catalog, in a transaction.
    let installed = unsafe {
        pg_sys::get_relname_relid(c"pg_dist_partition".as_ptr(), pg_sys::Oid::from(pg_sys::PG_CATALOG_NAMESPACE)) != pg_sys::InvalidOid
    };
    if !installed {
        return None;
    }
    Spi::get_one_with_args::<String>(
        "SELECT CASE partmethod WHEN 'h' THEN 'hash-distributed table' WHEN 'n' THEN \
         CASE WHEN repmodel = 't' THEN 'reference table' ELSE 'local table' END \
         WHEN 'r' THEN 'range-distributed table' WHEN 'a' THEN 'append-distributed table' \
         ELSE 'table' END FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1",
        &[relid.into()],
    )
    .ok()
    .flatten()
}

/// The kind of `relid` when it is a Citus table pipeline_ingest does not write (None for an
/// ordinary table, a hash-distributed or a reference table).
pub fn unsupported_kind(relid: pg_sys::Oid) -> Option<String> {
    table_kind(relid).filter(|k| k != HASH && k != REFERENCE)
}

/// The error text for `relation`, a Citus table of `kind` that is not written.
pub fn refusal(relation: &str, kind: &str) -> String {
    format!(
        "\"{relation}\" is a Citus {kind}: pipeline_ingest writes hash-distributed and reference tables only \
         (its COPY would bypass Citus and fill the coordinator's shell table)"
    )
}

/// The error text for a stream-partitioned consumer's `relation`, a Citus table of `kind`.
pub fn partitioned_refusal(relation: &str, kind: &str) -> String {
    format!(
        "\"{relation}\" is a Citus {kind}: stream-partitioned consumers cannot write Citus tables yet \
         (give each table its own consumer)"
    )
}

/// Raises 0A000 when `relid` is a Citus table of a kind pipeline_ingest does not write.
#[track_caller]
pub fn refuse(relid: pg_sys::Oid, relation: &str) {
    if table_kind(relid).is_some() && has_identity_column(relid) {
        crate::error::raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("\"{relation}\" is a Citus table with an identity column: pipeline_ingest cannot write it through Citus yet"),
        );
    }
    if let Some(kind) = unsupported_kind(relid) {
        crate::error::raise_with(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            refusal(relation, &kind),
            None,
            Some("Consume into a hash-distributed or reference table, or into an ordinary table and INSERT ... SELECT from it.".into()),
        );
    }
}

/// Whether `relid` has an identity column (its values are not staged: see sink::citus).
fn has_identity_column(relid: pg_sys::Oid) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
         AND attidentity <> '')",
        &[relid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// A spread consumer's place among the Citus nodes (`pipeline_kafka.spread` or
/// `pipeline_kinesis.spread`, written by `consume_spread`): (slot, slots), None for a consumer
/// that is not spread.
pub fn spread_of(source: ingest_core::position::System, consumer_id: i32) -> Option<(i32, i32)> {
    let table = match source {
        ingest_core::position::System::Kafka => "pipeline_kafka.spread",
        ingest_core::position::System::Kinesis => "pipeline_kinesis.spread",
    };
    // Read-only SPI (crate::error::read_one): supervisors ask this every pass, and pgrx's
    // Spi::get_* would assign their transaction an xid. (A database not updated to 0.8.0 / 0.9.0
    // yet has no such table: not spread.)
    let present =
        crate::error::read_one::<bool>("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[table.into()]).unwrap_or(false);
    if !present {
        return None;
    }
    let (slot, slots) = crate::error::read_two::<i32, i32>(
        &format!("SELECT (SELECT slot FROM {table} WHERE consumer_id = $1), (SELECT slots FROM {table} WHERE consumer_id = $1)"),
        &[consumer_id.into()],
    );
    Some((slot?, slots?))
}

/// The worker index on this node that reads the stream of global worker index `global` (of
/// parallelism × slots when spread, see `spread_worker`), None when another node reads it.
pub fn local_index(parallelism: i32, global_of: impl Fn(i32) -> i32, spread: Option<(i32, i32)>) -> Option<i32> {
    match spread {
        Some((slot, slots)) if slots > 0 => {
            let g = global_of(parallelism.max(1) * slots);
            (g.rem_euclid(slots) == slot).then_some(g.div_euclid(slots))
        }
        _ => Some(global_of(parallelism.max(1))),
    }
}

/// The (parallelism, index) a worker of a spread consumer reads partitions by: node `slot` of
/// `slots` runs the consumer's workers as indices slot + slots × index of slots × parallelism, so
/// the node reads the partitions p with p mod slots = slot (whatever the parallelism: changing it
/// never moves a partition to another node) and its worker `index` those with
/// (p div slots) mod parallelism = index.
pub fn spread_worker(parallelism: i32, index: i32, spread: Option<(i32, i32)>) -> (i32, i32) {
    match spread {
        Some((slot, slots)) if slots > 0 => (parallelism.max(1) * slots, slot + slots * index),
        _ => (parallelism, index),
    }
}

/// This node's place among the Citus cluster's active primary nodes, ordered by group id (the
/// coordinator's group is 0): (slot, slots). Raises 0A000 without Citus or outside its node list.
pub fn local_slot() -> (i32, i32) {
    let found = Spi::get_two::<i32, i32>(
        "SELECT (SELECT r.slot::int4 FROM (SELECT groupid, pg_catalog.row_number() OVER (ORDER BY groupid) - 1 AS slot \
                   FROM pg_catalog.pg_dist_node WHERE isactive AND noderole = 'primary') r \
                 WHERE r.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group)), \
                (SELECT pg_catalog.count(*)::int4 FROM pg_catalog.pg_dist_node WHERE isactive AND noderole = 'primary')",
    );
    match found {
        Ok((Some(slot), Some(slots))) if slots > 0 => (slot, slots),
        _ => crate::error::raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "consume_spread needs a Citus cluster: this database has no Citus node list that includes this node",
        ),
    }
}

/// The shards of a spread Kinesis consumer that its consumers on the cluster's nodes (this one
/// included) finished, with that end committed: the consumer of `stream` at `endpoint` into the
/// table `relid` on each node, asked through Citus (`run_command_on_all_nodes`, as the calling
/// role: a worker's bootstrap superuser). A node that does not answer adds nothing, so a child
/// whose parent is read there waits. Raises on SPI errors (the caller runs it in a transaction of
/// its own).
pub fn finished_shards_on_nodes(endpoint: &str, stream: &str, relid: pg_sys::Oid) -> Vec<String> {
    let query = "SELECT DISTINCT s.shard FROM pg_catalog.pg_class rel \
                 JOIN pg_catalog.pg_namespace ns ON ns.oid = rel.relnamespace, \
                 LATERAL pg_catalog.run_command_on_all_nodes(pg_catalog.format( \
                   $c$SELECT COALESCE(pg_catalog.json_agg(q.shard_id), '[]') FROM pipeline_kinesis.seqnums q \
                      JOIN pipeline_kinesis.consumers c ON c.id = q.consumer_id \
                      WHERE c.endpoint = %L AND c.stream = %L AND c.relation = pg_catalog.to_regclass(%L) AND q.finished$c$, \
                   $1, $2, pg_catalog.format('%I.%I', ns.nspname, rel.relname))) r, \
                 LATERAL pg_catalog.json_array_elements_text(CASE WHEN r.success THEN r.result::json ELSE '[]' END) s(shard) \
                 WHERE rel.oid = $3";
    crate::error::spi(Spi::connect(|c| {
        let mut out = Vec::new();
        for row in c.select(query, None, &[endpoint.into(), stream.into(), relid.into()])? {
            if let Some(id) = row.get::<String>(1)? {
                out.push(id);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    }))
}
