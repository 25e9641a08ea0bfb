//! Typed records (Avro, Protobuf) -> COPY BINARY tuples: the one step both the main thread's
//! preparation (prepare.rs, `Plan::binary`) and a source's reader thread (rows::fast::prepare_chunk,
//! through [`TypedRows`]) take, so a record gives the same bytes, or the same dead letter, on
//! either thread.
//!
//! A record fills the columns named like its fields (decode::record_row); its values are encoded
//! by the row model (rows::push_binary_field) with each column's plan. A value the model is not
//! sure of makes the whole message go in COPY text (`Ok(None)`), as before; a value the column's
//! input function would refuse rejects the message with that error.

use crate::decode::{record_row, DecodeError, Record, TypedDecoder};
use crate::rows::fast::{add_row, FastPlan, Outcome, PreChunk, TypedRows};
use crate::rows::{push_binary_field, ColumnPlan, ConvError, Encoded, Value};
use smallvec::SmallVec;
use std::sync::Mutex;

/// Appends the rows of typed message `payload` to `buf` as COPY BINARY tuples (no header or
/// trailer) of `types` (the plans of `columns`, same order), in runs of records that fill the same
/// columns (None: every column). Ok(None): a value the model declines (the message goes in COPY
/// text). On anything but Ok(Some), nothing is left in `buf`.
pub fn binary_rows(
    decoder: &dyn TypedDecoder,
    payload: &[u8],
    columns: &[String],
    types: &[ColumnPlan],
    buf: &mut Vec<u8>,
) -> Result<Option<SmallVec<[PreChunk; 1]>>, DecodeError> {
    let mut records: Vec<Record<'_>> = Vec::with_capacity(1);
    decoder.decode(payload, &mut records)?;
    let start = buf.len();
    let r = write_records(&records, columns, types, buf);
    if !matches!(r, Ok(Some(_))) {
        buf.truncate(start);
    }
    r
}

fn write_records(
    records: &[Record<'_>],
    columns: &[String],
    types: &[ColumnPlan],
    buf: &mut Vec<u8>,
) -> Result<Option<SmallVec<[PreChunk; 1]>>, DecodeError> {
    let mut chunks: SmallVec<[PreChunk; 1]> = SmallVec::new();
    for r in records {
        let (present, values) = record_row(r, columns)?;
        let at = buf.len();
        buf.extend_from_slice(&(present.len() as i16).to_be_bytes());
        for (k, v) in present.iter().zip(values) {
            if matches!(v, Value::Null) {
                buf.extend_from_slice(&(-1i32).to_be_bytes());
                continue;
            }
            match push_binary_field(&types[*k], v, buf) {
                Ok(Encoded::Written) => {}
                Ok(Encoded::Fallback) => return Ok(None),
                Err(e) => return Err(DecodeError::new(e.sqlstate, e.message_with_detail())),
            }
        }
        add_row(&mut chunks, (present.len() != columns.len()).then_some(&present[..]), at..buf.len());
    }
    Ok(Some(chunks))
}

/// One typed message on the reader thread: a schema `decoder` does not hold yet goes to the main
/// thread (which fetches it, or dead-letters the message when the registry has no such id).
fn encode_one(decoder: &dyn TypedDecoder, columns: &[String], plan: &FastPlan, payload: &[u8], buf: &mut Vec<u8>) -> Outcome {
    if let Ok(id) = decoder.schema_id(payload) {
        if !decoder.holds(id) {
            return Outcome::Fallback;
        }
    }
    match binary_rows(decoder, payload, columns, &plan.rows.columns, buf) {
        Ok(Some(chunks)) if chunks.is_empty() => Outcome::Empty,
        Ok(Some(chunks)) => Outcome::Rows(chunks),
        Ok(None) => Outcome::Fallback,
        // the text the main thread's preparation gives the dead letter (prepare.rs)
        Err(e) => Outcome::Rejected(ConvError::new(e.sqlstate, e.message)),
    }
}

/// A consumer's decoder as its reader thread uses it: locked once per chunk of messages.
impl<D: TypedDecoder> TypedRows for Mutex<D> {
    fn encode_chunk(&self, plan: &FastPlan, payloads: &[Option<&[u8]>], buf: &mut Vec<u8>) -> Vec<Option<Outcome>> {
        let columns = plan.names();
        let d = self.lock().unwrap_or_else(|p| p.into_inner());
        payloads.iter().map(|p| p.map(|p| encode_one(&*d, &columns, plan, p, buf))).collect()
    }
}
