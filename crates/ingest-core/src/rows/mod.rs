//! The one decoded-row model: message bytes -> decoded values -> the rows PostgreSQL inserts,
//! encoded on the reader thread in PostgreSQL's binary representations (issues 23 and 21).
//!
//! # Model
//!
//! * **Decoders, one per format**, turn a message into rows of [`Value`]s addressed by target
//!   column (the table's column list, in order; a column without a value gets its DEFAULT as
//!   today, by leaving it out of the COPY column list). csv/text/json yield untyped text fields,
//!   `Value::Text`, borrowing the message's bytes when no unescaping was needed (the text COPY
//!   would give the same characters to the input function). Avro, Protobuf and Debezium yield
//!   typed values: Avro int/long and Protobuf integers `Value::Int(i64)` (uint64 `UInt`),
//!   float/double `Float(f64)`, boolean `Bool`, string/enum `Text`, bytes/fixed `Bytes`, the
//!   decimal logical type and Debezium's base64 decimals `Decimal { unscaled, scale }`, date
//!   `DateDays`, timestamp-micros/millis and google.protobuf.Timestamp `TimestampMicros`
//!   (an instant), local-timestamp `LocalTimestampMicros`; null and absent union branches `Null`.
//!   Nested records, maps and arrays become `Text` holding JSON for json/jsonb columns.
//! * **A [`ColumnPlan`] per target column**, made once per consumer from the catalog (the type's
//!   typname and atttypmod, a domain resolved to its base type) and the [`ServerSettings`] that
//!   matter (server version for the 16+ number syntax; UTF8 server and client encodings). It
//!   decides, for the whole column: encode to binary here ([`PgType`]), or the text path (a type
//!   this model does not know, a domain with a CHECK or NOT NULL, a non-UTF8 database). COPY
//!   BINARY takes every field in binary, so a table with one text-path column stays wholly on
//!   today's text COPY ([`RowPlan::binary`]).
//! * **Per field**, [`encode_field`] writes the type's send format, or raises the [`ConvError`]
//!   PostgreSQL's input function raises for that text (same SQLSTATE, message and DETAIL), so
//!   the message becomes a dead letter before COPY and isolation never bisects for it; or it
//!   declines ([`Encoded::Fallback`]) when it is not sure: the 16+ `1_000`/`0x1F` number forms,
//!   hex floats, JSON it cannot vouch for, date/time text other than the ISO form with a numeric
//!   offset (DateStyle, TimeZone and zone abbreviations decide how the rest reads). A declined field sends its batch down the text path
//!   (rows keep their order there, which upserts need), so the result is never a different
//!   value, only the slower path. Constraint, trigger, partition and generated-column behaviour
//!   is unchanged, because COPY still inserts.
//! * **Typed values** load as their JSON twin would (the text of the value, e.g. `Int(70000)`
//!   into smallint is `value "70000" is out of range for type smallint`), with direct binary
//!   for the natural pairs: Int -> int2/4/8/numeric, Float -> float8, Bool -> bool, Bytes ->
//!   bytea, Decimal -> numeric (with the column's typmod: rounding half away from zero, 22003
//!   numeric field overflow), DateDays -> date, TimestampMicros -> timestamp/timestamptz,
//!   LocalTimestampMicros -> timestamp. LocalTimestampMicros into timestamptz depends on the
//!   session's TimeZone: text path.
//! * **[`BinaryRowWriter`]** frames COPY BINARY: the 19-byte header, per tuple an int16 field
//!   count, per field an int32 length (-1 = NULL) and the bytes, and the int16 -1 trailer.
//!
//! Settings: DateStyle and TimeZone only matter to date/time text (all but the ISO form with an
//! explicit offset take the text path) and LocalTimestampMicros -> timestamptz; extra_float_digits is output-only and changes nothing
//! here (tests/pg_differential.rs runs under non-default values of all three to show it).
//!
//! Wired in [`fast`]: a source's reader thread makes each message's tuples ready
//! ([`fast::prepare_chunk`]; typed records through the plan's decoder, crate::records); the sink
//! frames them for `COPY ... (FORMAT binary)` (src/sink/fast.rs).

mod binary;
mod calendar;
mod datetime;
pub mod fast;
mod numeric;
mod text;
mod types;
mod value;

pub use binary::{BinaryRowWriter, HEADER};
pub use numeric::{Decimal, Numeric};
pub use types::{NumericTypmod, PgType, ServerSettings};
pub use value::{decimal_text, float_text, ConvError, Value};

/// How one target column is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    pub name: String,
    /// None: the text path (unknown type, constrained domain, non-UTF8 database).
    pub ty: Option<PgType>,
    pub settings: ServerSettings,
}

impl ColumnPlan {
    /// `typname`/`typmod` of the column's type, or of its base type when `domain` (then a
    /// domain with constraints keeps the column on the text path: its checks run after input).
    pub fn new(name: &str, typname: &str, typmod: i32, constrained_domain: bool, settings: &ServerSettings) -> ColumnPlan {
        let ty = if constrained_domain || !settings.utf8 || !settings.integer_datetimes {
            None
        } else {
            PgType::from_catalog(typname, typmod)
        };
        ColumnPlan { name: name.to_string(), ty, settings: settings.clone() }
    }
}

/// The plans of a COPY column list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlan {
    pub columns: Vec<ColumnPlan>,
}

impl RowPlan {
    /// Every column binary-encodable: the consumer can use COPY BINARY.
    pub fn binary(&self) -> bool {
        self.columns.iter().all(|c| c.ty.is_some())
    }

    /// Appends one row (values in column order) to `w`. Err: the column index and the error
    /// (the row is taken back; the message is a dead letter). Fallback: the row is taken back
    /// and the batch goes the text path.
    pub fn write_row(&self, values: &[Value<'_>], w: &mut BinaryRowWriter) -> Result<Encoded, (usize, ConvError)> {
        assert_eq!(values.len(), self.columns.len(), "one value per column");
        w.begin_row(values.len() as u16);
        for (i, (plan, v)) in self.columns.iter().zip(values).enumerate() {
            if matches!(v, Value::Null) {
                w.null();
                continue;
            }
            match encode_field(plan, v, w.begin_field()) {
                Ok(Encoded::Written) => w.end_field(),
                Ok(Encoded::Fallback) => {
                    w.abandon_row();
                    return Ok(Encoded::Fallback);
                }
                Err(e) => {
                    w.abandon_row();
                    return Err((i, e));
                }
            }
        }
        Ok(Encoded::Written)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoded {
    /// The field's send-format bytes were appended.
    Written,
    /// Not sure: the text path must read this field (nothing meaningful was appended).
    Fallback,
}

fn done(m: text::Maybe) -> Result<Encoded, ConvError> {
    m.map(|o| if o.is_some() { Encoded::Written } else { Encoded::Fallback })
}

/// The text field `s` as the column's input function reads it, in the type's send format.
pub fn encode_text(plan: &ColumnPlan, s: &str, out: &mut Vec<u8>) -> Result<Encoded, ConvError> {
    let Some(ty) = plan.ty else { return Ok(Encoded::Fallback) };
    let pg16 = plan.settings.pg16_number_syntax();
    done(match ty {
        PgType::Int2 => text::int(s, 16, ty.message_name(), pg16, out),
        PgType::Int4 => text::int(s, 32, ty.message_name(), pg16, out),
        PgType::Int8 => text::int(s, 64, ty.message_name(), pg16, out),
        PgType::Float4 => text::float(s, false, pg16, out),
        PgType::Float8 => text::float(s, true, pg16, out),
        PgType::Bool => text::bool(s, out),
        PgType::Text => text::string(s, None, false, out),
        PgType::Varchar(n) => text::string(s, n, false, out),
        PgType::Bpchar(n) => text::string(s, n, true, out),
        PgType::Uuid => text::uuid(s, out),
        PgType::Bytea => text::bytea(s, out),
        PgType::Numeric(tm) => {
            if pg16 && numeric_uses_pg16_syntax(s) {
                return Ok(Encoded::Fallback);
            }
            numeric::text_to_binary(s, tm, pg16, out).map(Some)
        }
        PgType::Json => text::json(s, false, out),
        PgType::Jsonb => text::json(s, true, out),
        PgType::Date | PgType::Timestamp | PgType::Timestamptz => return datetime::text_to_binary(s, ty, out),
    })
}

/// `1_000` or `0x1F` (PostgreSQL 16+ reads them as numbers; 15 refuses them).
fn numeric_uses_pg16_syntax(s: &str) -> bool {
    let t = s.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b' || c == '+' || c == '-');
    s.contains('_') || (t.len() >= 2 && t.as_bytes()[0] == b'0' && matches!(t.as_bytes()[1] | 0x20, b'x' | b'o' | b'b'))
}

/// One field of a COPY BINARY tuple: the int32 length, then `v` in the column's send format
/// (`encode_field`). On anything but `Written` the field is left half written: the caller drops
/// the row.
pub fn push_binary_field(plan: &ColumnPlan, v: &Value<'_>, out: &mut Vec<u8>) -> Result<Encoded, ConvError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    let r = encode_field(plan, v, out)?;
    if r == Encoded::Written {
        let len = (out.len() - at - 4) as i32;
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(r)
}

/// One value (not NULL) in the column's send format.
pub fn encode_field(plan: &ColumnPlan, v: &Value<'_>, out: &mut Vec<u8>) -> Result<Encoded, ConvError> {
    let Some(ty) = plan.ty else { return Ok(Encoded::Fallback) };
    match (v, ty) {
        (Value::Text(s), _) => return encode_text(plan, s, out),
        (Value::Int(i), PgType::Int2 | PgType::Int4 | PgType::Int8) => {
            let fits = match ty {
                PgType::Int2 => i16::try_from(*i).map(|x| out.extend_from_slice(&x.to_be_bytes())).is_ok(),
                PgType::Int4 => i32::try_from(*i).map(|x| out.extend_from_slice(&x.to_be_bytes())).is_ok(),
                _ => {
                    out.extend_from_slice(&i.to_be_bytes());
                    true
                }
            };
            if !fits {
                return Err(ConvError::int_range(ty.message_name(), &i.to_string()));
            }
        }
        (Value::Int(i), PgType::Numeric(tm)) => {
            let mut n = Numeric::Finite(Decimal::from_unscaled(i128::from(*i), 0));
            numeric::apply_typmod(&mut n, tm)?;
            numeric::encode(&n, out)?;
        }
        (Value::Decimal { unscaled, scale }, PgType::Numeric(tm)) => {
            let mut n = Numeric::Finite(Decimal::from_unscaled(*unscaled, *scale));
            numeric::apply_typmod(&mut n, tm)?;
            numeric::encode(&n, out)?;
        }
        (Value::Float(f), PgType::Float8) => {
            let f = if f.is_nan() { f64::NAN } else { *f };
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        (Value::Bool(b), PgType::Bool) => out.push(u8::from(*b)),
        (Value::Bytes(b), PgType::Bytea) => out.extend_from_slice(b),
        (Value::DateDays(_) | Value::TimestampMicros(_) | Value::LocalTimestampMicros(_), _) => {
            return datetime::encode_typed(v, ty, out);
        }
        (Value::Null, _) => return Ok(Encoded::Fallback),
        _ => {
            // Everything else loads as its JSON twin: its text through the input function.
            let Some(t) = v.to_text() else { return Ok(Encoded::Fallback) };
            return encode_text(plan, &t, out);
        }
    }
    Ok(Encoded::Written)
}

#[cfg(test)]
mod tests;
