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

/// The first column of the first row of a read-only query (None: no row, or NULL), its error
/// raised as `spi` does. Unlike pgrx's `Spi::get_one*` (and `Spi::run*`), which run every statement
/// as a possible write and so assign the transaction an xid, a read assigns none: the loops that
/// read the catalog every second in every database (supervisors, idle workers) must not burn a
/// transaction id (and a WAL flush) per pass.
pub fn read_one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Option<T> {
    spi(pgrx::spi::Spi::connect(|c| c.select(sql, Some(1), args)?.first().get_one::<T>()))
}

/// `read_one` for two columns.
pub fn read_two<A, B>(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> (Option<A>, Option<B>)
where
    A: pgrx::datum::FromDatum + pgrx::datum::IntoDatum,
    B: pgrx::datum::FromDatum + pgrx::datum::IntoDatum,
{
    spi(pgrx::spi::Spi::connect(|c| c.select(sql, Some(1), args)?.first().get_two::<A, B>()))
}
