//! The SQL surface: thin functions that validate, write the catalog and wake workers at COMMIT.

pub mod budget;
pub mod begin;
pub mod citus_spread;
pub mod consumer_args;
pub mod credfile;
pub mod metadata_args;
pub mod writer_args;
pub mod kafka;
pub mod legacy;
pub mod kinesis;
pub mod kinesis_seek;
pub mod preview;
pub mod preview_outcome;
pub mod preview_kinesis;
pub mod lag;
pub mod partitioned;
pub mod produce;
pub mod registry;
pub mod retry;
pub mod seek;
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

/// Starts (`enabled`) or stops every consumer of one system in this database that the current
/// user may manage and that is not already so; wakes the supervisor at COMMIT. `consumers`:
/// (id, owner, enabled) of all of them. Returns how many changed.
pub fn set_all_enabled(
    source: crate::shmem::SourceKind,
    consumers: impl IntoIterator<Item = (i32, pg_sys::Oid, bool)>,
    enabled: bool,
) -> i32 {
    let mut n = 0;
    for (id, owner, now) in consumers {
        if now != enabled && can_act_as(owner) {
            n += crate::catalog::consumers::set_enabled(source, id, enabled) as i32;
        }
    }
    wake_at_commit();
    n
}

/// Where consume_end / consume_drop find the consumer they name, for one system.
pub struct NamedConsumer<'a, C> {
    /// How messages name the source, e.g. `"topic_x"` (quoted).
    pub source: &'a str,
    /// The message when there is no such consumer.
    pub missing: String,
    /// The consumer of the source into a relation.
    pub by_relation: &'a dyn Fn(pg_sys::Oid) -> Option<C>,
    /// The consumers of the source whose relation was dropped and whose stored name is this.
    pub of_dropped: &'a dyn Fn(&str) -> Vec<C>,
    pub owner: fn(&C) -> pg_sys::Oid,
}

/// The consumer a consume_end / consume_drop call names: into `relation`, or, when no relation of
/// that name exists (or a new one does that the consumer has not taken yet), the one whose dropped
/// relation had that name. Only who may manage it gets it (42501); none is 42704, an ambiguous
/// dropped name 22023.
pub fn named_consumer<C>(relation: &str, n: NamedConsumer<C>) -> C {
    use crate::catalog::{consumers, spi};
    use crate::error::raise;
    let relid = spi(Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regclass($1)::oid", &[relation.into()]));
    let mut found: Vec<C> = relid.and_then(n.by_relation).into_iter().collect();
    if found.is_empty() {
        let name = relid.and_then(consumers::relation_name_and_owner).map(|(name, _)| name);
        found = (n.of_dropped)(name.as_deref().unwrap_or(relation));
    }
    if found.len() > 1 {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("\"{relation}\" names the dropped tables of more than one consumer of {}; qualify it with its schema", n.source),
        );
    }
    let c = found.pop().unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT, n.missing));
    if !can_act_as((n.owner)(&c)) {
        raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be a member of the role that owns the consumer of {} into \"{relation}\"", n.source),
        );
    }
    c
}

/// `named_consumer` for the Kafka consumer of `topic` into `relation` (consume_end, consume_drop,
/// seek, retry_dead_letters).
pub fn named_kafka_consumer(topic: &str, relation: &str) -> crate::catalog::kafka::Consumer {
    use crate::catalog::kafka as cat;
    named_consumer(
        relation,
        NamedConsumer {
            source: &format!("\"{topic}\""),
            missing: format!("there is no consumer of topic \"{topic}\" into \"{relation}\""),
            by_relation: &|relid| cat::consumer_by_key(topic, relid),
            of_dropped: &|name| cat::consumers_of_missing_relation(topic, name),
            owner: |c| c.owner,
        },
    )
}

/// `named_consumer` for the Kinesis consumer of `stream` at `endpoint` into `relation`
/// (consume_end, consume_drop, seek, retry_dead_letters).
pub fn named_kinesis_consumer(endpoint: &str, stream: &str, relation: &str) -> crate::catalog::kinesis::Consumer {
    use crate::catalog::kinesis as cat;
    named_consumer(
        relation,
        NamedConsumer {
            source: &format!("\"{stream}\""),
            missing: format!("there is no consumer of Kinesis stream \"{stream}\" at endpoint \"{endpoint}\" into \"{relation}\""),
            by_relation: &|relid| cat::consumer_by_key(endpoint, stream, relid),
            of_dropped: &|name| cat::consumers_of_missing_relation(endpoint, stream, name),
            owner: |c| c.owner,
        },
    )
}

/// True when the current user is a superuser.
pub fn is_superuser() -> bool {
    // SAFETY: plain catalog lookup in a backend inside a transaction.
    unsafe { pg_sys::superuser() }
}

/// True when the current user has the privileges of `role` (or is a superuser).
pub fn can_act_as(role: pg_sys::Oid) -> bool {
    // SAFETY: catalog lookups in a backend inside a transaction.
    unsafe { pg_sys::has_privs_of_role(pg_sys::GetUserId(), role) }
}

/// Raises the error of a broker request made by a SQL function; `doing` names the request
/// ("metadata", "watermarks").
#[track_caller]
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

/// A `jsonb` argument as its text, parsed by the function itself: pgrx's `JsonB` parses inside the
/// argument conversion and panics (SQLSTATE XX000) on what serde_json refuses, such as numbers
/// out of f64's range (`1e400`), which jsonb accepts.
pub struct JsonbArg(pub String);

impl pgrx::FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<JsonbArg> {
        if is_null {
            return None;
        }
        // SAFETY: a non-null jsonb datum handed to us by the function call; jsonb_out returns a
        // palloc'd C string in the current memory context, copied before it is freed.
        unsafe {
            let text = pgrx::direct_function_call::<&core::ffi::CStr>(pg_sys::jsonb_out, &[Some(datum)])?;
            let owned = text.to_string_lossy().into_owned();
            pg_sys::pfree(text.as_ptr() as *mut core::ffi::c_void);
            Some(JsonbArg(owned))
        }
    }
}

// SAFETY: an argument-only mapping to the built-in jsonb type, read through jsonb_out above.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        // SAFETY: the caller (pgrx's wrapper) guarantees the argument is a jsonb datum.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

pgrx::impl_sql_translatable!(JsonbArg, arg_only = "jsonb");

impl JsonbArg {
    /// The value, or an error (SQLSTATE 22023) naming the argument when serde_json cannot hold it.
    pub fn parse(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_else(|e| {
            crate::error::raise(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, format!("{name} is not usable JSON: {e}"))
        })
    }
}
