//! `emit_tuple(..., 'avro')`: a row as an Avro record framed for a schema registry (Confluent wire
//! format). The record schema is derived from the table's row type (README, "emit_tuple in
//! Avro": the type mapping), registered under `<topic>-value` in the only registry added with
//! pipeline_kafka.add_schema_registry, and its id cached in the backend per (registry, subject,
//! schema): the registry is asked once per row type and topic in a session, never per row.
//!
//! Registration happens in the trigger, in the user's transaction, before the row is written to
//! the outbox: the outbox row is the framed message, so the producer worker sends it as any other
//! and only once its transaction committed. A registry that cannot be reached when a schema is not
//! yet cached fails the INSERT (08006) instead of writing a message whose id nobody knows; a
//! rolled-back transaction sends nothing (its registration, not transactional, stays in the
//! registry, as the same schema's next registration would return anyway).

use ingest_core::avro_write::{self as w, AvroType, Field};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// One column of the row and how it is written.
struct Column {
    /// Index in the tuple descriptor.
    index: usize,
    ty: AvroType,
    /// Written as its type's text output (a string), not as `ty`'s binary form.
    as_text: bool,
    /// The column's type's output function.
    output: pg_sys::Oid,
    /// int2 (written as an Avro int, passed by value as 16 bits).
    int2: bool,
}

/// The row type's Avro schema (text) and how each column is written.
pub struct RowSchema {
    pub schema: String,
    columns: Vec<(Column, bool)>,
    /// What the schema was derived from: the relation's name and namespace, and per attribute
    /// (dropped, type, typmod, NOT NULL, name); a change derives it again.
    relname: String,
    relnamespace: pg_sys::Oid,
    attrs: Vec<(bool, pg_sys::Oid, i32, bool, String)>,
    /// The id last used with this schema: (registry URL, topic, id).
    last_id: RefCell<Option<(String, String, u32)>>,
}

impl RowSchema {
    /// Whether `rel`'s row type is still the one this schema was derived from.
    ///
    /// # Safety
    /// `rel` is an open relation.
    unsafe fn fits(&self, rel: pg_sys::Relation) -> bool {
        // SAFETY: as the caller guarantees.
        unsafe {
            let attrs = crate::compat::tuple_attrs((*rel).rd_att);
            (*(*rel).rd_rel).relnamespace == self.relnamespace
                && CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_bytes() == self.relname.as_bytes()
                && attrs.len() == self.attrs.len()
                && attrs.iter().zip(&self.attrs).all(|(a, (dropped, typid, typmod, notnull, name))| {
                    a.attisdropped == *dropped
                        && a.atttypid == *typid
                        && a.atttypmod == *typmod
                        && a.attnotnull == *notnull
                        && CStr::from_ptr(a.attname.data.as_ptr()).to_bytes() == name.as_bytes()
                })
        }
    }
}

thread_local! {
    /// Row schemas by relation, derived again when the row type changes. Bounded: cleared when full.
    static SCHEMAS: RefCell<HashMap<pg_sys::Oid, Rc<RowSchema>>> = RefCell::new(HashMap::new());
}

/// Relations whose row schema is kept per backend at most.
const MAX_SCHEMAS: usize = 100;

/// The schema of the relation's row type, derived at its first row in this backend and again
/// after a change of the row type (a schema per row would cost more than encoding the row).
///
/// # Safety
/// `rel` is an open relation.
pub unsafe fn row_schema(rel: pg_sys::Relation) -> Rc<RowSchema> {
    // SAFETY: as the caller guarantees.
    unsafe {
        let relid = (*rel).rd_id;
        if let Some(s) = SCHEMAS.with(|m| m.borrow().get(&relid).filter(|s| s.fits(rel)).cloned()) {
            return s;
        }
        let s = Rc::new(derive(rel));
        SCHEMAS.with(|m| {
            let mut m = m.borrow_mut();
            if m.len() >= MAX_SCHEMAS {
                m.clear();
            }
            m.insert(relid, s.clone());
        });
        s
    }
}

/// The numeric typmod's (precision, scale), when it is one Avro's decimal can carry
/// (0 <= scale <= precision; PostgreSQL 15+ also allows a negative scale or one above the
/// precision: those are written as strings).
fn decimal_of(typmod: i32) -> Option<(u32, u32)> {
    if typmod < pg_sys::VARHDRSZ as i32 {
        return None;
    }
    let t = typmod - pg_sys::VARHDRSZ as i32;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    (scale >= 0 && scale <= precision).then_some((precision as u32, scale as u32))
}

/// Derives the schema of the relation's row type. Raises 22023 for a column whose name is not a
/// legal Avro name.
///
/// # Safety
/// `rel` is an open relation.
unsafe fn derive(rel: pg_sys::Relation) -> RowSchema {
    // SAFETY: as the caller guarantees; the catalog lookups are by valid oids.
    unsafe {
        let desc = (*rel).rd_att;
        let relname = CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr()).to_string_lossy().into_owned();
        let nsp = pg_sys::get_namespace_name((*(*rel).rd_rel).relnamespace);
        let nspname = if nsp.is_null() { String::from("public") } else { CStr::from_ptr(nsp).to_string_lossy().into_owned() };
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        let mut attrs = Vec::new();
        for (index, att) in crate::compat::tuple_attrs(desc).iter().enumerate() {
            let name = CStr::from_ptr(att.attname.data.as_ptr()).to_string_lossy().into_owned();
            attrs.push((att.attisdropped, att.atttypid, att.atttypmod, att.attnotnull, name.clone()));
            if att.attisdropped {
                continue;
            }
            if !w::valid_name(&name) {
                crate::error::raise_with(
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("pipeline_kafka.emit_tuple: column \"{name}\" of \"{relname}\" is not a legal Avro field name"),
                    None,
                    Some("Avro field names are letters, digits and '_', not starting with a digit; rename the column or use the json format.".into()),
                );
            }
            let mut typmod = att.atttypmod;
            let base = pg_sys::getBaseTypeAndTypmod(att.atttypid, &mut typmod);
            let (ty, as_text) = match base {
                pg_sys::INT2OID | pg_sys::INT4OID => (AvroType::Int, false),
                pg_sys::INT8OID => (AvroType::Long, false),
                pg_sys::FLOAT4OID => (AvroType::Float, false),
                pg_sys::FLOAT8OID => (AvroType::Double, false),
                pg_sys::BOOLOID => (AvroType::Boolean, false),
                pg_sys::BYTEAOID => (AvroType::Bytes, false),
                pg_sys::DATEOID => (AvroType::Date, false),
                pg_sys::TIMESTAMPOID => (AvroType::LocalTimestampMicros, false),
                pg_sys::TIMESTAMPTZOID => (AvroType::TimestampMicros, false),
                pg_sys::UUIDOID => (AvroType::Uuid, true),
                pg_sys::NUMERICOID => match decimal_of(typmod) {
                    Some((precision, scale)) => (AvroType::Decimal { precision, scale }, true),
                    None => (AvroType::String, true),
                },
                _ => (AvroType::String, true),
            };
            let mut output = pg_sys::Oid::INVALID;
            let mut varlena = false;
            pg_sys::getTypeOutputInfo(att.atttypid, &mut output, &mut varlena);
            let nullable = !att.attnotnull;
            fields.push(Field { name, ty, nullable });
            columns.push((Column { index, ty, as_text, output, int2: base == pg_sys::INT2OID }, nullable));
        }
        RowSchema {
            schema: w::record_schema(&relname, &nspname, &fields),
            columns,
            relname,
            relnamespace: (*(*rel).rd_rel).relnamespace,
            attrs,
            last_id: RefCell::new(None),
        }
    }
}

#[track_caller]
fn unencodable(what: String) -> ! {
    crate::error::raise(PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW, format!("pipeline_kafka.emit_tuple: {what}"))
}

/// The row's Avro body.
///
/// # Safety
/// `tuple` is a tuple of `desc`, the descriptor `schema` was derived from.
pub unsafe fn encode(schema: &RowSchema, tuple: pg_sys::HeapTuple, desc: pg_sys::TupleDesc) -> Vec<u8> {
    // SAFETY: as the caller guarantees; heap_deform_tuple fills natts values and nulls; the output
    // functions return palloc'd C strings.
    unsafe {
        let natts = (*desc).natts as usize;
        let mut values = vec![pg_sys::Datum::from(0usize); natts];
        let mut nulls = vec![true; natts];
        pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        let mut buf = Vec::with_capacity(64 + natts * 8);
        for (c, nullable) in &schema.columns {
            let (d, null) = (values[c.index], nulls[c.index]);
            if *nullable {
                // The union's branch: 0 null, 1 the value.
                w::write_long(&mut buf, i64::from(!null));
                if null {
                    continue;
                }
            } else if null {
                // NOT NULL columns are never null (a constraint added NOT VALID aside).
                crate::error::raise(
                    PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
                    "pipeline_kafka.emit_tuple: a NOT NULL column is null",
                );
            }
            if c.as_text {
                let text = CStr::from_ptr(pg_sys::OidOutputFunctionCall(c.output, d)).to_string_lossy();
                match c.ty {
                    AvroType::Decimal { scale, .. } => match w::decimal_bytes(&text, scale) {
                        Ok(b) => w::write_bytes(&mut buf, &b),
                        Err(e) => crate::error::raise(
                            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                            format!("pipeline_kafka.emit_tuple: an Avro decimal cannot hold {e}"),
                        ),
                    },
                    _ => w::write_bytes(&mut buf, text.as_bytes()),
                }
                continue;
            }
            match c.ty {
                AvroType::Int if c.int2 => w::write_long(&mut buf, i64::from(d.value() as i16)),
                AvroType::Int => w::write_long(&mut buf, i64::from(d.value() as i32)),
                AvroType::Long => w::write_long(&mut buf, d.value() as i64),
                AvroType::Float => w::write_float(&mut buf, f32::from_bits(d.value() as u32)),
                AvroType::Double => w::write_double(&mut buf, f64::from_bits(d.value() as u64)),
                AvroType::Boolean => w::write_bool(&mut buf, d.value() != 0),
                AvroType::Bytes => {
                    let v = <&[u8]>::from_datum(d, false).unwrap_or_default();
                    w::write_bytes(&mut buf, v);
                }
                AvroType::Date => {
                    let days = d.value() as i32;
                    if days == i32::MIN || days == i32::MAX {
                        unencodable("an infinite date has no Avro date".into());
                    }
                    w::write_long(&mut buf, i64::from(days) + w::PG_EPOCH_DAYS)
                }
                AvroType::TimestampMicros | AvroType::LocalTimestampMicros => {
                    let us = d.value() as i64;
                    if us == i64::MIN || us == i64::MAX {
                        unencodable("an infinite timestamp has no Avro timestamp".into());
                    }
                    w::write_long(&mut buf, us + w::PG_EPOCH_MICROS)
                }
                AvroType::String | AvroType::Uuid | AvroType::Decimal { .. } => unreachable!("written as text above"),
            }
        }
        buf
    }
}

thread_local! {
    /// The registry of this transaction's Avro rows: (top transaction id, its URL), read at the
    /// transaction's first one.
    static REGISTRY: RefCell<Option<(pg_sys::TransactionId, String)>> = const { RefCell::new(None) };
    /// Registered schema ids by (registry URL, subject, schema text). Bounded: cleared when full.
    static IDS: RefCell<HashMap<(String, String, String), u32>> = RefCell::new(HashMap::new());
}

/// Schema ids kept per backend at most.
const MAX_IDS: usize = 1000;

/// The URL of the registry to register with: the only one added (55000 when none, 22023 when
/// several), read once per transaction.
fn registry_url() -> String {
    // SAFETY: in a transaction (a trigger fires in one); the INSERT already assigned an xid.
    let xid = unsafe { pg_sys::GetTopTransactionId() };
    if let Some(url) = REGISTRY.with(|r| r.borrow().as_ref().filter(|(x, _)| *x == xid).map(|(_, u)| u.clone())) {
        return url;
    }
    let urls = crate::catalog::registries::urls();
    let url = match urls.as_slice() {
        [only] => only.clone(),
        [] => crate::error::raise_with(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pipeline_kafka.emit_tuple: no schema registry is configured for the avro format",
            None,
            Some("A superuser adds one with pipeline_kafka.add_schema_registry(url).".into()),
        ),
        several => crate::error::raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("pipeline_kafka.emit_tuple: {} schema registries are configured: the avro format needs exactly one", several.len()),
        ),
    };
    REGISTRY.with(|r| *r.borrow_mut() = Some((xid, url.clone())));
    url
}

/// A client of the registry at `url`, with its stored configuration (read as the superuser: the
/// role firing the trigger cannot read pipeline_kafka.schema_registries; the credentials stay in
/// this backend's memory and no error names them).
fn client(url: &str) -> ingest_registry::Client {
    use crate::catalog::registries::{registry_client_for, ClientError};
    registry_client_for(Some(url)).unwrap_or_else(|e| match e {
        ClientError::Missing(m) => crate::error::raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("pipeline_kafka.emit_tuple: {m}"),
        ),
        ClientError::Registry(e) => registry_error(e, url, ""),
    })
}

#[track_caller]
fn registry_error(e: ingest_registry::RegistryError, url: &str, subject: &str) -> ! {
    use ingest_registry::RegistryError as E;
    let code = match e {
        E::Outage(_) => PgSqlErrorCode::ERRCODE_CONNECTION_FAILURE,
        E::NotFound(_) | E::Refused(_) => PgSqlErrorCode::ERRCODE_SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION,
        E::InvalidConfig(_) => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
    };
    let what = if subject.is_empty() { String::new() } else { format!(" under subject \"{subject}\"") };
    crate::error::raise_with(
        code,
        format!("pipeline_kafka.emit_tuple: could not register the row's Avro schema{what} in schema registry \"{url}\": {e}"),
        None,
        Some("Nothing was written: the statement can be run again once the registry answers.".into()),
    )
}

/// The id of the row schema under `<topic>-value` in the registry, registered at its first use in
/// this backend.
pub fn schema_id(topic: &str, row: &RowSchema) -> u32 {
    let url = registry_url();
    if let Some((_, _, id)) = row.last_id.borrow().as_ref().filter(|(u, t, _)| *u == url && t == topic) {
        return *id;
    }
    let schema = row.schema.as_str();
    let subject = format!("{topic}-value");
    let key = (url, subject, schema.to_string());
    let id = match IDS.with(|m| m.borrow().get(&key).copied()) {
        Some(id) => id,
        None => {
            let (url, subject, _) = &key;
            let id = client(url)
                .register(subject, schema, ingest_registry::SchemaType::Avro, &[])
                .unwrap_or_else(|e| registry_error(e, url, subject));
            IDS.with(|m| {
                let mut m = m.borrow_mut();
                if m.len() >= MAX_IDS {
                    m.clear();
                }
                m.insert(key.clone(), id);
            });
            id
        }
    };
    *row.last_id.borrow_mut() = Some((key.0, topic.to_string(), id));
    id
}
