//! Calendar arithmetic and the ISO text of dates and timestamps, below both the values
//! (value.rs renders typed dates as text) and the date/time encoders (datetime.rs).

/// (year, month, day) of the proleptic Gregorian calendar, year 0 = 1 BC (H. Hinnant's
/// civil_from_days).
pub(super) fn civil(days_1970: i64) -> (i64, u32, u32) {
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

/// ISO text of a date (days since 1970-01-01) PostgreSQL reads the same under every DateStyle
/// (year first, four digits or more, " BC" for years <= 0).
pub(super) fn date_text(days_1970: i64) -> String {
    let (s, bc) = ymd(days_1970);
    if bc { s + " BC" } else { s }
}

/// ISO text of a timestamp (microseconds since 1970-01-01 00:00), with the zone "+00" when
/// `zoned` (an instant, timestamptz) and none for a wall-clock time.
pub(super) fn timestamp_text(micros_1970: i64, zoned: bool) -> String {
    let days = micros_1970.div_euclid(86_400_000_000);
    let us = micros_1970.rem_euclid(86_400_000_000);
    let (s, bc) = ymd(days);
    let (secs, frac) = (us / 1_000_000, us % 1_000_000);
    let zone = if zoned { "+00" } else { "" };
    let s = format!("{s} {:02}:{:02}:{:02}.{frac:06}{zone}", secs / 3600, secs / 60 % 60, secs % 60);
    if bc { s + " BC" } else { s }
}
