//! Dates and timestamps -> date/timestamp/timestamptz send format (int32 days / int64
//! microseconds since 2000-01-01): typed values (Avro, Protobuf), their ISO text for the text
//! path, and the one text form that reads the same under every DateStyle and TimeZone:
//! `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][Z|±HH[[:]MM]]`. Every other text (other field orders,
//! BC, infinity, zone names and abbreviations, a timestamptz without an offset, which the
//! session's TimeZone decides, seconds beyond microseconds, 24:00, leap seconds, invalid dates)
//! takes the text path, so PostgreSQL reads it and gives its own errors.

#[cfg(test)]
use super::calendar::{civil, date_text, timestamp_text};
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
                // PostgreSQL's error names the text: let the text path raise it.
                return Ok(Encoded::Fallback);
            }
            out.extend_from_slice(&(d as i32).to_be_bytes());
        }
        (Value::TimestampMicros(t), PgType::Timestamp | PgType::Timestamptz)
        | (Value::LocalTimestampMicros(t), PgType::Timestamp) => {
            let t = t.checked_sub(EPOCH_MICROS).filter(|t| (TS_MIN..TS_END).contains(t));
            let Some(t) = t else { return Ok(Encoded::Fallback) };
            out.extend_from_slice(&t.to_be_bytes());
        }
        // Another pairing (a date into timestamp, a local time into timestamptz...): the text
        // path reads the ISO text under the session's TimeZone.
        _ => return Ok(Encoded::Fallback),
    }
    Ok(Encoded::Written)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// A cursor over ASCII digits and separators.
struct Cur<'a>(&'a [u8], usize);

impl Cur<'_> {
    fn num(&mut self, n: usize) -> Option<u32> {
        let d = self.0.get(self.1..self.1 + n)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.1 += n;
        Some(d.iter().fold(0, |v, c| v * 10 + u32::from(c - b'0')))
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.0.get(self.1) == Some(&c);
        self.1 += usize::from(hit);
        hit
    }
    fn done(&self) -> bool {
        self.1 == self.0.len()
    }
}

/// Date/time text in the DateStyle- and TimeZone-independent ISO form; `Fallback` for any other.
pub(super) fn text_to_binary(input: &str, ty: PgType, out: &mut Vec<u8>) -> Result<Encoded, ConvError> {
    Ok(match parse_iso(input, ty) {
        Some(Iso::Date(d)) => {
            out.extend_from_slice(&d.to_be_bytes());
            Encoded::Written
        }
        Some(Iso::Micros(t)) => {
            out.extend_from_slice(&t.to_be_bytes());
            Encoded::Written
        }
        None => Encoded::Fallback,
    })
}

enum Iso {
    Date(i32),
    Micros(i64),
}

fn parse_iso(input: &str, ty: PgType) -> Option<Iso> {
    let s = input.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
    let mut c = Cur(s.as_bytes(), 0);
    let y = i64::from(c.num(4)?);
    let (m, d) = (c.eat(b'-').then(|| c.num(2))??, c.eat(b'-').then(|| c.num(2))??);
    if y == 0 || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    let days = days_from_civil(y, m, d) - EPOCH_DAYS;
    if ty == PgType::Date {
        return c.done().then_some(Iso::Date(days as i32));
    }
    let mut micros = days * 86_400_000_000;
    let mut zoned = false;
    if !c.done() {
        if !(c.eat(b' ') || c.eat(b'T')) {
            return None;
        }
        let (h, mi) = (c.num(2)?, c.eat(b':').then(|| c.num(2))??);
        let mut sec = 0;
        let mut frac = 0i64;
        if c.eat(b':') {
            sec = c.num(2)?;
            if c.eat(b'.') {
                let start = c.1;
                let mut scale = 1_000_000;
                while let Some(dig) = c.num(1) {
                    scale /= 10;
                    if scale == 0 {
                        return None; // beyond microseconds: PostgreSQL rounds; let it
                    }
                    frac += i64::from(dig) * scale;
                }
                if c.1 == start {
                    return None;
                }
            }
        }
        if h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        micros += i64::from((h * 60 + mi) * 60 + sec) * 1_000_000 + frac;
        if c.eat(b'Z') {
            zoned = true;
        } else if c.0.get(c.1).is_some_and(|&b| b == b'+' || b == b'-') {
            let neg = c.eat(b'-');
            c.1 += usize::from(!neg);
            let oh = c.num(2)?;
            let om = if c.done() { 0 } else { c.eat(b':'); c.num(2)? };
            if oh > 15 || om > 59 {
                return None;
            }
            let off = i64::from(oh * 3600 + om * 60) * 1_000_000;
            // timestamp ignores the offset; timestamptz is the UTC instant.
            if ty == PgType::Timestamptz {
                micros += if neg { off } else { -off };
            }
            zoned = true;
        }
        if !c.done() {
            return None;
        }
    }
    // Without an offset a timestamptz reads in the session's TimeZone: text path.
    if ty == PgType::Timestamptz && !zoned {
        return None;
    }
    Some(Iso::Micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_and_iso_text() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(EPOCH_DAYS), (2000, 1, 1));
        assert_eq!(civil(-719_528), (0, 1, 1));
        assert_eq!(date_text(-719_528), "0001-01-01 BC");
        assert_eq!(
            timestamp_text(-1, true),
            "1969-12-31 23:59:59.999999+00"
        );
        assert_eq!(
            timestamp_text(86_400_000_000 + 3_723_000_004, false),
            "1970-01-02 01:02:03.000004"
        );
    }

    #[test]
    fn iso_text_only() {
        let t = |s: &str, ty| match parse_iso(s, ty) {
            Some(Iso::Date(d)) => Some(i64::from(d)),
            Some(Iso::Micros(m)) => Some(m),
            None => None,
        };
        assert_eq!(t(" 2000-01-02 ", PgType::Date), Some(1));
        assert_eq!(t("1970-01-01", PgType::Date), Some(-EPOCH_DAYS));
        assert_eq!(t("2000-01-01T00:00:01.5", PgType::Timestamp), Some(1_500_000));
        assert_eq!(t("2000-01-01 01:00+01", PgType::Timestamptz), Some(0));
        assert_eq!(t("2000-01-01 00:00:00-0130", PgType::Timestamptz), Some(5_400_000_000));
        assert_eq!(t("2000-01-01 05:00:00+05:00", PgType::Timestamp), Some(18_000_000_000));
        for s in ["2000-01-01 00:00", "2001-02-29", "2000-01-01 24:00", "01/02/2000", "2000-01-01 00:00:00.1234567Z",
            "infinity", "0044-03-15 BC", "2000-01-01 00:00 PST", "2000-01-01 00:00:60Z", "0000-01-01Z"] {
            assert_eq!(t(s, PgType::Timestamptz), None, "{s}");
        }
        assert_eq!(t("2000-01-01 00:00", PgType::Date), None);
    }

    #[test]
    fn typed_dates_and_timestamps_to_binary() {
        let mut out = Vec::new();
        encode_typed(&Value::DateDays(EPOCH_DAYS as i32 + 1), PgType::Date, &mut out).unwrap();
        assert_eq!(out, 1i32.to_be_bytes());
        out.clear();
        encode_typed(&Value::TimestampMicros(EPOCH_MICROS - 5), PgType::Timestamptz, &mut out).unwrap();
        assert_eq!(out, (-5i64).to_be_bytes());
        assert_eq!(encode_typed(&Value::TimestampMicros(i64::MIN), PgType::Timestamp, &mut out), Ok(Encoded::Fallback));
        assert_eq!(
            encode_typed(&Value::LocalTimestampMicros(0), PgType::Timestamptz, &mut out),
            Ok(Encoded::Fallback)
        );
    }
}
