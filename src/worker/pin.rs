//! A consumer's transform function is pinned: consume_begin stores its signature (regprocedure
//! text, as before), its oid and its owner. Resolving the stored name for every batch would let any
//! role with CREATE on the function's schema, once the function is dropped, put its own function
//! of the same signature in its place, and have it run as the consumer's owner.
//!
//! For every batch that calls it (in the batch transaction, before the call):
//! - the function with the pinned oid, if it still has the stored signature and the pinned owner,
//!   is the one called;
//! - otherwise (dropped; or pg_upgrade, which does not keep pg_proc oids) a function with the
//!   stored signature and the pinned owner is adopted: its oid is pinned instead;
//! - anything else (no such function, or one of another owner) stops the consumer, with the
//!   reason in `last_error`, until consume_begin runs again (as for a table created again by
//!   another role).
//!
//! The function is locked (AccessShareLock on the object, as DROP FUNCTION, ALTER FUNCTION ...
//! OWNER TO and RENAME take AccessExclusiveLock) before it is looked at, so it cannot be dropped,
//! renamed or given away between this check and the call by its name; the lookups after the lock
//! see the latest committed catalog.
//!
//! A consumer with no pin stored (its function did not exist when the database was updated to
//! 0.6.0) calls only a function owned by the consumer's owner or by a superuser: code no other
//! role could have written.

use crate::catalog::consumers::{role_name, set_transform_pin};
use crate::catalog::{spi, Features};
use crate::shmem::SourceKind;
use crate::xact::as_superuser;
use pgrx::prelude::*;

/// Why a consumer's transform function may not be called (the consumer stops). Shown as a
/// worker's `last_error` shows it: the text, then `[SQLSTATE code]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinError {
    /// The function of the stored signature belongs to a role it may not belong to (42501).
    Owner(String),
    /// There is no function of the stored signature (42883).
    Missing(String),
}

impl PinError {
    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            PinError::Owner(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            PinError::Missing(_) => PgSqlErrorCode::ERRCODE_UNDEFINED_FUNCTION,
        }
    }

    /// The message without its SQLSTATE.
    pub fn text(&self) -> &str {
        match self {
            PinError::Owner(text) | PinError::Missing(text) => text,
        }
    }
}

impl std::fmt::Display for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = match self {
            PinError::Owner(_) => "42501",
            PinError::Missing(_) => "42883",
        };
        write!(f, "{} [SQLSTATE {code}]", self.text())
    }
}

impl std::error::Error for PinError {}

/// Checks (and re-pins) the transform of a consumer; `Err` is why the consumer stops.
pub fn check(sys: SourceKind, consumer_id: i32, consumer_owner: pg_sys::Oid, f: &Features) -> Result<(), PinError> {
    let Some(stored) = f.transform.as_deref() else { return Ok(()) };
    if let (Some(oid), Some(owner)) = (f.transform_oid, f.transform_owner) {
        if let Some((signature, proowner)) = locked_function(oid) {
            if signature == stored && proowner == owner {
                return Ok(());
            }
        }
    }
    // The pinned oid is gone (or names another function now): the stored signature.
    let found = as_superuser(|| spi(Spi::get_one_with_args::<pg_sys::Oid>("SELECT pg_catalog.to_regprocedure($1)::oid", &[stored.into()])))
        .and_then(|oid| locked_function(oid).filter(|(signature, _)| signature == stored).map(|(_, owner)| (oid, owner)));
    let stop = |what: String, kind: fn(String) -> PinError| -> Result<(), PinError> {
        Err(kind(format!(
            "transform function {stored} {what}: it was not called and nothing was written; run consume_begin again \
             (as a member of {}) to use the function that exists now",
            role_name(consumer_owner)
        )))
    };
    match (found, f.transform_owner) {
        (Some((oid, owner)), Some(pinned)) if owner == pinned => {
            if f.transform_oid != Some(oid) {
                set_transform_pin(sys, consumer_id, Some(oid), Some(owner));
            }
            Ok(())
        }
        (Some((_, owner)), Some(pinned)) => stop(format!(
            "now belongs to {}, but it was {}'s when consume_begin ran (it was dropped and created again by another role, \
             or given away)",
            role_name(owner),
            role_name(pinned)
        ), PinError::Owner),
        (None, Some(pinned)) => stop(format!("(owner {}) was dropped", role_name(pinned)), PinError::Missing),
        // Not pinned: the update to 0.6.0 found no function of the stored signature.
        (Some((_, owner)), None) if owner == consumer_owner || is_superuser(owner) => Ok(()),
        (Some((_, owner)), None) => stop(format!(
            "belongs to {}, neither the consumer's owner nor a superuser, and no owner was pinned for it (it did not exist \
             when the extension was updated to 0.6.0)",
            role_name(owner)
        ), PinError::Owner),
        (None, None) => stop("does not exist".to_string(), PinError::Missing),
    }
}

/// Locks a function against DROP / ALTER until the transaction ends, then reads its signature (as
/// the stored regprocedure text) and owner; None when there is no such function.
fn locked_function(oid: pg_sys::Oid) -> Option<(String, pg_sys::Oid)> {
    // SAFETY: in a transaction; a lock on an object that does not exist is harmless.
    unsafe {
        pg_sys::LockDatabaseObject(pg_sys::ProcedureRelationId, oid, 0, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    // A statement after the lock: a new snapshot (the batch transaction has written already, so
    // SPI runs it read-write), which sees what committed before the lock was granted.
    let (signature, owner) = as_superuser(|| {
        spi(Spi::get_two_with_args::<String, pg_sys::Oid>(
            "SELECT (SELECT p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p WHERE p.oid = $1), \
                    (SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.oid = $1)",
            &[oid.into()],
        ))
    });
    Some((signature?, owner?))
}

fn is_superuser(role: pg_sys::Oid) -> bool {
    // SAFETY: syscache lookup of a role oid, inside the batch transaction.
    unsafe { pg_sys::superuser_arg(role) }
}
