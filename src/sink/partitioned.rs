//! Writing a stream-partitioned consumer's batch (consume_begin_stream_partitioned): each
//! message's key names its target relation; the messages of each relation are COPYed into it
//! (`append`) **as the relation's owner**, after checking that the consumer's owner has the
//! privileges of that role (is it, a member of it, or a superuser) and that the relation's owner
//! may INSERT into it. Rows are thus written with the rights of the target table's owner, never
//! more, and a message key can only pick among roles whose rights the consumer's owner already
//! has: a table of another role (a trigger that would run with the consumer's owner's rights) is
//! never written. A message whose key names no relation the consumer may write (or that has no
//! key) is rejected with its reason, so it becomes a dead letter and the batch's offsets still
//! commit; so are a relation's messages when writing into it fails on an access rule (class 42:
//! a privilege its owner lacks, a missing object its trigger needs), which is that relation's
//! problem, not the batch's.

use super::append::append;
use super::relation::role_name;
use super::target::{Target, Written};
use crate::error::spi;
use crate::xact::{as_superuser, PgError};
use ingest_core::batch::{Message, Position};
use ingest_core::prepare::Rejected;
use pgrx::prelude::*;
use std::collections::HashMap;

/// Why a key names no relation the consumer may write: (message, SQLSTATE).
type Refusal = (String, &'static str);

/// Writes each message into the relation its key names; see the module comment.
pub fn write<P: Position>(target: &Target, messages: &[Message<P>]) -> Result<Written, PgError> {
    // Relations in the order their first message came, each with its owner and its messages'
    // indexes (rows of a relation keep the order of its messages).
    let mut groups: Vec<(pg_sys::Oid, pg_sys::Oid, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<pg_sys::Oid, usize> = HashMap::new();
    // A batch usually names few relations: each key is looked up and checked once per batch (a
    // new transaction: an owner or privilege changed since the last batch is seen).
    let mut verdicts: HashMap<Option<Vec<u8>>, Result<(pg_sys::Oid, pg_sys::Oid), Refusal>> = HashMap::new();
    let mut rejected = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        // An empty message or a tombstone holds no rows, whatever its key names (as for every
        // consumer: its offset commits, no dead letter).
        if m.payload.as_ref().is_none_or(|p| p.is_empty()) {
            continue;
        }
        let verdict = verdicts.entry(m.key.clone()).or_insert_with(|| target_relation(m.key.as_deref(), target.owner));
        match verdict {
            Ok((oid, owner)) => {
                let g = *group_of.entry(*oid).or_insert_with(|| {
                    groups.push((*oid, *owner, Vec::new()));
                    groups.len() - 1
                });
                groups[g].2.push(i);
            }
            Err((error, sqlstate)) => rejected.push(Rejected { msg: i, error: error.clone(), sqlstate: sqlstate.to_string() }),
        }
    }
    let mut rows = Vec::new();
    for (relid, owner, indexes) in groups {
        let subset: Vec<Message<P>> = indexes.iter().map(|&i| messages[i].clone()).collect();
        // As the relation's owner: COPY and whatever it fires (triggers, defaults, constraints).
        let as_owner = Target { owner, ..target.clone() };
        let written = match crate::xact::try_in_subtransaction(|| append(&as_owner, relid, &subset)) {
            Ok(w) => w,
            Err(e) if e.sqlstate.starts_with("42") => {
                let error = format!("{} (writing as {}, the owner of the relation)", e.message_with_detail(), role_name(owner));
                rejected.extend(indexes.iter().map(|&i| Rejected { msg: i, error: error.clone(), sqlstate: e.sqlstate.clone() }));
                continue;
            }
            Err(e) => return Err(e),
        };
        rejected.extend(written.rejected.into_iter().map(|r| Rejected { msg: indexes[r.msg], ..r }));
        rows.extend(written.rows.into_iter().map(|(m, n)| (indexes[m], n)));
    }
    Ok(Written { rejected, rows })
}

/// The relation a message key names and its owner, if the consumer's owner (`owner`) may write
/// it: it has the privileges of the relation's owner, who may INSERT into it.
fn target_relation(key: Option<&[u8]>, owner: pg_sys::Oid) -> Result<(pg_sys::Oid, pg_sys::Oid), Refusal> {
    let Some(key) = key else {
        return Err(("the message has no key; a stream-partitioned consumer's message key names its target relation".into(), "42P01"));
    };
    let Some(text) = std::str::from_utf8(key).ok().filter(|t| !t.contains('\0')) else {
        return Err(("the message key is not UTF-8 text, so it names no relation".into(), "42602"));
    };
    let parts = parse_name(text).map_err(|e| (format!("the message key \"{}\" is not a relation name: {e}", shorten(text)), "42602"))?;
    let (schema, name) = match parts.as_slice() {
        [name] => (None, name.as_str()),
        [schema, name] => (Some(schema.as_str()), name.as_str()),
        _ => unreachable!("parse_name returns one or two parts"),
    };
    // Looked up as the superuser in the catalogs, not with to_regclass as the owner: that raises
    // an ERROR (failing every batch) for a schema the owner may not use. An unqualified name is
    // looked up as a session of the owner with the default search_path would: pg_catalog, the
    // schema named like the owner ("$user"), public, skipping schemas it has no USAGE on.
    let oid = as_superuser(|| {
        spi(Spi::get_one_with_args::<pg_sys::Oid>(
            // a scalar subquery: one row (NULL) also when there is no such relation
            "SELECT (SELECT c.oid FROM pg_catalog.unnest(CASE WHEN $1 IS NULL \
                        THEN ARRAY['pg_catalog', (SELECT rolname::text FROM pg_catalog.pg_roles WHERE oid = $3), 'public'] \
                        ELSE ARRAY[$1] END) WITH ORDINALITY AS s(nsp, i) \
             JOIN pg_catalog.pg_namespace n ON n.nspname = s.nsp \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = $2 \
             WHERE $1 IS NOT NULL OR pg_catalog.has_schema_privilege($3, n.oid, 'USAGE') \
             ORDER BY s.i LIMIT 1)",
            &[schema.into(), name.into(), owner.into()],
        ))
    });
    let shown = shorten(text);
    let Some(oid) = oid else {
        return Err((format!("relation \"{shown}\" (named by the message key) does not exist"), "42P01"));
    };
    // The privileges are the relation's owner's (rows are written as it), and the consumer's
    // owner must have that role's privileges (pg_has_role USAGE: has_privs_of_role).
    let (kind, schema, in_extension, relowner, has_owner_privs, may_insert, may_use_schema) = as_superuser(|| {
        spi(Spi::connect(|c| {
            let row = c
                .select(
                    "SELECT c.relkind::text, n.nspname::text, \
                            EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                                    AND d.objid = c.oid AND d.deptype = 'e'), \
                            c.relowner, \
                            pg_catalog.pg_has_role($2, c.relowner, 'USAGE'), \
                            pg_catalog.has_table_privilege(c.relowner, c.oid, 'INSERT'), \
                            pg_catalog.has_schema_privilege(c.relowner, n.oid, 'USAGE') \
                     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
                    None,
                    &[oid.into(), owner.into()],
                )?
                .first();
            Ok::<_, pgrx::spi::SpiError>((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<bool>(3)?.unwrap_or(true),
                row.get::<pg_sys::Oid>(4)?.unwrap_or(pg_sys::Oid::INVALID),
                row.get::<bool>(5)?.unwrap_or(false),
                row.get::<bool>(6)?.unwrap_or(false),
                row.get::<bool>(7)?.unwrap_or(false),
            ))
        }))
    });
    if kind != "r" && kind != "p" {
        return Err((format!("\"{shown}\" (named by the message key) is not a table"), "42809"));
    }
    // The key comes from whoever can produce to the topic: it must never reach the extension's
    // own tables (offsets, dead letters) or system ones, whoever owns the consumer.
    if in_extension || schema.starts_with("pg_") || schema == "information_schema" || schema == "pipeline_kafka" || schema == "pipeline_kinesis" {
        return Err((format!("stream-partitioned consumers do not write into \"{shown}\" (a system or pipeline_ingest table)"), "42501"));
    }
    // Rows are written as the relation's owner: only into a table of a role whose privileges the
    // consumer's owner has, or the key would choose whose rights (and triggers) a write runs with.
    if !has_owner_privs {
        return Err((
            format!(
                "permission denied for table {shown}: it belongs to {}, and the consumer's owner {} does not have that role's privileges \
                 (a stream-partitioned consumer writes only into tables of roles it is a member of)",
                role_name(relowner),
                role_name(owner)
            ),
            "42501",
        ));
    }
    if !may_use_schema {
        return Err((format!("permission denied for schema {schema}: the table's owner {} has no USAGE privilege on it", role_name(relowner)), "42501"));
    }
    if !may_insert {
        return Err((format!("permission denied for table {shown}: its owner {} has no INSERT privilege on it", role_name(relowner)), "42501"));
    }
    // SAFETY: catalog lookup for an existing relation, in a transaction.
    if unsafe { pg_sys::check_enable_rls(oid, relowner, true) } == pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32 {
        return Err((format!("row-level security is enabled on \"{shown}\"; ingestion uses COPY FROM, which does not support it"), "0A000"));
    }
    if let Some(kind) = crate::citus::table_kind(oid) {
        return Err((crate::citus::refusal(&shown, &kind), crate::citus::SQLSTATE));
    }
    Ok((oid, relowner))
}

/// A key as shown in errors: at most 200 characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// Splits a relation name as SQL spells it (`name`, `schema.name`, `"Quoted ""Name"""`) into its
/// one or two identifiers: unquoted ones folded to lower case, quoted ones as written; blanks
/// around identifiers are allowed. Nothing in it is ever run as SQL.
fn parse_name(text: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut ident = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted identifier".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        ident.push('"');
                    }
                    Some('"') => break,
                    Some(c) => ident.push(c),
                }
            }
            if ident.is_empty() {
                return Err("empty quoted identifier".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii() {
                    ident.push(c.to_ascii_lowercase());
                    chars.next();
                } else {
                    break;
                }
            }
            match ident.chars().next() {
                None => return Err("an identifier is missing".into()),
                Some(c) if c.is_ascii_digit() || c == '$' => return Err("an identifier must not start with a digit or $".into()),
                _ => {}
            }
        }
        // PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes (at a character boundary).
        while ident.len() > pg_sys::NAMEDATALEN as usize - 1 {
            ident.pop();
        }
        parts.push(ident);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => break,
            Some('.') if parts.len() < 2 => continue,
            Some('.') => return Err("at most schema.relation".into()),
            Some(c) => return Err(format!("unexpected character \"{c}\"")),
        }
    }
    Ok(parts)
}
