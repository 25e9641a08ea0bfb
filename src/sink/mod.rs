//! Where rows go: PostgreSQL's own COPY FROM machinery (`copy`), inserting a prepared batch with
//! bad messages isolated (`isolate`), and the ways a batch is written (`write` picks one of
//! `append` by COPY, `transform`, `upsert`, `changes`, `partitioned`), for a consumer's `target`. The sink imports nothing
//! above it (no worker, catalog or api): what it needs of a consumer comes in its `Target`.

pub mod append;
pub mod changes;
pub mod citus;
pub mod copy;
pub mod evolve;
pub mod fast;
pub mod isolate;
pub mod partitioned;
pub mod plans;
pub mod relation;
pub mod target;
pub mod transform;
pub mod typed;
mod typed_decoder;
pub mod upsert;
pub mod write;
