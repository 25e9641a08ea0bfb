//! numeric: PostgreSQL's numeric_in (set_var_from_str, apply_typmod, make_result) and the
//! numeric_send layout, worked in decimal digits and regrouped into base-10000 digits at the end.

use super::types::NumericTypmod;
use super::value::ConvError;

/// A finite decimal: `digits[0]` is the digit at 10^`dweight`; `dscale` is the display scale.
/// Normalized: no leading or trailing zero digits; zero has no digits and is positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    pub neg: bool,
    /// Decimal digits, inline up to 32 (no allocation for the usual value).
    pub digits: smallvec::SmallVec<[u8; 32]>,
    pub dweight: i32,
    pub dscale: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite(Decimal),
}

/// C's isspace in the C locale (PostgreSQL's parsers use it): also \v and \f.
pub(crate) fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn syntax(input: &str) -> ConvError {
    ConvError::syntax("numeric", input)
}

fn overflows_format() -> ConvError {
    ConvError::new("22003", "value overflows numeric format")
}

fn starts_with_ci(s: &[u8], p: &str) -> bool {
    s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p.as_bytes())
}

/// Parses `input` as numeric_in does, without the typmod. `pg16` selects PostgreSQL 16+'s
/// exponent syntax (no blanks after `e`). Inputs using 16+'s `_` or `0x` forms are not handled
/// here (the caller falls back to the text path for them).
pub fn parse(input: &str, pg16: bool) -> Result<Numeric, ConvError> {
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let specials: [(&str, Numeric); 7] = [
        ("nan", Numeric::NaN),
        ("infinity", Numeric::PosInf),
        ("+infinity", Numeric::PosInf),
        ("-infinity", Numeric::NegInf),
        ("inf", Numeric::PosInf),
        ("+inf", Numeric::PosInf),
        ("-inf", Numeric::NegInf),
    ];
    let mut special = None;
    // A digit or a point starts no special value (the usual case: skip the seven words).
    let plain = b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'.');
    for (word, val) in specials.into_iter().filter(|_| !plain) {
        if starts_with_ci(&b[i..], word) {
            i += word.len();
            special = Some(val);
            break;
        }
    }
    let value = match special {
        Some(v) => v,
        None => {
            let (d, end) = parse_finite(input, i, pg16)?;
            i = end;
            Numeric::Finite(d)
        }
    };
    if b[i..].iter().any(|&c| !is_c_space(c)) {
        return Err(syntax(input));
    }
    Ok(value)
}

/// set_var_from_str from byte `start`: the value and where it stopped.
fn parse_finite(input: &str, start: usize, pg16: bool) -> Result<(Decimal, usize), ConvError> {
    let b = input.as_bytes();
    let mut i = start;
    let mut neg = false;
    match b.get(i) {
        Some(b'+') => i += 1,
        Some(b'-') => {
            neg = true;
            i += 1
        }
        _ => {}
    }
    let mut have_dp = false;
    if b.get(i) == Some(&b'.') {
        have_dp = true;
        i += 1;
    }
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return Err(syntax(input));
    }
    let mut digits = smallvec::SmallVec::new();
    let mut dweight: i64 = -1;
    let mut dscale: i64 = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            digits.push(c - b'0');
            if have_dp {
                dscale += 1;
            } else {
                dweight += 1;
            }
            i += 1;
        } else if c == b'.' {
            if have_dp {
                return Err(syntax(input));
            }
            have_dp = true;
            i += 1;
        } else {
            break;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        // PostgreSQL 15 reads the exponent with strtol (leading blanks allowed); 16+ by hand.
        if !pg16 {
            while i < b.len() && is_c_space(b[i]) {
                i += 1;
            }
        }
        let mut eneg = false;
        match b.get(i) {
            Some(b'+') => i += 1,
            Some(b'-') => {
                eneg = true;
                i += 1
            }
            _ => {}
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return Err(syntax(input));
        }
        let mut exp: i64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            exp = (exp * 10 + i64::from(b[i] - b'0')).min(i64::from(i32::MAX));
            i += 1;
        }
        // 15: |exp| >= INT_MAX/2 is an error; 16+: > INT_MAX/2 (then make_result refuses it).
        let limit = i64::from(i32::MAX / 2);
        if exp > limit || (!pg16 && exp == limit) {
            return Err(overflows_format());
        }
        let exp = if eneg { -exp } else { exp };
        dweight += exp;
        dscale = (dscale - exp).max(0);
    }
    let mut d = Decimal { neg, digits, dweight: dweight as i32, dscale: dscale as i32 };
    d.strip();
    Ok((d, i))
}

impl Decimal {
    /// `unscaled * 10^-scale` (a typed decimal: Avro, Debezium).
    pub fn from_unscaled(unscaled: i128, scale: i32) -> Decimal {
        let digits: smallvec::SmallVec<[u8; 32]> = unscaled.unsigned_abs().to_string().bytes().map(|c| c - b'0').collect();
        let mut d = Decimal {
            neg: unscaled < 0,
            dweight: digits.len() as i32 - 1 - scale,
            digits,
            dscale: scale.max(0),
        };
        d.strip();
        d
    }

    fn strip(&mut self) {
        let lead = self.digits.iter().take_while(|&&d| d == 0).count();
        self.digits.drain(..lead);
        self.dweight -= lead as i32;
        while self.digits.last() == Some(&0) {
            self.digits.pop();
        }
        if self.digits.is_empty() {
            self.neg = false;
            self.dweight = 0;
        }
    }

    /// round_var: to `scale` decimal places (negative: to tens, hundreds...), half away from zero.
    fn round(&mut self, scale: i32) {
        let keep = i64::from(self.dweight) + i64::from(scale) + 1;
        if keep >= self.digits.len() as i64 {
            return;
        }
        if keep < 0 {
            self.digits.clear();
        } else {
            let keep = keep as usize;
            let up = self.digits[keep] >= 5;
            self.digits.truncate(keep);
            if up {
                let mut k = keep;
                loop {
                    if k == 0 {
                        self.digits.insert(0, 1);
                        self.dweight += 1;
                        break;
                    }
                    k -= 1;
                    if self.digits[k] == 9 {
                        self.digits[k] = 0;
                    } else {
                        self.digits[k] += 1;
                        break;
                    }
                }
            }
        }
        self.strip();
    }
}

/// apply_typmod / apply_typmod_special: round to the column's scale and check its precision.
pub fn apply_typmod(n: &mut Numeric, tm: Option<NumericTypmod>) -> Result<(), ConvError> {
    let Some(tm) = tm else { return Ok(()) };
    match n {
        Numeric::NaN => Ok(()),
        Numeric::PosInf | Numeric::NegInf => Err(ConvError::new("22003", "numeric field overflow")
            .with_detail(format!(
                "A field with precision {}, scale {} cannot hold an infinite value.",
                tm.precision, tm.scale
            ))),
        Numeric::Finite(d) => {
            d.round(tm.scale);
            d.dscale = tm.scale.max(0);
            let maxdigits = tm.precision - tm.scale;
            if !d.digits.is_empty() && i64::from(d.dweight) + 1 > i64::from(maxdigits) {
                let bound =
                    if maxdigits != 0 { format!("10^{maxdigits}") } else { "1".to_string() };
                return Err(ConvError::new("22003", "numeric field overflow").with_detail(format!(
                    "A field with precision {}, scale {} must round to an absolute value less than {bound}.",
                    tm.precision, tm.scale
                )));
            }
            Ok(())
        }
    }
}

/// numeric_send: ndigits, weight, sign, dscale (int16 each, big-endian), then the base-10000
/// digits. make_result's "value overflows numeric format" when weight or dscale do not fit.
pub fn encode(n: &Numeric, out: &mut Vec<u8>) -> Result<(), ConvError> {
    let head = |out: &mut Vec<u8>, nd: i16, w: i16, sign: u16, ds: i16| {
        out.extend_from_slice(&nd.to_be_bytes());
        out.extend_from_slice(&w.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&ds.to_be_bytes());
    };
    let special = match n {
        Numeric::NaN => 0xC000,
        Numeric::PosInf => 0xD000,
        Numeric::NegInf => 0xF000,
        Numeric::Finite(_) => 0,
    };
    let Numeric::Finite(d) = n else {
        // numeric_send reads dscale out of the special value's short header (bits 0x1F80 of
        // 0xD000/0xF000 give 32): what the server sends, so what we send.
        head(out, 0, 0, special, ((special & 0x1F80) >> 7) as i16);
        return Ok(());
    };
    if d.dscale > 0x3FFF {
        return Err(overflows_format());
    }
    if d.digits.is_empty() {
        head(out, 0, 0, 0, d.dscale as i16);
        return Ok(());
    }
    let weight = d.dweight.div_euclid(4);
    if weight > i32::from(i16::MAX) || weight < i32::from(i16::MIN) {
        return Err(overflows_format());
    }
    // Leading decimal zeros that align the first digit to its base-10000 group.
    let offset = ((weight + 1) * 4 - (d.dweight + 1)) as usize;
    let total = offset + d.digits.len();
    let ngroups = total.div_ceil(4);
    let mut groups: smallvec::SmallVec<[u16; 16]> = smallvec::SmallVec::with_capacity(ngroups);
    for g in 0..ngroups {
        let mut v: u16 = 0;
        for k in 0..4 {
            let pos = g * 4 + k;
            let dig = if pos >= offset && pos < total { d.digits[pos - offset] } else { 0 };
            v = v * 10 + u16::from(dig);
        }
        groups.push(v);
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    head(out, groups.len() as i16, weight as i16, if d.neg { 0x4000 } else { 0 }, d.dscale as i16);
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(())
}

/// numeric_in then numeric_send.
pub fn text_to_binary(
    input: &str,
    tm: Option<NumericTypmod>,
    pg16: bool,
    out: &mut Vec<u8>,
) -> Result<(), ConvError> {
    let mut n = parse(input, pg16)?;
    apply_typmod(&mut n, tm)?;
    encode(&n, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(s: &str, tm: Option<(i32, i32)>) -> Result<Vec<i16>, ConvError> {
        let tm = tm.map(|(precision, scale)| NumericTypmod { precision, scale });
        let mut out = Vec::new();
        text_to_binary(s, tm, false, &mut out)?;
        Ok(out.chunks(2).map(|c| i16::from_be_bytes([c[0], c[1]])).collect())
    }

    #[test]
    fn base_10000_digits_weight_sign_dscale() {
        // 12345.678: groups 0001 2345 . 6780, weight 1, dscale 3
        assert_eq!(bin("12345.678", None).unwrap(), vec![3, 1, 0, 3, 1, 2345, 6780]);
        assert_eq!(bin(" -0.00012 ", None).unwrap(), vec![2, -1, 0x4000, 5, 1, 2000]);
        assert_eq!(bin("-0", None).unwrap(), vec![0, 0, 0, 0]);
        assert_eq!(bin("0.000", None).unwrap(), vec![0, 0, 0, 3]);
        assert_eq!(bin("1e4", None).unwrap(), vec![1, 1, 0, 0, 1]);
        assert_eq!(bin("1.5E-3", None).unwrap(), vec![1, -1, 0, 4, 15]);
        assert_eq!(bin("10000.0000", None).unwrap(), vec![1, 1, 0, 4, 1]);
        assert_eq!(bin("NaN", None).unwrap(), vec![0, 0, 0xC000u16 as i16, 0]);
        assert_eq!(bin("-inf", None).unwrap(), vec![0, 0, 0xF000u16 as i16, 32]);
        assert_eq!(bin("1e 5", None).unwrap(), vec![1, 1, 0, 0, 10]);
    }

    #[test]
    fn typmod_rounds_half_away_from_zero_and_checks_precision() {
        assert_eq!(bin("2.345", Some((5, 2))).unwrap(), vec![2, 0, 0, 2, 2, 3500]);
        assert_eq!(bin("-2.345", Some((5, 2))).unwrap(), vec![2, 0, 0x4000, 2, 2, 3500]);
        assert_eq!(bin("999.995", Some((5, 2))).unwrap_err().detail.unwrap(),
            "A field with precision 5, scale 2 must round to an absolute value less than 10^3.");
        assert_eq!(bin("0.5", Some((1, 1))).unwrap(), vec![1, -1, 0, 1, 5000]);
        assert_eq!(bin("1", Some((1, 1))).unwrap_err().detail.unwrap(),
            "A field with precision 1, scale 1 must round to an absolute value less than 1.");
        assert_eq!(bin("1250", Some((3, -2))).unwrap(), vec![1, 0, 0, 0, 1300]);
        assert_eq!(bin("-0.004", Some((3, 2))).unwrap(), vec![0, 0, 0, 2]);
        let e = bin("Infinity", Some((10, 2))).unwrap_err();
        assert_eq!((e.sqlstate, e.message.as_str()), ("22003", "numeric field overflow"));
        assert_eq!(bin("NaN", Some((10, 2))).unwrap(), vec![0, 0, 0xC000u16 as i16, 0]);
    }

    #[test]
    fn syntax_and_format_errors() {
        for s in ["", " ", "1.2.3", ".", "-", "1e", "abc", "1 2", "0x10", "1_000", "--1"] {
            assert_eq!(bin(s, None).unwrap_err(), ConvError::syntax("numeric", s), "{s:?}");
        }
        assert_eq!(bin("1e1073741823", None).unwrap_err().message, "value overflows numeric format");
        assert_eq!(bin("1e-20000", None).unwrap_err().message, "value overflows numeric format");
        assert_eq!(bin("1e131071", None).unwrap()[1], 32767);
        assert!(bin("1e131072", None).is_err());
    }

    #[test]
    fn typed_decimals() {
        let mut out = Vec::new();
        encode(&Numeric::Finite(Decimal::from_unscaled(-1250, 2)), &mut out).unwrap();
        let mut want = Vec::new();
        text_to_binary("-12.50", None, false, &mut want).unwrap();
        assert_eq!(out, want);
    }
}
