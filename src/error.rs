//! Raising SQL errors with SQLSTATEs, hints and details from the API layer.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Raises an ERROR with the given SQLSTATE. Never returns.
#[track_caller]
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    raise_with(code, message, None, None)
}

#[track_caller]
pub fn raise_with(code: PgSqlErrorCode, message: impl Into<String>, detail: Option<String>, hint: Option<String>) -> ! {
    let mut r = ErrorReport::new(code, message.into(), "pipeline_ingest");
    if let Some(d) = detail {
        r = r.set_detail(d);
    }
    if let Some(h) = hint {
        r = r.set_hint(h);
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// A required argument of a function that also has optional ones (so it is not STRICT): NULL is
/// an error naming the argument (SQLSTATE 22004).
#[track_caller]
pub fn required<T>(value: Option<T>, name: &str) -> T {
    match value {
        Some(v) => v,
        None => raise(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, format!("{name} must not be NULL")),
    }
}

/// The value of an SPI call; its error raised (SQLSTATE XX000): the statements are ours, so an
/// error is an internal one. Below every layer that runs SQL (catalog, sink).
pub fn spi<T>(r: pgrx::spi::SpiResult<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("pipeline_ingest catalog access failed: {e}")),
    }
}
