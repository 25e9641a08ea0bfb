//! What `consume_begin` does the same for every kind of consumer (Kafka, Kinesis,
//! stream-partitioned): lay the given arguments over the stored settings of an existing consumer
//! (only what is given changes), check them once (`ingest_core::spec`, then against the relation),
//! store them with the one catalog upsert, and say in a NOTICE what changed.

use crate::api::consumer_args::{self as args, Checked};
use crate::catalog::spec::{Key, Stored};
use crate::catalog::{consumers, Features};
use crate::shmem::SourceKind;
use ingest_core::spec::{Args, Spec};
use pgrx::prelude::*;

/// A consumer's settings, checked, before they are stored.
pub struct Prepared {
    pub spec: Spec,
    /// The settings stored before (None for a new consumer).
    pub before: Option<Spec>,
    /// Against the relation (None for a stream-partitioned consumer, which has none).
    pub checked: Option<Checked>,
}

/// The settings of `given` for the consumer `existing` (None: a new one, or one that changes
/// owner, whose defaults apply),
/// checked; against `relid` (named `relation` by the caller) when there is one. `transform`: the
/// transform argument as given.
pub fn prepare(source: SourceKind, existing: Option<i32>, given: Args, relation: Option<(pg_sys::Oid, &str)>) -> Prepared {
    let system = crate::api::metadata_args::system(source);
    let transform_given = given.transform.clone();
    let stored: Option<Stored> = existing.and_then(|id| crate::catalog::spec::stored(source, id));
    let (merged, before) = match &stored {
        Some(s) => (given.over(&s.args), Spec::check(system, s.args.clone()).ok()),
        None => (given, None),
    };
    let mut spec = args::spec(system, merged);
    let checked = relation.map(|(relid, name)| {
        let transform = args::transform_ref(transform_given.as_deref(), stored.as_ref().and_then(|s| s.transform_oid), &spec);
        args::against_relation(source, relid, name, &mut spec, transform)
    });
    Prepared { spec, before, checked }
}

/// True when the consumer's owner `owner` is the owner of `relid` (the role it will write as):
/// only then are its stored settings kept.
pub fn same_owner(owner: pg_sys::Oid, relid: pg_sys::Oid) -> bool {
    consumers::relation_name_and_owner(relid).is_some_and(|(_, o)| o == owner)
}

/// Stores the consumer (`config`: its settings object, None = keep the stored one), enables it
/// and bumps its generation; a NOTICE names each setting that changed. Returns its id.
pub fn store(key: Key, owner: pg_sys::Oid, p: &Prepared, config: Option<&str>) -> i32 {
    let id = crate::catalog::spec::upsert(key, owner, &p.spec, config);
    if let Some(Checked { features, .. }) = &p.checked {
        consumers::set_features(key.system(), id, features);
    }
    if let Some(changes) = p.before.as_ref().and_then(|b| p.spec.changes_from(b)) {
        notice!("consumer {id}: {changes}");
    }
    id
}

/// The features of a prepared consumer (the defaults without a relation).
pub fn features(p: &Prepared) -> Features {
    p.checked.as_ref().map(|c| c.features.clone()).unwrap_or_else(|| Features { mode: "append".into(), ..Features::default() })
}
