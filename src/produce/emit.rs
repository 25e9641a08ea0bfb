//! The `emit_tuple` trigger body: the row as `row_to_json` text into the outbox.

use super::{outbox, wake_producer_at_commit};
use crate::error::raise;
use pgrx::prelude::*;
use pgrx::{PgTrigger, PgTriggerError, PgTriggerLevel, PgTriggerOperation, PgTriggerWhen};
use std::ffi::{CStr, CString};

#[track_caller]
fn misuse(msg: impl Into<String>) -> ! {
    raise(PgSqlErrorCode::ERRCODE_TRIGGERED_ACTION_EXCEPTION, msg)
}

pub fn fire<'a>(trigger: &'a PgTrigger<'a>) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByPostgres>>, PgTriggerError> {
    if !matches!(trigger.when()?, PgTriggerWhen::After) {
        misuse("pipeline_kafka.emit_tuple must be used in an AFTER trigger");
    }
    let op = trigger.op()?;
    if matches!(op, PgTriggerOperation::Truncate) {
        misuse("pipeline_kafka.emit_tuple cannot be used in a TRUNCATE trigger");
    }
    if !matches!(trigger.level(), PgTriggerLevel::Row) {
        misuse("pipeline_kafka.emit_tuple must be used in a FOR EACH ROW trigger");
    }
    let args = trigger.extra_args()?;
    let topic = match args.first() {
        Some(t) if !t.is_empty() => t.clone(),
        _ => misuse("pipeline_kafka.emit_tuple needs a topic: emit_tuple('topic' [, 'partition' [, 'key_column']])"),
    };
    if let Err(problem) = ingest_core::broker::check_topic(&topic) {
        misuse(format!("pipeline_kafka.emit_tuple: {problem}"));
    }
    if args.len() > 3 {
        misuse("pipeline_kafka.emit_tuple takes at most three arguments: topic, partition, key column");
    }
    let partition = match args.get(1).map(|s| s.trim()) {
        None | Some("") | Some("-1") => None,
        Some(p) => match p.parse::<i32>() {
            Ok(n) if n >= 0 => Some(n),
            _ => misuse(format!("pipeline_kafka.emit_tuple: partition must be an integer >= 0 or -1, got \"{p}\"")),
        },
    };
    let key_column = args.get(2).filter(|k| !k.is_empty()).cloned();

    let td = trigger.trigger_data();
    let tuple = match op {
        PgTriggerOperation::Update => td.tg_newtuple,
        _ => td.tg_trigtuple,
    };
    // SAFETY: tg_relation and the tuples are valid for the duration of the trigger call.
    let tupdesc = unsafe { (*td.tg_relation).rd_att };

    let key: Option<Vec<u8>> = key_column.as_ref().and_then(|col| {
        let ccol = CString::new(col.as_str()).unwrap_or_else(|_| misuse("key column name contains a NUL byte"));
        // SAFETY: tupdesc and tuple belong to the firing relation; SPI_getvalue returns a palloc'd
        // C string or NULL for a NULL value.
        unsafe {
            let attnum = pg_sys::SPI_fnumber(tupdesc, ccol.as_ptr());
            if attnum <= 0 {
                raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                    format!("pipeline_kafka.emit_tuple: key column \"{col}\" does not exist"),
                );
            }
            let v = pg_sys::SPI_getvalue(tuple, tupdesc, attnum);
            if v.is_null() {
                None
            } else {
                Some(CStr::from_ptr(v).to_bytes().to_vec())
            }
        }
    });

    let message: Option<Vec<u8>> = if matches!(op, PgTriggerOperation::Delete) {
        if key_column.is_none() {
            misuse("pipeline_kafka.emit_tuple on DELETE sends a tombstone and needs a key column");
        }
        None
    } else {
        // SAFETY: builds a composite datum of the row and calls row_to_json on it.
        let json = unsafe {
            let datum = pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc);
            pgrx::direct_function_call::<String>(pg_sys::row_to_json, &[Some(datum)])
        };
        Some(json.unwrap_or_default().into_bytes())
    };
    if super::first_in_transaction() {
        super::load_producer_settings();
    }
    super::check_message_size(message.as_deref(), key.as_deref(), &[]);
    // A dead letter of the message is shown to the table's owner: the row's columns are the
    // owner's to read, not necessarily the role whose INSERT or UPDATE fired the trigger.
    // SAFETY: tg_relation is valid for the duration of the trigger call.
    let owner = unsafe { (*(*td.tg_relation).rd_rel).relowner };
    outbox::insert(&topic, message.as_deref(), partition, key.as_deref(), None, None, owner);
    wake_producer_at_commit();
    Ok(None)
}
