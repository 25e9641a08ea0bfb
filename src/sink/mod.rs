//! Where rows go: PostgreSQL's own COPY FROM machinery (`copy`), inserting a prepared batch with
//! bad messages isolated (`isolate`), and the ways a batch is written (`write`: append by COPY,
//! `transform`, its function pinned by `pin`, `upsert`).

pub mod copy;
pub mod isolate;
pub mod partitioned;
pub mod pin;
pub mod transform;
pub mod upsert;
pub mod write;
