//! Where rows go: PostgreSQL's own COPY FROM machinery (`copy`), and inserting a prepared batch
//! with bad messages isolated (`isolate`).

pub mod copy;
pub mod isolate;
