//! Schema evolution (`auto_evolve`, typed formats): before a batch is prepared, a top-level field
//! of the batch's schemas that no column of the relation is named after becomes a new nullable
//! column (`ALTER TABLE ... ADD COLUMN IF NOT EXISTS`, no default), added as the relation's owner
//! in the batch's transaction (rolled back with it), with a LOG line; the batch then fills it.
//! Nothing is ever dropped or changed. Without `auto_evolve` such fields are ignored.
//!
//! * The column's type comes only from the decoder's fixed mapping (`TypedDecoder::field_types`),
//!   checked here against a list of pg_catalog types; the name is quoted (quote_ident). Nothing
//!   of a schema's text reaches the statement but the quoted name.
//! * A field matches a column only when spelled exactly the same: a field `Name` beside a column
//!   `name` gets its own column `"Name"`.
//! * A name longer than PostgreSQL's 63-byte identifiers could never match its column: skipped.
//! * More than [`MAX_NEW_COLUMNS`] new fields in one batch: the batch fails (54011, in
//!   last_error) and nothing is added.

use super::target::Target;
use crate::error::spi;
use crate::xact::{as_role, PgError};
use ingest_core::batch::{Message, Position};
use pgrx::prelude::*;
use std::collections::BTreeSet;

/// At most this many columns are added by one batch.
pub const MAX_NEW_COLUMNS: usize = 100;

/// The type a decoder's mapping names -> the pg_catalog type the column gets (None: not one of
/// ours, never used).
fn catalog_type(t: &str) -> Option<&'static str> {
    Some(match t {
        "boolean" => "pg_catalog.bool",
        "integer" => "pg_catalog.int4",
        "bigint" => "pg_catalog.int8",
        "real" => "pg_catalog.float4",
        "double precision" => "pg_catalog.float8",
        "text" => "pg_catalog.text",
        "bytea" => "pg_catalog.bytea",
        "numeric" => "pg_catalog.numeric",
        "date" => "pg_catalog.date",
        "time" => "pg_catalog.time",
        "timestamptz" => "pg_catalog.timestamptz",
        "timestamp" => "pg_catalog.timestamp",
        "interval" => "pg_catalog.interval",
        "jsonb" => "pg_catalog.jsonb",
        _ => return None,
    })
}

/// Adds the columns the batch's new fields need to `relid` (a consumer with `auto_evolve` whose
/// format decodes message values into records; otherwise nothing).
pub fn evolve<P: Position>(target: &Target, relid: pg_sys::Oid, messages: &[Message<P>]) -> Result<(), PgError> {
    if !target.features.auto_evolve || target.features.transform.is_some() || target.opts.format.change_events() {
        return Ok(());
    }
    let Some(typed) = &target.typed else { return Ok(()) };
    let fields = typed.value_field_types(messages.iter().filter_map(|m| m.payload.as_deref()));
    if fields.is_empty() {
        return Ok(());
    }
    let columns: BTreeSet<String> = all_columns(relid).into_iter().collect();
    let new: Vec<(String, &'static str)> = fields
        .into_iter()
        .filter(|(name, _)| !name.is_empty() && name.len() < pg_sys::NAMEDATALEN as usize && !name.contains('\0'))
        .filter(|(name, _)| !columns.contains(name))
        .filter_map(|(name, t)| Some((name, catalog_type(t)?)))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let relation = super::relation::quoted_name(relid);
    if new.len() > MAX_NEW_COLUMNS {
        return Err(PgError {
            sqlstate: "54011".to_string(),
            message: format!(
                "auto_evolve: the batch's schemas add {} fields to {relation}, more than the {MAX_NEW_COLUMNS} new columns one batch may add (none added)",
                new.len()
            ),
            detail: None,
        });
    }
    for (name, typ) in &new {
        let column = spi(Spi::get_one_with_args::<String>("SELECT pg_catalog.quote_ident($1)", &[name.as_str().into()]))
            .unwrap_or_default();
        as_role(target.owner, || spi(Spi::run(&format!("ALTER TABLE {relation} ADD COLUMN IF NOT EXISTS {column} {typ}"))));
        log!(
            "pipeline_ingest consumer {} ({}): auto_evolve added the column {column} {typ} to {relation}",
            target.consumer_id,
            target.source_name
        );
    }
    Ok(())
}

/// Every column's name (generated ones too: a field named after one is not a new column).
fn all_columns(relid: pg_sys::Oid) -> Vec<String> {
    spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT attname::text FROM pg_catalog.pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
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
