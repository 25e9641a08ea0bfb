//! Typed access to the extension's catalog tables. Every statement is parameterized; writes run
//! as the bootstrap superuser because the tables are not writable by other roles.

pub mod consumers;
pub mod kafka;
pub mod kinesis;
pub mod seqnums;

use pgrx::prelude::*;
use pgrx::spi::SpiResult;

/// Unwraps an SPI result; an SPI failure here is a bug or a broken catalog: raise it as such.
pub fn spi<T>(r: SpiResult<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => crate::error::raise(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("pipeline_ingest catalog access failed: {e}")),
    }
}

/// True when the extension exists in the current database (workers check before touching tables).
pub fn extension_exists() -> bool {
    spi(Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pipeline_ingest')"))
        .unwrap_or(false)
}

/// The version of the extension's schema in the current database (None when not created).
pub fn extension_version() -> Option<String> {
    spi(Spi::get_one::<String>("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pipeline_ingest'"))
}

/// The schema version this library works with.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Columns of a relation that COPY may fill (not dropped, not generated), in order.
pub fn insertable_columns(relid: pg_sys::Oid) -> Vec<String> {
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT attname::text FROM pg_catalog.pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            if let Some(name) = row.get::<String>(1)? {
                out.push(name);
            }
        }
        Ok(out)
    }))
}
