//! What the sink reads of a relation and a role from PostgreSQL's own catalogs: the columns a
//! row may fill, a relation's quoted name, a role's name for messages.

use crate::error::{raise, spi};
use crate::xact::as_superuser;
use pgrx::prelude::*;

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

/// `schema.table` of the consumer's relation, each part quoted as needed (42P01 when it is gone).
pub fn quoted_name(relid: pg_sys::Oid) -> String {
    spi(Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
        &[relid.into()],
    ))
    .unwrap_or_else(|| raise(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, "the consumer's relation no longer exists"))
}

/// A role's name, for messages.
pub fn role_name(role: pg_sys::Oid) -> String {
    as_superuser(|| spi(Spi::get_one_with_args::<String>("SELECT $1::oid::regrole::text", &[role.into()])))
        .unwrap_or_else(|| role.to_u32().to_string())
}
