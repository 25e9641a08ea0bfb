//! The inputs of the differential test: hand-picked hard cases (issue 23's list) and generated
//! ones from a small deterministic PRNG (the same inputs every run).

use ingest_core::rows::Value;
use std::borrow::Cow;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

fn t(s: &str) -> Value<'static> {
    Value::Text(Cow::Owned(s.to_string()))
}

fn blanks(r: &mut Rng, s: String) -> String {
    let pad = |r: &mut Rng| r.pick(&["", "", "", " ", "  ", "\t", "\n", "\x0b"]).to_string();
    format!("{}{s}{}", pad(r), pad(r))
}

fn sign(r: &mut Rng) -> &'static str {
    ["", "", "", "-", "+"][r.below(5) as usize]
}

/// Sometimes spoils a text with a junk character somewhere.
fn junk(r: &mut Rng, s: String) -> String {
    if !r.chance(8) || s.is_empty() {
        return s;
    }
    let at = r.below(s.len() as u64 + 1) as usize;
    let at = (0..=at).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    let c = r.pick(&["x", ".", "e", " ", "-", "_", "é", "0x"]);
    format!("{}{c}{}", &s[..at], &s[at..])
}

fn random_case(r: &mut Rng, s: &str) -> String {
    s.chars().map(|c| if r.chance(50) { c.to_ascii_uppercase() } else { c }).collect()
}

pub fn integers(r: &mut Rng, n: usize) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = [
        "0", "-0", "+0", " 1", "1 ", "\t-5\n", "32767", "32768", "-32768", "-32769", "2147483647",
        "2147483648", "-2147483648", "-2147483649", "9223372036854775807", "9223372036854775808",
        "-9223372036854775808", "-9223372036854775809", "99999999999999999999x", "", " ", "-", "+",
        "1.0", "1e3", "0x10", "1_000", "--1", "+-1", "1 2", "００", "007", "NaN",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    for i in [0i64, 1, -1, 32767, 32768, -32769, 2147483648, i64::MIN, i64::MAX] {
        v.push(Value::Int(i));
    }
    v.push(Value::Float(12.0));
    v.push(Value::Bool(true));
    v.push(Value::Decimal { unscaled: 1200, scale: 2 });
    while v.len() < n {
        // Lengths around each type's limit (5, 10, 19 digits) and beyond.
        let max = [5u64, 6, 10, 11, 19, 20][r.below(6) as usize];
        let len = 1 + r.below(max) as usize;
        let s = format!("{}{}", sign(r), r.digits(len));
        let s = junk(r, s);
        v.push(t(&blanks(r, s)));
    }
    v
}

pub fn floats(r: &mut Rng, n: usize, max_exp: i64) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = [
        "NaN", "nan", "-nan", "+NaN", "Infinity", "-Infinity", "+infinity", "inf", "-INF", "infinit",
        "infinityy", "nanx", "-0", "0", "+0.0", "1e", "1e+", "1e-", ".5", "5.", ".", "-.5e-3", "1E5",
        " 1.5 ", "1e400", "-1e400", "1e-400", "1e-310", "4.9e-324", "2.4e-324", "1e39", "-1e39",
        "1e-46", "1.4e-45", "3.4028235e38", "3.4028236e38", "1.7976931348623157e308",
        "1.7976931348623159e308", "0.1", "0.30000000000000004", "123456789012345678901234567890",
        "0x1p3", "1,5", "", " ", "1.5.5", "+-1", "1_0",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    for f in [0.1, -0.0, 1e300, f64::NAN, f64::INFINITY, 3.4e38, 1e-45, 16777217.0] {
        v.push(Value::Float(f));
    }
    v.push(Value::Int(9007199254740993));
    v.push(Value::Decimal { unscaled: -15, scale: 1 });
    while v.len() < n {
        let int = { let k = r.below(12) as usize; r.digits(k) };
        let frac = { let k = r.below(12) as usize; r.digits(k) };
        let mut s = format!("{}{int}", sign(r));
        if r.chance(60) || int.is_empty() {
            s = format!("{s}.{frac}");
        }
        if r.chance(50) {
            let e = r.below(2 * max_exp as u64 + 1) as i64 - max_exp;
            s = format!("{s}{}{e}", r.pick(&["e", "E", "e+"]));
        }
        if r.chance(4) {
            let w = *r.pick(&["nan", "inf", "infinity", "-inf", "+infinity"]);
            s = random_case(r, w);
        }
        let s = junk(r, s);
        v.push(t(&blanks(r, s)));
    }
    v
}

pub fn numerics(r: &mut Rng, n: usize) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = [
        "0", "-0", "-0.000", "0.0000", "NaN", "nan", "Infinity", "-Infinity", "+inf", "-inf", "inf",
        "infinit", "1e", "1e 5", "1e+ 5", "1E-5", ".5", "5.", ".", "+.5", "-.", "1.2.3", "1 2",
        "12345.678", "99999.999", "99999.995", "-99999.995", "999.995", "0.005", "-0.005", "0.0049",
        "1234567.891", "12345678.9", "99999999.995", "1250", "1249", "-150", "149.99", "0.00001",
        "0.000009", "0.000005", "123456789012345678901234567890.123456789012345678901234567890",
        "1e131071", "1e131072", "1e-16383", "1e-16384", "1e1073741823", "1e-1073741823",
        "1e1073741822", "0x10", "1_000", "", " ", "abc", "- 1", "1e5x", "٣",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    for (unscaled, scale) in [(12345, 3), (-5, 3), (99999995, 3), (i128::MAX, 10), (7, 0), (-1, 20)] {
        v.push(Value::Decimal { unscaled, scale });
    }
    v.push(Value::Int(i64::MIN));
    v.push(Value::Float(0.1));
    v.push(Value::Float(f64::NAN));
    while v.len() < n {
        let int = { let k = r.below(10) as usize; r.digits(k) };
        let frac = { let k = r.below(10) as usize; r.digits(k) };
        let mut s = format!("{}{int}", sign(r));
        if r.chance(70) || int.is_empty() {
            s = format!("{s}.{frac}");
        }
        if r.chance(25) {
            s = format!("{s}e{}", r.below(21) as i64 - 10);
        }
        let s = junk(r, s);
        v.push(t(&blanks(r, s)));
    }
    v
}

pub fn bools(r: &mut Rng, n: usize) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = [
        "t", "tr", "tru", "true", "truee", "TRUE", " yes ", "y", "ye", "yess", "on", "o", "of", "off",
        "offf", "ON", "1", "0", "2", "01", "f", "fa", "fals", "false", "n", "no", "non", "", " ",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    v.extend([Value::Bool(true), Value::Bool(false), Value::Int(1), Value::Int(2)]);
    while v.len() < n {
        let len = 1 + r.below(5) as usize;
        let s: String = (0..len).map(|_| *r.pick(&['t', 'r', 'u', 'e', 'f', 'a', 'l', 's', 'y', 'o', 'n', '1', '0'])).collect();
        let s = random_case(r, &s);
        v.push(t(&blanks(r, s)));
    }
    v
}

pub fn strings(r: &mut Rng, n: usize) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = ["", " ", "abcd", "abcde", "abcdef", "abcde ", "abcde  x", "éééé", "ééééé ",
        "€€€€€€", "😀😀😀😀😀 ", "a\\b", "tab\there", "line\nbreak", "\\N", "    ", "ab  "]
        .iter()
        .map(|s| t(s))
        .collect();
    v.extend([Value::Int(123456), Value::Bool(false), Value::Float(1.5)]);
    while v.len() < n {
        let len = r.below(9) as usize;
        let s: String = (0..len).map(|_| *r.pick(&["a", "Z", " ", " ", "é", "€", "😀", "\\", "\t"])).collect();
        v.push(t(&s));
    }
    v
}

pub fn uuids(r: &mut Rng, n: usize) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
        "a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111", " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}", "a0eebc9-99c0b-4ef8-bb6d-6bb9bd380a11",
        "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11", "", "-",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    while v.len() < n {
        let hex: String = (0..32).map(|_| *r.pick(&['0', '7', 'a', 'f', 'F', 'C', '9'])).collect();
        let mut s = String::new();
        for (i, c) in hex.chars().enumerate() {
            if i > 0 && i % 4 == 0 && r.chance(if [8, 12, 16, 20].contains(&i) { 80 } else { 5 }) {
                s.push('-');
            }
            s.push(c);
        }
        if r.chance(15) {
            s = format!("{{{s}}}");
        }
        let s = junk(r, s);
        v.push(t(&s));
    }
    v
}

pub fn byteas(r: &mut Rng, n: usize) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = [
        "\\x", "\\x00ff", "\\xDEADbeef", "\\x 00 ff ", "\\x0", "\\x0g", "\\xg0", "\\x0 0", "\\X00",
        "\\xé0", "abc", "a\\\\b", "\\001\\377", "\\400", "\\18", "\\", "a\\", "\\\\\\", "\\0011",
        "é", "", "\\x\t\n\r 41",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    v.push(Value::Bytes(Cow::Owned(vec![0, 1, 255])));
    v.push(Value::Int(5));
    while v.len() < n {
        let len = r.below(8) as usize;
        let s: String = if r.chance(50) {
            let body: String = (0..len).map(|_| *r.pick(&["0", "a", "F", " ", "9", "\n", "z"])).collect();
            format!("\\x{body}")
        } else {
            (0..len).map(|_| *r.pick(&["a", "\\", "0", "3", "7", "8", "é", " "])).collect()
        };
        v.push(t(&s));
    }
    v
}

pub fn jsons(r: &mut Rng, n: usize) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = [
        "{}", "[]", "null", "true", "1", "-0", "1.5e3", "1E400", "\"a\"", "{\"a\": 1, \"a\": 2}",
        " { \"b\" : [1, 2.50, \"x\"] } ", "{\"é\": \"\\u00e9\"}", "\"\\u0000\"", "\"\\ud83d\\ude00\"",
        "\"\\ud83d\"", "01", "1.", ".5", "{", "[1,]", "{\"a\" 1}", "nul", "", " ", "\"\t\"",
        "{\"a\":{\"b\":{\"c\":[[[]]]}}}", "123456789012345678901234567890.5", "\"\\x\"",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    while v.len() < n {
        let scalar = |r: &mut Rng| r.pick(&["1", "-2.5", "\"s\"", "true", "null", "1e2", "\"é\""]).to_string();
        let s = match r.below(3) {
            0 => scalar(r),
            1 => format!("[{}, {}]", scalar(r), scalar(r)),
            _ => format!("{{\"k{}\": {}, \"z\": {}}}", r.below(9), scalar(r), scalar(r)),
        };
        let s = junk(r, s);
        v.push(t(&blanks(r, s)));
    }
    v
}

pub fn datetimes(r: &mut Rng, n: usize) -> Vec<Value<'static>> {
    let mut v: Vec<Value> = [
        "2024-01-02", " 2024-01-02 ", "2024-02-29", "2023-02-29", "2024-13-01", "2024-00-10", "0000-01-01",
        "0001-01-01", "9999-12-31", "2024-01-02 03:04:05", "2024-01-02T03:04:05", "2024-01-02 03:04",
        "2024-01-02 03:04:05.123456", "2024-01-02 03:04:05.1234565", "2024-01-02 03:04:05.9999995Z",
        "2024-01-02 03:04:05Z", "2024-01-02 03:04:05+05:30", "2024-01-02 03:04:05-0800",
        "2024-01-02 03:04:05+15:59", "2024-01-02 03:04:05+16", "2024-01-02 24:00:00+00",
        "2024-01-02 23:59:60+00", "2024-01-02 03:04:05 PST", "2024-01-02 03:04:05 Europe/Paris",
        "2024-01-02 03:04:05 +05", "01/02/2024", "02.01.2024", "20240102", "2024-1-2", "0044-03-15 BC",
        "4714-11-24 00:00:00+00 BC", "294276-12-31 23:59:59.999999+00", "infinity", "-infinity",
        "epoch", "2024-01-02 03:04:05.", "2024-01-02 03:04:05+05:30:15", "", " ", "x",
    ]
    .iter()
    .map(|s| t(s))
    .collect();
    for d in [0, 19723, -719_528, -2_440_588, 2_932_896, i32::MAX, i32::MIN] {
        v.push(Value::DateDays(d));
    }
    for us in [0, -1, 1_704_164_645_123_456, -62_135_596_800_000_000, i64::MAX, i64::MIN] {
        v.push(Value::TimestampMicros(us));
        v.push(Value::LocalTimestampMicros(us));
    }
    while v.len() < n {
        match r.below(10) {
            0 => {
                let d = r.below(4_000_000) as i32 - 1_000_000;
                v.push(Value::DateDays(d));
            }
            1 => {
                let us = (r.next() % 400_000_000_000_000_000) as i64 - 200_000_000_000_000_000;
                v.push(if r.chance(50) { Value::TimestampMicros(us) } else { Value::LocalTimestampMicros(us) });
            }
            _ => {
                let y = if r.chance(80) { 1900 + r.below(200) } else { r.below(10_000) };
                let months = if r.chance(95) { 12 } else { 13 };
                let (m, d) = (1 + r.below(months), 1 + r.below(31));
                let mut s = format!("{y:04}-{m:02}-{d:02}");
                if r.chance(85) {
                    let sep = if r.chance(50) { " " } else { "T" };
                    s = format!("{s}{sep}{:02}:{:02}", r.below(24), r.below(60));
                    if r.chance(80) {
                        s = format!("{s}:{:02}", r.below(60));
                        let fd = r.below(9) as usize;
                        if fd > 0 {
                            let k = fd;
                            s = format!("{s}.{}", r.digits(k));
                        }
                    }
                    match r.below(6) {
                        0 => {}
                        1 => s.push('Z'),
                        2 => s = format!("{s}{}{:02}", sign_pm(r), r.below(16)),
                        3 => s = format!("{s}{}{:02}:{:02}", sign_pm(r), r.below(16), r.below(60)),
                        4 => s = format!("{s}{}{:02}{:02}", sign_pm(r), r.below(16), r.below(60)),
                        _ => s = format!("{s} {}", ["UTC", "PST", "CET", "America/Sao_Paulo"][r.below(4) as usize]),
                    }
                }
                let s = junk(r, s);
                v.push(t(&s));
            }
        }
    }
    v
}

fn sign_pm(r: &mut Rng) -> &'static str {
    if r.chance(50) { "+" } else { "-" }
}
