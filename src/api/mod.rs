//! The SQL surface: thin functions that validate, write the catalog and wake workers at COMMIT.

pub mod kafka;
pub mod kinesis;
pub mod produce;
pub mod status;

use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};

/// Wakes this database's supervisor (or the launcher) when the current transaction commits;
/// a rolled-back call therefore starts or stops nothing.
pub fn wake_at_commit() {
    // SAFETY: MyDatabaseId is set for the whole life of a connected backend.
    let dboid = unsafe { pg_sys::MyDatabaseId };
    register_xact_callback(PgXactCallbackEvent::Commit, move || crate::shmem::wake_database(dboid));
}

/// The current user's role oid.
pub fn current_role() -> pg_sys::Oid {
    // SAFETY: plain call, valid in a backend.
    unsafe { pg_sys::GetUserId() }
}

/// True when the current user has the privileges of `role` (or is a superuser).
pub fn can_act_as(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups in a backend inside a transaction.
    unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), role) }
}

/// Raises the error of a broker request made by a SQL function; `doing` names the request
/// ("metadata", "watermarks").
pub fn raise_probe_error(topic: &str, doing: &str, e: crate::sources::kafka::ProbeError) -> ! {
    use crate::error::{raise, raise_with};
    use crate::sources::kafka::ProbeError;
    match e {
        ProbeError::NoTopic => raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, format!("Kafka topic \"{topic}\" does not exist")),
        ProbeError::Config(m) => raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("invalid Kafka client setting: {m}")),
        ProbeError::Unreachable(m) => raise_with(
            PgSqlErrorCode::ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            format!("could not get {doing} of Kafka topic \"{topic}\": {m}"),
            None,
            Some("Check pipeline_kafka.brokers and that the brokers are reachable; pipeline_ingest.broker_timeout sets the time limit.".into()),
        ),
    }
}
