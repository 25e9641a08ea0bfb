//! Typed formats in the sink (avro, protobuf): before a batch is prepared, every schema its messages name
//! that the consumer's decoder lacks is fetched from the consumer's schema registry, once per id
//! (the decoder keeps them, bounded), so a schema lookup never happens per message.
//!
//! * an id the registry does not have: its messages become dead letters (22P02 `schema id N not
//!   found in the schema registry`), asked again in a later batch;
//! * a registry that is down, answers 5xx or refuses the request: the batch fails (SQLSTATE
//!   08006 with the registry's error), is rolled back and retried with backoff, the error in the
//!   consumer's `last_error`; nothing is dead-lettered, nothing lost;
//! * a message whose framing is bad is left to the decoder (a dead letter, 22P02).

use super::target::Target;
use crate::xact::PgError;
use super::typed_decoder::Decoder;
/// (defined beside the decoder it wraps; the sink's `Target` holds one)
pub use super::typed_decoder::Typed;
use ingest_core::batch::{Message, Position};
use ingest_core::decode::TypedDecoder;
use std::collections::BTreeSet;
use std::sync::MutexGuard;

fn outage(registry: &str, why: &str) -> PgError {
    PgError {
        sqlstate: "08006".to_string(),
        message: format!("schema registry {registry} is unavailable: {why} (the batch waits; nothing is dead-lettered)"),
        detail: None,
    }
}

/// Fetches the schemas of `messages` the decoder lacks. Err: the registry cannot answer now.
pub fn resolve<P: Position>(target: &Target, messages: &[Message<P>]) -> Result<(), PgError> {
    let Some(typed) = &target.typed else { return Ok(()) };
    let wanted: BTreeSet<u32> = {
        let mut d = typed.lock();
        d.clear_missing();
        // A transform gets the messages' bytes as they are: their values are not decoded.
        let decoded = typed.values && target.features.transform.is_none();
        let values = messages.iter().filter(|_| decoded).filter_map(|m| m.payload.as_deref());
        let keys = messages.iter().filter(|_| typed.keys).filter_map(|m| m.key.as_deref());
        values
            .chain(keys)
            .filter_map(|p| d.schema_id(p).ok())
            .filter(|id| !d.has(*id))
            .collect()
    };
    if wanted.is_empty() {
        return Ok(());
    }
    let Some(registry) = &typed.registry else {
        let why = typed.registry_error.clone().unwrap_or_else(|| "the consumer has no schema registry".to_string());
        return Err(PgError { sqlstate: "55000".to_string(), message: why, detail: None });
    };
    for id in wanted {
        pgrx::check_for_interrupts!();
        match registry.schema(id) {
            // An unusable schema (or one of another type) is kept as such: its messages carry its
            // error.
            Ok(Some(s)) => typed.lock().insert(id, &s),
            Ok(None) => typed.lock().set_missing(id),
            Err(why) => return Err(outage(&typed.registry_name, &why)),
        }
    }
    Ok(())
}

/// The consumer's decoder (None for other formats), locked for preparing a batch, its arrays
/// filling the array columns of `relation` ((name, typname) pairs: an array type's typname starts
/// with `_`; other columns get JSON).
pub fn decoder<'t>(target: &'t Target, relation: &[(String, String)]) -> Option<MutexGuard<'t, Decoder>> {
    let typed = target.typed.as_ref().filter(|t| t.values)?;
    let mut d = typed.lock();
    d.set_array_columns(relation.iter().filter(|(_, t)| t.starts_with('_')).map(|(c, _)| c.clone()));
    Some(d)
}

/// The consumer's value decoder (None for other formats), locked as it is: for messages of a
/// batch made ready with a plan that set its array columns (sink::fast).
pub fn values_decoder(target: &Target) -> Option<MutexGuard<'_, Decoder>> {
    target.typed.as_ref().filter(|t| t.values).map(Typed::lock)
}
