//! Typed dates and timestamps (Avro, Protobuf) -> date/timestamp/timestamptz send format
//! (int32 days / int64 microseconds since 2000-01-01), and their ISO text for the text path.
//! Date/time *text* is not read here yet: DateStyle, TimeZone and zone abbreviations decide it,
//! so it takes the text path.

use super::types::PgType;
use super::value::{ConvError, Value};
use super::Encoded;

/// 2000-01-01 - 1970-01-01.
const EPOCH_DAYS: i64 = 10_957;
const EPOCH_MICROS: i64 = EPOCH_DAYS * 86_400_000_000;
/// PostgreSQL's range: 4714-11-24 BC (Julian day 0) to 5874897-12-31 (dates) and
/// 294276-12-31 23:59:59.999999 (timestamps), relative to 2000-01-01.
const DATE_MIN: i64 = -2_451_545;
const DATE_END: i64 = 2_147_483_494 - 2_451_545;
const TS_MIN: i64 = -211_813_488_000_000_000;
const TS_END: i64 = 9_223_371_331_200_000_000;

pub(super) fn encode_typed(v: &Value<'_>, ty: PgType, out: &mut Vec<u8>) -> Result<Encoded, ConvError> {
    match (v, ty) {
        (Value::DateDays(d), PgType::Date) => {
            let d = i64::from(*d) - EPOCH_DAYS;
            if !(DATE_MIN..DATE_END).contains(&d) {
                return Err(ConvError::new("22008", "date out of range"));
            }
            out.extend_from_slice(&(d as i32).to_be_bytes());
        }
        (Value::TimestampMicros(t), PgType::Timestamp | PgType::Timestamptz)
        | (Value::LocalTimestampMicros(t), PgType::Timestamp) => {
            let t = t.checked_sub(EPOCH_MICROS).filter(|t| (TS_MIN..TS_END).contains(t));
            let Some(t) = t else { return Err(ConvError::new("22008", "timestamp out of range")) };
            out.extend_from_slice(&t.to_be_bytes());
        }
        // Another pairing (a date into timestamp, a local time into timestamptz...): the text
        // path reads the ISO text under the session's TimeZone.
        _ => return Ok(Encoded::Fallback),
    }
    Ok(Encoded::Written)
}

/// (year, month, day) of the proleptic Gregorian calendar, year 0 = 1 BC (H. Hinnant's
/// civil_from_days).
fn civil(days_1970: i64) -> (i64, u32, u32) {
    let z = days_1970 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn ymd(days_1970: i64) -> (String, bool) {
    let (y, m, d) = civil(days_1970);
    let (y, bc) = if y <= 0 { (1 - y, true) } else { (y, false) };
    (format!("{y:04}-{m:02}-{d:02}"), bc)
}

/// ISO text PostgreSQL reads the same under every DateStyle (year first, four digits or more).
pub(crate) fn iso_text(v: &Value<'_>) -> Option<String> {
    let bc = |s: String, bc: bool| if bc { s + " BC" } else { s };
    match v {
        Value::DateDays(d) => {
            let (s, b) = ymd(i64::from(*d));
            Some(bc(s, b))
        }
        Value::TimestampMicros(t) | Value::LocalTimestampMicros(t) => {
            let days = t.div_euclid(86_400_000_000);
            let us = t.rem_euclid(86_400_000_000);
            let (s, b) = ymd(days);
            let (secs, frac) = (us / 1_000_000, us % 1_000_000);
            let zone = if matches!(v, Value::TimestampMicros(_)) { "+00" } else { "" };
            let s = format!("{s} {:02}:{:02}:{:02}.{frac:06}{zone}", secs / 3600, secs / 60 % 60, secs % 60);
            Some(bc(s, b))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_and_iso_text() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(EPOCH_DAYS), (2000, 1, 1));
        assert_eq!(civil(-719_528), (0, 1, 1));
        assert_eq!(iso_text(&Value::DateDays(-719_528)).unwrap(), "0001-01-01 BC");
        assert_eq!(
            iso_text(&Value::TimestampMicros(-1)).unwrap(),
            "1969-12-31 23:59:59.999999+00"
        );
        assert_eq!(
            iso_text(&Value::LocalTimestampMicros(86_400_000_000 + 3_723_000_004)).unwrap(),
            "1970-01-02 01:02:03.000004"
        );
    }

    #[test]
    fn typed_dates_and_timestamps_to_binary() {
        let mut out = Vec::new();
        encode_typed(&Value::DateDays(EPOCH_DAYS as i32 + 1), PgType::Date, &mut out).unwrap();
        assert_eq!(out, 1i32.to_be_bytes());
        out.clear();
        encode_typed(&Value::TimestampMicros(EPOCH_MICROS - 5), PgType::Timestamptz, &mut out).unwrap();
        assert_eq!(out, (-5i64).to_be_bytes());
        let e = encode_typed(&Value::TimestampMicros(i64::MIN), PgType::Timestamp, &mut out).unwrap_err();
        assert_eq!((e.sqlstate, e.message.as_str()), ("22008", "timestamp out of range"));
        assert_eq!(
            encode_typed(&Value::LocalTimestampMicros(0), PgType::Timestamptz, &mut out),
            Ok(Encoded::Fallback)
        );
    }
}
