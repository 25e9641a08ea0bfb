//! Citus tables are refused until pipeline_ingest has a writer that goes through Citus.
//!
//! The workers write with PostgreSQL's own `BeginCopyFrom`/`CopyFrom`, called directly; Citus routes
//! a COPY only from its ProcessUtility hook, so on a Citus table (distributed, reference, a Citus
//! local table, or a partition of one of them) those rows would land in the coordinator's shell
//! table, which Citus never reads: committed with their offsets, and invisible
//! (docs/citus-findings.md measured it: 1,000 rows committed, `count(*)` 0). Until the Citus writer
//! exists (issue 22), such a table is refused at `consume_begin`/`preview` and a worker whose table
//! became one stops with the error instead of losing its batch.

use pgrx::prelude::*;

/// SQLSTATE of the refusal (feature_not_supported).
pub const SQLSTATE: &str = "0A000";

/// What Citus calls `relid` when its metadata holds it ("hash-distributed table", "reference
/// table", ...), None for an ordinary table or when Citus is not installed in this database.
pub fn table_kind(relid: pg_sys::Oid) -> Option<String> {
    // pg_dist_partition exists only where `CREATE EXTENSION citus` ran; to_regclass avoids an error
    // (and a dependency on Citus) everywhere else.
    let installed = Spi::get_one::<bool>("SELECT pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL")
        .ok()
        .flatten()
        .unwrap_or(false);
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

/// The error text for `relation`, a Citus table of `kind`.
pub fn refusal(relation: &str, kind: &str) -> String {
    format!(
        "\"{relation}\" is a Citus {kind}: pipeline_ingest cannot write Citus tables yet (its COPY would \
         bypass Citus and fill the coordinator's shell table)"
    )
}

/// Raises 0A000 when `relid` is a Citus table.
#[track_caller]
pub fn refuse(relid: pg_sys::Oid, relation: &str) {
    if let Some(kind) = table_kind(relid) {
        crate::error::raise_with(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            refusal(relation, &kind),
            None,
            Some("Consume into an ordinary table and INSERT ... SELECT from it into the Citus table.".into()),
        );
    }
}
