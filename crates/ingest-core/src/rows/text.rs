//! Text field -> binary for the scalar types, as PostgreSQL's input functions read them
//! (int2in/int4in/int8in, float4in/float8in, boolin, uuid_in, byteain, bpchar/varchar input,
//! json_in/jsonb_in) followed by the type's send function.

use super::numeric::is_c_space;
use super::value::ConvError;

/// The result of a conversion that may decline: `None` = "not sure, let PostgreSQL read it"
/// (the text path), never a guess.
pub type Maybe = Result<Option<()>, ConvError>;

fn trim_c_space(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_c_space(c as u8))
}

/// int2in/int4in/int8in (pg_strtoint16/32/64): blanks, sign, decimal digits, blanks. Overflow
/// is reported as soon as the digits overflow, before any trailing junk.
pub fn int(input: &str, bits: u32, type_name: &str, pg16: bool, out: &mut Vec<u8>) -> Maybe {
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let neg = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    if pg16 {
        // 16+ also reads 0x/0o/0b prefixes and 1_000: let PostgreSQL read those.
        let rest = &b[i..];
        if rest.contains(&b'_') || (rest.len() >= 2 && rest[0] == b'0' && rest[1].is_ascii_alphabetic()) {
            return Ok(None);
        }
    }
    if !b.get(i).is_some_and(u8::is_ascii_digit) {
        return Err(ConvError::syntax(type_name, input));
    }
    let (min, max) = match bits {
        16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
        32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
        _ => (i128::from(i64::MIN), i128::from(i64::MAX)),
    };
    // Accumulated negatively as PostgreSQL does, so MIN itself parses.
    let mut v: i128 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        v = v * 10 - i128::from(b[i] - b'0');
        if v < min {
            return Err(ConvError::int_range(type_name, input));
        }
        i += 1;
    }
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    if i < b.len() {
        return Err(ConvError::syntax(type_name, input));
    }
    if !neg {
        v = -v;
        if v > max {
            return Err(ConvError::int_range(type_name, input));
        }
    }
    match bits {
        16 => out.extend_from_slice(&(v as i16).to_be_bytes()),
        32 => out.extend_from_slice(&(v as i32).to_be_bytes()),
        _ => out.extend_from_slice(&(v as i64).to_be_bytes()),
    }
    Ok(Some(()))
}

/// float4in/float8in: glibc's strtof/strtod on the decimal forms and inf/infinity/nan (any case,
/// signed), then blanks. Hex floats and `nan(...)` payloads decline (the text path reads them).
/// `pg16`: float4in names only the number in its out-of-range message from 16 on (15: the
/// whole input, blanks included), as float8in always does.
pub fn float(input: &str, double: bool, pg16: bool, out: &mut Vec<u8>) -> Maybe {
    let type_name = if double { "double precision" } else { "real" };
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let num_start = i;
    let mut j = i;
    if matches!(b.get(j), Some(b'+' | b'-')) {
        j += 1;
    }
    let neg = b.get(i) == Some(&b'-');
    let rest = &b[j..];
    // (no allocation: this runs for every float field)
    let word = |w: &[u8]| rest.len() >= w.len() && rest[..w.len()].eq_ignore_ascii_case(w);
    let mut special: Option<f64> = None;
    if word(b"infinity") {
        special = Some(f64::INFINITY);
        j += 8;
    } else if word(b"inf") {
        special = Some(f64::INFINITY);
        j += 3;
    } else if word(b"nan") {
        if rest.get(3) == Some(&b'(') {
            return Ok(None);
        }
        special = Some(f64::NAN);
        j += 3;
    }
    let end;
    let mut value = if let Some(v) = special {
        end = j;
        if neg { -v } else { v }
    } else {
        if rest.len() >= 2 && rest[0] == b'0' && (rest[1] | 0x20) == b'x' {
            return Ok(None);
        }
        // [digits][.digits] with at least one digit, then an exponent only if it has digits.
        let mut k = j;
        let mut mant_digits = 0;
        let mut nonzero = false;
        while k < b.len() && b[k].is_ascii_digit() {
            nonzero |= b[k] != b'0';
            mant_digits += 1;
            k += 1;
        }
        if b.get(k) == Some(&b'.') {
            k += 1;
            while k < b.len() && b[k].is_ascii_digit() {
                nonzero |= b[k] != b'0';
                mant_digits += 1;
                k += 1;
            }
        }
        if mant_digits == 0 {
            return Err(ConvError::syntax(type_name, input));
        }
        if matches!(b.get(k), Some(b'e' | b'E')) {
            let mut e = k + 1;
            if matches!(b.get(e), Some(b'+' | b'-')) {
                e += 1;
            }
            if b.get(e).is_some_and(u8::is_ascii_digit) {
                while e < b.len() && b[e].is_ascii_digit() {
                    e += 1;
                }
                k = e;
            }
        }
        end = k;
        let text = &input[num_start..end];
        let v: f64 = if double {
            text.parse().map_err(|_| ConvError::syntax(type_name, input))?
        } else {
            f64::from(text.parse::<f32>().map_err(|_| ConvError::syntax(type_name, input))?)
        };
        // strtod's ERANGE that PostgreSQL refuses: overflow to infinity, or a nonzero input
        // that underflowed to zero (denormals are kept).
        if v.is_infinite() || (v == 0.0 && nonzero) {
            let shown = if double || pg16 { text } else { input };
            return Err(ConvError::new("22003", format!("\"{shown}\" is out of range for type {type_name}")));
        }
        v
    };
    let mut k = end;
    while k < b.len() && is_c_space(b[k]) {
        k += 1;
    }
    if k < b.len() {
        return Err(ConvError::syntax(type_name, input));
    }
    if value.is_nan() {
        // glibc's NaN: the quiet NaN, with the sign bit for "-nan".
        value = if neg { -f64::NAN } else { f64::NAN };
    }
    if double {
        out.extend_from_slice(&value.to_bits().to_be_bytes());
    } else {
        let f = value as f32;
        let f = if f.is_nan() { if neg { -f32::NAN } else { f32::NAN } } else { f };
        out.extend_from_slice(&f.to_bits().to_be_bytes());
    }
    Ok(Some(()))
}

/// boolin: trimmed, any case, a non-empty prefix of true/false/yes/no, on/off (at least two
/// letters: `of` is off), 1, 0.
pub fn bool(input: &str, out: &mut Vec<u8>) -> Maybe {
    let s = trim_c_space(input).to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| s.len() >= min && word.starts_with(s.as_str());
    let v = if s.is_empty() {
        None
    } else if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || s == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || s == "0" {
        Some(false)
    } else {
        None
    };
    match v {
        Some(v) => {
            out.push(u8::from(v));
            Ok(Some(()))
        }
        None => Err(ConvError::syntax("boolean", input)),
    }
}

/// uuid_in: 32 hex digits, a hyphen allowed after any group of four, optional braces, no blanks.
pub fn uuid(input: &str, out: &mut Vec<u8>) -> Maybe {
    let err = || ConvError::syntax("uuid", input);
    let b = input.as_bytes();
    let mut i = 0;
    let braces = b.first() == Some(&b'{');
    if braces {
        i += 1;
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut bytes = [0u8; 16];
    for (n, byte) in bytes.iter_mut().enumerate() {
        let (Some(h), Some(l)) = (b.get(i).and_then(|&c| hex(c)), b.get(i + 1).and_then(|&c| hex(c)))
        else {
            return Err(err());
        };
        *byte = h << 4 | l;
        i += 2;
        if b.get(i) == Some(&b'-') && n % 2 == 1 && n < 15 {
            i += 1;
        }
    }
    if braces {
        if b.get(i) != Some(&b'}') {
            return Err(err());
        }
        i += 1;
    }
    if i != b.len() {
        return Err(err());
    }
    out.extend_from_slice(&bytes);
    Ok(Some(()))
}

/// byteain: `\x` hex (blanks between byte pairs allowed) or the escape form (`\\`, `\ooo`).
pub fn bytea(input: &str, out: &mut Vec<u8>) -> Maybe {
    let b = input.as_bytes();
    if b.len() >= 2 && b[0] == b'\\' && b[1] == b'x' {
        let mut i = 2;
        let digit = |i: usize| -> Result<u8, ConvError> {
            (b[i] as char).to_digit(16).map(|d| d as u8).ok_or_else(|| {
                let ch = input[i..].chars().next().unwrap_or('?');
                ConvError::new("22023", format!("invalid hexadecimal digit: \"{ch}\""))
            })
        };
        while i < b.len() {
            if matches!(b[i], b' ' | b'\n' | b'\t' | b'\r') {
                i += 1;
                continue;
            }
            let h = digit(i)?;
            i += 1;
            if i >= b.len() {
                return Err(ConvError::new("22023", "invalid hexadecimal data: odd number of digits"));
            }
            let l = digit(i)?;
            i += 1;
            out.push(h << 4 | l);
        }
        return Ok(Some(()));
    }
    let mut i = 0;
    let octal = |c: u8, hi: u8| (b'0'..=hi).contains(&c);
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if i + 3 < b.len() && octal(b[i + 1], b'3') && octal(b[i + 2], b'7') && octal(b[i + 3], b'7') {
            out.push((b[i + 1] - b'0') << 6 | (b[i + 2] - b'0') << 3 | (b[i + 3] - b'0'));
            i += 4;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            return Err(ConvError::new("22P02", "invalid input syntax for type bytea"));
        }
    }
    Ok(Some(()))
}

/// text, varchar(n), bpchar(n): characters beyond n must be spaces (clipped), else 22001;
/// bpchar pads to n. A NUL byte declines (the text path reports it).
pub fn string(input: &str, limit: Option<u32>, pad: bool, out: &mut Vec<u8>) -> Maybe {
    if input.as_bytes().contains(&0) {
        return Ok(None);
    }
    let Some(n) = limit else {
        out.extend_from_slice(input.as_bytes());
        return Ok(Some(()));
    };
    let n = n as usize;
    let (clip, chars) = match input.char_indices().nth(n) {
        Some((at, _)) => (at, n),
        None => (input.len(), input.chars().count()),
    };
    if input.as_bytes()[clip..].iter().any(|&c| c != b' ') {
        let t = if pad { "character" } else { "character varying" };
        return Err(ConvError::new("22001", format!("value too long for type {t}({n})")));
    }
    out.extend_from_slice(&input.as_bytes()[..clip]);
    if pad {
        out.extend(std::iter::repeat_n(b' ', n - chars));
    }
    Ok(Some(()))
}

/// json (the text itself) and jsonb (version byte 1, then the text): sent as they are when
/// serde_json finds them valid (PostgreSQL's receive function parses them again); otherwise, or
/// with escapes PostgreSQL treats differently (\u0000, surrogates), the text path reads them and
/// gives its own error.
pub fn json(input: &str, jsonb: bool, out: &mut Vec<u8>) -> Maybe {
    if input.contains("\\u0000") || input.to_ascii_lowercase().contains("\\ud") {
        return Ok(None);
    }
    if serde_json::from_str::<&serde_json::value::RawValue>(input).is_err() {
        return Ok(None);
    }
    if jsonb {
        out.push(1);
    }
    out.extend_from_slice(input.as_bytes());
    Ok(Some(()))
}
