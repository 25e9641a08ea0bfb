//! Unit tests of the text and typed conversions (the differential test against a real
//! PostgreSQL is tests/pg_differential.rs).

use super::*;
use std::borrow::Cow;

fn plan(typname: &str, typmod: i32) -> ColumnPlan {
    ColumnPlan::new("c", typname, typmod, false, &ServerSettings::default())
}

fn enc(typname: &str, typmod: i32, s: &str) -> Result<Option<Vec<u8>>, ConvError> {
    let mut out = Vec::new();
    match encode_text(&plan(typname, typmod), s, &mut out)? {
        Encoded::Written => Ok(Some(out)),
        Encoded::Fallback => Ok(None),
    }
}

fn err(typname: &str, typmod: i32, s: &str) -> (&'static str, String) {
    let e = enc(typname, typmod, s).unwrap_err();
    (e.sqlstate, e.message)
}

#[test]
fn integers_as_pg_strtoint() {
    assert_eq!(enc("int2", -1, " -32768 ").unwrap().unwrap(), (-32768i16).to_be_bytes());
    assert_eq!(enc("int4", -1, "+7").unwrap().unwrap(), 7i32.to_be_bytes());
    assert_eq!(enc("int8", -1, "-9223372036854775808").unwrap().unwrap(), i64::MIN.to_be_bytes());
    assert_eq!(err("int2", -1, "32768"), ("22003", "value \"32768\" is out of range for type smallint".into()));
    assert_eq!(err("int2", -1, "99999x"), ("22003", "value \"99999x\" is out of range for type smallint".into()));
    assert_eq!(err("int4", -1, "1.0"), ("22P02", "invalid input syntax for type integer: \"1.0\"".into()));
    assert_eq!(err("int8", -1, ""), ("22P02", "invalid input syntax for type bigint: \"\"".into()));
    assert_eq!(err("int4", -1, "0x10"), ("22P02", "invalid input syntax for type integer: \"0x10\"".into()));
    let pg16 = ServerSettings { version_num: 180000, ..Default::default() };
    let p = ColumnPlan::new("c", "int4", -1, false, &pg16);
    assert_eq!(encode_text(&p, "0x10", &mut Vec::new()), Ok(Encoded::Fallback));
    assert_eq!(encode_text(&p, "1_000", &mut Vec::new()), Ok(Encoded::Fallback));
}

#[test]
fn floats_as_strtod() {
    let f8 = |s| enc("float8", -1, s).unwrap().map(|b| f64::from_bits(u64::from_be_bytes(b.try_into().unwrap())));
    assert_eq!(f8(" 1.5e3 "), Some(1500.0));
    assert_eq!(f8("-0").unwrap().to_bits(), (-0.0f64).to_bits());
    assert_eq!(f8("-INF"), Some(f64::NEG_INFINITY));
    assert_eq!(f8("infinity"), Some(f64::INFINITY));
    assert!(f8("NaN").unwrap().is_nan());
    assert_eq!(f8(".5"), Some(0.5));
    assert_eq!(f8("5."), Some(5.0));
    assert_eq!(f8("1e-310"), Some(1e-310));
    assert_eq!(f8("0x1p3"), None);
    assert_eq!(err("float8", -1, "1e400"), ("22003", "\"1e400\" is out of range for type double precision".into()));
    assert_eq!(err("float8", -1, " 1e-400 "), ("22003", "\"1e-400\" is out of range for type double precision".into()));
    assert_eq!(err("float4", -1, "1e39"), ("22003", "\"1e39\" is out of range for type real".into()));
    assert_eq!(err("float8", -1, "1e"), ("22P02", "invalid input syntax for type double precision: \"1e\"".into()));
    assert_eq!(err("float4", -1, "infinit"), ("22P02", "invalid input syntax for type real: \"infinit\"".into()));
    assert_eq!(err("float8", -1, " "), ("22P02", "invalid input syntax for type double precision: \" \"".into()));
}

#[test]
fn bools_uuids_byteas() {
    for (s, v) in [("t", 1), (" TRUE ", 1), ("ye", 1), ("on", 1), ("1", 1), ("of", 0), ("n", 0), ("FALS", 0), ("0", 0)] {
        assert_eq!(enc("bool", -1, s).unwrap().unwrap(), vec![v], "{s}");
    }
    for s in ["o", "", "truee", "2", "yess"] {
        assert_eq!(err("bool", -1, s).1, format!("invalid input syntax for type boolean: \"{s}\""));
    }
    let want: Vec<u8> = (0..16).map(|i| (i * 17) as u8).collect();
    for s in ["00112233-4455-6677-8899-aabbccddeeff", "{00112233445566778899AABBCCDDEEFF}", "0011-2233-4455-6677-8899-aabb-ccdd-eeff"] {
        assert_eq!(enc("uuid", -1, s).unwrap().unwrap(), want, "{s}");
    }
    for s in ["001122334455667788-99aabbccddeeff", " 00112233445566778899aabbccddeeff", "{00112233445566778899aabbccddeeff"] {
        assert_eq!(err("uuid", -1, s).0, "22P02", "{s}");
    }
    assert_eq!(enc("bytea", -1, "\\x00 Ff").unwrap().unwrap(), vec![0, 255]);
    assert_eq!(enc("bytea", -1, "a\\\\b\\001").unwrap().unwrap(), b"a\\b\x01".to_vec());
    assert_eq!(err("bytea", -1, "\\x0g"), ("22023", "invalid hexadecimal digit: \"g\"".into()));
    assert_eq!(err("bytea", -1, "\\x0"), ("22023", "invalid hexadecimal data: odd number of digits".into()));
    assert_eq!(err("bytea", -1, "a\\9"), ("22P02", "invalid input syntax for type bytea".into()));
}

#[test]
fn strings_with_length_limits() {
    assert_eq!(enc("varchar", 3 + 4, "abc   ").unwrap().unwrap(), b"abc".to_vec());
    assert_eq!(err("varchar", 3 + 4, "abcd"), ("22001", "value too long for type character varying(3)".into()));
    assert_eq!(enc("bpchar", 4 + 4, "é").unwrap().unwrap(), "é   ".as_bytes().to_vec());
    assert_eq!(err("bpchar", 1 + 4, "ab"), ("22001", "value too long for type character(1)".into()));
    assert_eq!(enc("varchar", 2 + 4, "éé").unwrap().unwrap(), "éé".as_bytes().to_vec());
    assert_eq!(enc("text", -1, "a\0b").unwrap(), None);
    assert_eq!(enc("jsonb", -1, "{\"a\": [1, 2.5e3]}").unwrap().unwrap(), b"\x01{\"a\": [1, 2.5e3]}".to_vec());
    assert_eq!(enc("json", -1, "{\"a\": }").unwrap(), None);
    assert_eq!(enc("jsonb", -1, "\"\\u0000\"").unwrap(), None);
    assert_eq!(enc("date", -1, "2024-01-01").unwrap().unwrap(), 8766i32.to_be_bytes());
    assert_eq!(enc("date", -1, "01/02/2024").unwrap(), None);
}

#[test]
fn typed_values_load_like_their_json_twin() {
    let mut out = Vec::new();
    let e = encode_field(&plan("int2", -1), &Value::Int(70000), &mut out).unwrap_err();
    assert_eq!(e.message, "value \"70000\" is out of range for type smallint");
    let dec = Value::Decimal { unscaled: 12345, scale: 3 };
    let mut typed = Vec::new();
    encode_field(&plan("numeric", (6 << 16 | 2) + 4), &dec, &mut typed).unwrap();
    assert_eq!(Some(typed), enc("numeric", (6 << 16 | 2) + 4, "12.345").unwrap());
    let mut f4 = Vec::new();
    encode_field(&plan("float4", -1), &Value::Float(0.1), &mut f4).unwrap();
    assert_eq!(f4, 0.1f32.to_bits().to_be_bytes());
    let mut t = Vec::new();
    encode_field(&plan("text", -1), &Value::Int(-3), &mut t).unwrap();
    assert_eq!(t, b"-3");
    let mut b = Vec::new();
    encode_field(&plan("bytea", -1), &Value::Bytes(Cow::Borrowed(b"\x00\x01")), &mut b).unwrap();
    assert_eq!(b, vec![0, 1]);
    assert_eq!(encode_field(&plan("inet", -1), &Value::Int(1), &mut b), Ok(Encoded::Fallback));
}

#[test]
fn rows_go_into_the_writer_or_come_back() {
    let rp = RowPlan { columns: vec![plan("int4", -1), plan("text", -1)] };
    assert!(rp.binary());
    let mut w = BinaryRowWriter::new();
    assert_eq!(rp.write_row(&[Value::Text("5".into()), Value::Null], &mut w), Ok(Encoded::Written));
    let e = rp.write_row(&[Value::Text("x".into()), Value::Null], &mut w).unwrap_err();
    assert_eq!(e.0, 0);
    let mut want = HEADER.to_vec();
    want.extend_from_slice(&[0, 2, 0, 0, 0, 4, 0, 0, 0, 5, 255, 255, 255, 255, 255, 255]);
    assert_eq!(w.finish(), want);
    let constrained = ColumnPlan::new("d", "int4", -1, true, &ServerSettings::default());
    assert!(!RowPlan { columns: vec![constrained] }.binary());
}
