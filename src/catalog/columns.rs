//! What the columns of a target relation are, for the checks of consume_begin and the writes of
//! the sink: each insertable column with its type, and the shapes (ingest_core::spec) that depend
//! on which columns are left for the message's data.

use super::spi;
use pgrx::prelude::*;

pub use ingest_core::spec::{json_whole_message, raw_shape_error};

/// The relation's insertable columns (not dropped, not generated) in order, each with its type's
/// name when it is a pg_catalog type (a domain: its base type's), else "".
pub fn insertable_column_types(relid: pg_sys::Oid) -> Vec<(String, String)> {
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT a.attname::text, CASE WHEN tn.nspname = 'pg_catalog' THEN t.typname::text ELSE '' END \
             FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_type t0 ON t0.oid = a.atttypid \
             JOIN pg_catalog.pg_type t ON t.oid = CASE WHEN t0.typtype = 'd' THEN t0.typbasetype ELSE t0.oid END \
             JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             ORDER BY a.attnum",
            None,
            &[relid.into()],
        )?;
        let mut out = Vec::new();
        for row in t {
            if let (Some(name), Some(typ)) = (row.get::<String>(1)?, row.get::<String>(2)?) {
                out.push((name, typ));
            }
        }
        Ok(out)
    }))
}
