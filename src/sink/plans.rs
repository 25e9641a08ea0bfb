//! Column plans from the catalog: each column's type as the row model (ingest_core::rows) encodes
//! it in binary, for the fast path's plan (sink::fast) and typed records (sink::append).

use crate::error::spi;
use ingest_core::rows::{ColumnPlan, ServerSettings};
use pgrx::prelude::*;

/// One column as the catalog describes it: name, type name (a domain's base type), typmod, and
/// whether a domain's constraints keep it on the text path.
pub type CatalogColumn = (String, String, i32, bool);

/// The insertable columns of `relid` (not dropped, not generated), in order.
pub fn catalog_columns(relid: pg_sys::Oid) -> Vec<CatalogColumn> {
    crate::xact::as_superuser(|| {
        spi(Spi::connect(|c| {
            let t = c.select(
                "SELECT a.attname::text, \
                        CASE WHEN tn.nspname = 'pg_catalog' AND t.typtype = 'b' THEN t.typname::text ELSE '' END, \
                        CASE WHEN t0.typtype = 'd' THEN t0.typtypmod ELSE a.atttypmod END, \
                        t0.typtype = 'd' AND (t0.typnotnull OR EXISTS \
                            (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.contypid = t0.oid)) \
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
                out.push((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<i32>(3)?.unwrap_or(-1),
                    row.get::<bool>(4)?.unwrap_or(true),
                ));
            }
            Ok(out)
        }))
    })
}

/// What of the server the binary encodings depend on (version, encodings).
pub fn server_settings() -> ServerSettings {
    // SAFETY: plain reads of the backend's encodings.
    let (server, client) = unsafe {
        (
            pg_sys::GetDatabaseEncoding(),
            pg_sys::pg_get_client_encoding(),
        )
    };
    let utf8 = pg_sys::pg_enc::PG_UTF8 as i32;
    ServerSettings {
        version_num: pg_sys::PG_VERSION_NUM,
        utf8: server == utf8 && client == utf8,
        integer_datetimes: true,
    }
}

/// The binary plans of `relid`'s columns `names` (in that order), from the catalog; None when
/// one of them has no binary encoding (its rows stay in COPY text). Typed formats (Avro,
/// Protobuf) encode their records' values with them (prepare's `Plan::binary`).
pub fn column_plans(relid: pg_sys::Oid, names: &[String]) -> Option<Vec<ColumnPlan>> {
    let settings = server_settings();
    let all = catalog_columns(relid);
    names
        .iter()
        .map(|n| {
            let (name, t, m, d) = all.iter().find(|c| &c.0 == n)?;
            let p = ColumnPlan::new(name, t, *m, *d, &settings);
            p.ty.is_some().then_some(p)
        })
        .collect()
}
