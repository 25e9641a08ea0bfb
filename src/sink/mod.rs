//! Where rows go: PostgreSQL's own COPY FROM machinery.

pub mod copy;
