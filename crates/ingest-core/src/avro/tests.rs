use super::*;
use crate::rows::Value;

/// A tiny Avro writer for the tests.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn framed(id: u32) -> W {
        let mut w = W(vec![0]);
        w.0.extend_from_slice(&id.to_be_bytes());
        w
    }
    fn long(mut self, v: i64) -> W {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    fn bytes(self, b: &[u8]) -> W {
        let mut w = self.long(b.len() as i64);
        w.0.extend_from_slice(b);
        w
    }
    fn str(self, s: &str) -> W {
        self.bytes(s.as_bytes())
    }
    fn raw(mut self, b: &[u8]) -> W {
        self.0.extend_from_slice(b);
        self
    }
}

fn decoder(id: u32, schema: &str) -> AvroDecoder {
    let mut d = AvroDecoder::default();
    d.insert(id, schema).unwrap();
    d
}

fn one<'m>(d: &AvroDecoder, msg: &'m [u8]) -> Result<Record<'m>, DecodeError> {
    let mut out = Vec::new();
    d.decode(msg, &mut out)?;
    assert_eq!(out.len(), 1);
    Ok(out.pop().unwrap())
}

fn texts(r: &Record<'_>) -> Vec<(String, Option<String>)> {
    r.fields.iter().map(|(n, v)| (n.to_string(), v.to_text().map(|t| t.to_string()))).collect()
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"r","namespace":"t","fields":[{fields}]}}"#)
}

#[test]
fn primitives_fill_fields_in_schema_order() {
    let s = record(
        r#"{"name":"b","type":"boolean"},{"name":"i","type":"int"},{"name":"l","type":"long"},
           {"name":"f","type":"float"},{"name":"d","type":"double"},{"name":"s","type":"string"},
           {"name":"y","type":"bytes"},{"name":"x","type":{"type":"fixed","name":"f2","size":2}},{"name":"n","type":"null"}"#,
    );
    let d = decoder(7, &s);
    let msg = W::framed(7)
        .raw(&[1])
        .long(-70000)
        .long(i64::MIN)
        .raw(&0.1f32.to_le_bytes())
        .raw(&(-2.5f64).to_le_bytes())
        .str("é\tx")
        .bytes(&[0, 255])
        .raw(&[1, 2])
        .0;
    let r = one(&d, &msg).unwrap();
    assert_eq!(r.get("b"), Some(&Value::Bool(true)));
    assert_eq!(r.get("i"), Some(&Value::Int(-70000)));
    assert_eq!(r.get("l"), Some(&Value::Int(i64::MIN)));
    assert_eq!(r.get("f"), Some(&Value::Float(f64::from(0.1f32))));
    assert_eq!(r.get("d"), Some(&Value::Float(-2.5)));
    assert_eq!(r.get("s"), Some(&Value::Text("é\tx".into())));
    assert!(matches!(r.get("s"), Some(Value::Text(std::borrow::Cow::Borrowed(_)))), "strings borrow from the message");
    assert_eq!(r.get("y"), Some(&Value::Bytes(vec![0u8, 255].into())));
    assert_eq!(r.get("x"), Some(&Value::Bytes(vec![1u8, 2].into())));
    assert_eq!(r.get("n"), Some(&Value::Null));
    assert_eq!(r.fields.iter().map(|f| f.0.as_ref()).collect::<Vec<_>>(), ["b", "i", "l", "f", "d", "s", "y", "x", "n"]);
}

#[test]
fn date_time_and_timestamp_logical_types() {
    let s = record(
        r#"{"name":"d","type":{"type":"int","logicalType":"date"}},
           {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
           {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
           {"name":"sm","type":{"type":"long","logicalType":"timestamp-millis"}},
           {"name":"su","type":{"type":"long","logicalType":"timestamp-micros"}},
           {"name":"lm","type":{"type":"long","logicalType":"local-timestamp-millis"}},
           {"name":"lu","type":{"type":"long","logicalType":"local-timestamp-micros"}}"#,
    );
    let d = decoder(1, &s);
    let msg = W::framed(1)
        .long(-719_162) // 0001-01-01 is 719162 days before 1970-01-01
        .long(45_296_789)
        .long(86_399_999_999)
        .long(1_700_000_000_123)
        .long(-1)
        .long(86_400_000)
        .long(1_000_000_000_000_001)
        .0;
    let r = one(&d, &msg).unwrap();
    assert_eq!(r.get("d"), Some(&Value::DateDays(-719_162)));
    assert_eq!(r.get("tm"), Some(&Value::Text("12:34:56.789000".into())));
    assert_eq!(r.get("tu"), Some(&Value::Text("23:59:59.999999".into())));
    assert_eq!(r.get("sm"), Some(&Value::TimestampMicros(1_700_000_000_123_000)));
    assert_eq!(r.get("su"), Some(&Value::TimestampMicros(-1)));
    assert_eq!(r.get("lm"), Some(&Value::LocalTimestampMicros(86_400_000_000)));
    assert_eq!(r.get("lu"), Some(&Value::LocalTimestampMicros(1_000_000_000_000_001)));
    let t = texts(&r);
    assert_eq!(t[0].1.as_deref(), Some("0001-01-01"));
    assert_eq!(t[4].1.as_deref(), Some("1969-12-31 23:59:59.999999+00"));
    // Outside a day, or a millisecond timestamp that overflows microseconds: 22008.
    let bad = W::framed(1).long(0).long(-1).0;
    let e = one(&d, &bad).unwrap_err();
    assert_eq!(e.sqlstate, "22008");
    assert!(e.message.contains("field \"tm\""), "{}", e.message);
    let bad = W::framed(1).long(0).long(0).long(0).long(i64::MAX / 10).0;
    assert_eq!(one(&d, &bad).unwrap_err().sqlstate, "22008");
}

#[test]
fn uuid_duration_and_enum_are_text() {
    let s = record(
        r#"{"name":"u","type":{"type":"string","logicalType":"uuid"}},
           {"name":"fu","type":{"type":"fixed","name":"U16","size":16,"logicalType":"uuid"}},
           {"name":"du","type":{"type":"fixed","name":"D","size":12,"logicalType":"duration"}},
           {"name":"e","type":{"type":"enum","name":"E","symbols":["A","B","C"]}}"#,
    );
    let d = decoder(2, &s);
    let mut dur = Vec::new();
    for n in [14u32, 3, 4_294_967_295] {
        dur.extend_from_slice(&n.to_le_bytes());
    }
    let uuid: Vec<u8> = (0u8..16).collect();
    let msg = W::framed(2).str("123e4567-e89b-12d3-a456-426614174000").raw(&uuid).raw(&dur).long(2).0;
    let r = one(&d, &msg).unwrap();
    assert_eq!(r.get("u"), Some(&Value::Text("123e4567-e89b-12d3-a456-426614174000".into())));
    assert_eq!(r.get("fu"), Some(&Value::Text("00010203-0405-0607-0809-0a0b0c0d0e0f".into())));
    assert_eq!(r.get("du"), Some(&Value::Text("14 months 3 days 4294967295 ms".into())));
    assert_eq!(r.get("e"), Some(&Value::Text("C".into())));
    let bad = W::framed(2).str("x").raw(&uuid).raw(&dur).long(3).0;
    let e = one(&d, &bad).unwrap_err();
    assert_eq!(e.sqlstate, "22P03");
    assert!(e.message.contains("enum index 3"), "{}", e.message);
}

/// Two's complement big-endian of `v` in `n` bytes.
fn be(v: i128, n: usize) -> Vec<u8> {
    v.to_be_bytes()[16 - n..].to_vec()
}

#[test]
fn decimals_keep_every_digit() {
    let s = record(
        r#"{"name":"a","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
           {"name":"b","type":{"type":"fixed","name":"F","size":16,"logicalType":"decimal","precision":38,"scale":0}},
           {"name":"c","type":{"type":"bytes","logicalType":"decimal","precision":60,"scale":10}},
           {"name":"z","type":{"type":"bytes","logicalType":"decimal","precision":5}}"#,
    );
    let d = decoder(3, &s);
    let max38 = 10i128.pow(38) - 1;
    // 2^200 + 1 (61 digits) as 26 bytes, positive, and its negation.
    let mut big = vec![0u8; 26];
    big[0] = 1; // 2^200 is bit 200 = byte 25 from the end, i.e. index 0 of 26 bytes
    big[25] = 1;
    let msg = W::framed(3).bytes(&be(-1250, 2)).raw(&be(-max38, 16)).bytes(&big).bytes(&[]).0;
    let r = one(&d, &msg).unwrap();
    assert_eq!(r.get("a"), Some(&Value::Decimal { unscaled: -1250, scale: 2 }));
    assert_eq!(r.get("b"), Some(&Value::Decimal { unscaled: -max38, scale: 0 }));
    let two200 = "1606938044258990275541962092341162602522202993782792835301377";
    let want = format!("{}.{}", &two200[..two200.len() - 10], &two200[two200.len() - 10..]);
    assert_eq!(r.get("c"), Some(&Value::Text(want.clone().into())));
    assert_eq!(r.get("z"), Some(&Value::Decimal { unscaled: 0, scale: 0 }));
    // Negative beyond 38 digits: -(2^200 + 1).
    let mut neg: Vec<u8> = big.iter().map(|b| !b).collect();
    let last = neg.len() - 1;
    neg[last] = neg[last].wrapping_add(1);
    neg.insert(0, 0xff);
    let msg = W::framed(3).bytes(&be(5, 1)).raw(&be(10i128.pow(38), 16)).bytes(&neg).bytes(&[0xff]).0;
    let r = one(&d, &msg).unwrap();
    assert_eq!(r.get("a"), Some(&Value::Decimal { unscaled: 5, scale: 2 }));
    assert_eq!(texts(&r)[0].1.as_deref(), Some("0.05"));
    // 10^38 has 39 digits: exact text.
    assert_eq!(r.get("b"), Some(&Value::Text("100000000000000000000000000000000000000".into())));
    assert_eq!(r.get("c"), Some(&Value::Text(format!("-{want}").into())));
    assert_eq!(r.get("z"), Some(&Value::Decimal { unscaled: -1, scale: 0 }));
}

#[test]
fn unions_with_null_and_bad_branches() {
    let s = record(r#"{"name":"a","type":["null","long"]},{"name":"b","type":["string","null"]}"#);
    let d = decoder(4, &s);
    let r_msg = W::framed(4).long(1).long(42).long(1).0;
    let r = one(&d, &r_msg).unwrap();
    assert_eq!(texts(&r), [("a".into(), Some("42".into())), ("b".into(), None)]);
    let r_msg = W::framed(4).long(0).long(0).str("x").0;
    let r = one(&d, &r_msg).unwrap();
    assert_eq!(texts(&r), [("a".into(), None), ("b".into(), Some("x".into()))]);
    let e = one(&d, &W::framed(4).long(2).0).unwrap_err();
    assert_eq!(e.sqlstate, "22P03");
    assert!(e.message.contains("union branch index 2") && e.message.contains("schema id 4"), "{}", e.message);
    assert_eq!(one(&d, &W::framed(4).long(-1).0).unwrap_err().sqlstate, "22P03");
}

#[test]
fn nested_records_maps_and_arrays_are_json_or_array_literals() {
    let s = record(
        r#"{"name":"rec","type":{"type":"record","name":"In","fields":[
               {"name":"x","type":"int"},{"name":"when","type":{"type":"int","logicalType":"date"}},
               {"name":"amt","type":{"type":"bytes","logicalType":"decimal","precision":20,"scale":3}},
               {"name":"o","type":["null","In"]}]}},
           {"name":"m","type":{"type":"map","values":["null","double"]}},
           {"name":"arr","type":{"type":"array","items":"string"}},
           {"name":"ints","type":{"type":"array","items":["null","int"]}},
           {"name":"grid","type":{"type":"array","items":{"type":"array","items":"long"}}}"#,
    );
    let mut d = decoder(5, &s);
    let body = |w: W| {
        w.long(1)
            .long(365)
            .bytes(&be(-123456, 3))
            .long(1)
            .long(2)
            .long(0)
            .bytes(&be(1, 1))
            .long(0)
            // map: one block of 2, then a negative-count block (count 1 with its byte size)
            .long(2)
            .str("k\"")
            .long(1)
            .raw(&1.5f64.to_le_bytes())
            .str("n")
            .long(0)
            .long(-1)
            .long(11)
            .str("z")
            .long(1)
            .raw(&f64::NAN.to_le_bytes())
            .long(0)
            // arr
            .long(2)
            .str("a,b")
            .str("q\"\\")
            .long(0)
            // ints
            .long(2)
            .long(1)
            .long(7)
            .long(0)
            .long(0)
            // grid
            .long(2)
            .long(2)
            .long(1)
            .long(2)
            .long(0)
            .long(1)
            .long(3)
            .long(0)
            .long(0)
    };
    let msg = body(W::framed(5)).0;
    let r = one(&d, &msg).unwrap();
    let t = texts(&r);
    assert_eq!(t[0].1.as_deref(), Some(r#"{"x":1,"when":"1971-01-01","amt":-123.456,"o":{"x":2,"when":"1970-01-01","amt":0.001,"o":null}}"#));
    assert_eq!(t[1].1.as_deref(), Some(r#"{"k\"":1.5,"n":null,"z":"NaN"}"#));
    assert_eq!(t[2].1.as_deref(), Some(r#"["a,b","q\"\\"]"#));
    assert_eq!(t[3].1.as_deref(), Some("[7,null]"));
    assert_eq!(t[4].1.as_deref(), Some("[[1,2],[3]]"));
    d.set_array_columns(["arr".to_string(), "ints".to_string(), "grid".to_string()]);
    let r = one(&d, &msg).unwrap();
    let t = texts(&r);
    assert_eq!(t[2].1.as_deref(), Some(r#"{"a,b","q\"\\"}"#));
    assert_eq!(t[3].1.as_deref(), Some(r#"{"7",NULL}"#));
    assert_eq!(t[4].1.as_deref(), Some(r#"{{"1","2"},{"3"}}"#));
}

#[test]
fn corrupt_bodies_are_22p03() {
    let s = record(r#"{"name":"s","type":"string"},{"name":"l","type":"long"}"#);
    let d = decoder(6, &s);
    let good = W::framed(6).str("abc").long(5).0;
    assert!(one(&d, &good).is_ok());
    // Truncated anywhere.
    for n in 5..good.len() {
        let e = one(&d, &good[..n]).unwrap_err();
        assert_eq!(e.sqlstate, "22P03", "{n}: {}", e.message);
    }
    // Trailing bytes.
    let mut extra = good.clone();
    extra.push(0);
    let e = one(&d, &extra).unwrap_err();
    assert_eq!((e.sqlstate, e.message.as_str()), ("22P03", "invalid Avro body for schema id 6: 1 bytes after the end of the record"));
    // A length beyond the body, a negative length, a varint of 11 bytes.
    assert_eq!(one(&d, &W::framed(6).long(1000).0).unwrap_err().sqlstate, "22P03");
    assert!(one(&d, &W::framed(6).long(-3).0).unwrap_err().message.contains("negative length"));
    assert_eq!(one(&d, &W::framed(6).raw(&[0xff; 11]).0).unwrap_err().sqlstate, "22P03");
    // Not UTF-8.
    assert_eq!(one(&d, &W::framed(6).bytes(&[0xc3, 0x28]).long(1).0).unwrap_err().sqlstate, "22021");
    // Not framed.
    assert_eq!(one(&d, b"{\"s\":1}").unwrap_err().sqlstate, "22P02");
    // An int out of range.
    let di = decoder(9, &record(r#"{"name":"i","type":"int"}"#));
    assert!(one(&di, &W::framed(9).long(1 << 40).0).unwrap_err().message.contains("int out of range"));
    // A boolean byte that is not 0 or 1.
    let db = decoder(9, &record(r#"{"name":"b","type":"boolean"}"#));
    assert_eq!(one(&db, &W::framed(9).raw(&[2]).0).unwrap_err().sqlstate, "22P03");
}

#[test]
fn unknown_missing_and_unusable_schemas() {
    let mut d = decoder(1, &record(r#"{"name":"a","type":"int"}"#));
    let e = one(&d, &W::framed(2).long(1).0).unwrap_err();
    assert_eq!(e.sqlstate, "XX000");
    d.set_missing(2);
    let e = one(&d, &W::framed(2).long(1).0).unwrap_err();
    assert_eq!((e.sqlstate, e.message.as_str()), ("22P02", "schema id 2 not found in the schema registry"));
    d.clear_missing();
    assert_eq!(one(&d, &W::framed(2).long(1).0).unwrap_err().sqlstate, "XX000");
    let e = d.insert(3, r#"{"type":"record","name":"x","fields":[{"name":"a","type":"Nope"}]}"#).unwrap_err();
    assert_eq!(e.sqlstate, "22P02");
    assert!(e.message.contains("unknown type \"Nope\""), "{}", e.message);
    assert_eq!(one(&d, &W::framed(3).long(1).0).unwrap_err(), e, "its messages carry the schema's error");
    assert!(d.has(3));
    d.insert(4, r#""string""#).unwrap();
    let e = one(&d, &W::framed(4).str("x").0).unwrap_err();
    assert_eq!(e.sqlstate, "0A000");
    assert!(e.message.contains("is an Avro string, not a record"), "{}", e.message);
    assert_eq!(d.insert(5, "not json").unwrap_err().sqlstate, "22P02");
}

#[test]
fn bounded_schemas_and_second_versions() {
    let mut d = AvroDecoder::new(2);
    d.insert(1, &record(r#"{"name":"a","type":"int"}"#)).unwrap();
    d.insert(2, &record(r#"{"name":"a","type":"int"},{"name":"b","type":["null","string"],"default":null}"#)).unwrap();
    let r1_msg = W::framed(1).long(1).0;
    let r1 = one(&d, &r1_msg).unwrap();
    let r2_msg = W::framed(2).long(2).long(1).str("x").0;
    let r2 = one(&d, &r2_msg).unwrap();
    assert_eq!(texts(&r1), [("a".into(), Some("1".into()))]);
    assert_eq!(texts(&r2), [("a".into(), Some("2".into())), ("b".into(), Some("x".into()))]);
    d.insert(3, &record(r#"{"name":"a","type":"long"}"#)).unwrap();
    assert!(!d.has(1) && d.has(2) && d.has(3), "the oldest is dropped");
}

#[test]
fn hostile_bodies_are_bounded() {
    // A recursive list nested deeper than the limit: 54001, not a stack overflow.
    let d = decoder(8, r#"{"type":"record","name":"L","fields":[{"name":"next","type":["null","L"]}]}"#);
    let mut w = W::framed(8);
    for _ in 0..1000 {
        w = w.long(1);
    }
    let e = one(&d, &w.long(0).0).unwrap_err();
    assert_eq!(e.sqlstate, "54001", "{}", e.message);
    // An array of nulls claiming 2^60 items: refused at once.
    let d = decoder(9, &record(r#"{"name":"a","type":{"type":"array","items":"null"}}"#));
    let e = one(&d, &W::framed(9).long(1 << 60).long(0).0).unwrap_err();
    assert_eq!(e.sqlstate, "22P03");
    let ok_msg = W::framed(9).long(3).long(0).0;
    let ok = one(&d, &ok_msg).unwrap();
    assert_eq!(texts(&ok)[0].1.as_deref(), Some("[null,null,null]"));
}

#[test]
fn names_namespaces_and_references() {
    let s = r#"{"type":"record","name":"Outer","namespace":"a.b","fields":[
        {"name":"x","type":{"type":"fixed","name":"Id","size":2}},
        {"name":"y","type":"Id"},
        {"name":"z","type":"a.b.Id"},
        {"name":"w","type":{"type":"record","name":"c.Inner","fields":[{"name":"v","type":"a.b.Id"}]}}]}"#;
    // Inner is in namespace c: Id is named by its full name there.
    let d = decoder(1, s);
    let r_msg = W::framed(1).raw(&[1, 2, 3, 4, 5, 6, 7, 8]).0;
    let r = one(&d, &r_msg).unwrap();
    assert_eq!(r.get("z"), Some(&Value::Bytes(vec![5u8, 6].into())));
    assert_eq!(texts(&r)[3].1.as_deref(), Some(r#"{"v":"\\x0708"}"#));
}

#[test]
fn keys_of_upserts() {
    let mut d = decoder(1, &record(r#"{"name":"id","type":"long"},{"name":"region","type":["null","string"]}"#));
    d.insert(2, r#"{"type":"string","logicalType":"uuid"}"#).unwrap();
    let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let rec = W::framed(1).long(-7).long(1).str("eu").0;
    assert_eq!(d.key_fields(&rec, &keys(&["region", "id"])).unwrap(), [Some("eu".to_string()), Some("-7".to_string())]);
    let null = W::framed(1).long(1).long(0).0;
    assert_eq!(d.key_fields(&null, &keys(&["id", "region"])).unwrap(), [Some("1".to_string()), None]);
    assert!(d.key_fields(&rec, &keys(&["nope"])).unwrap_err().message.contains("no field \"nope\""));
    let one_value = W::framed(2).str("123e4567-e89b-12d3-a456-426614174000").0;
    assert_eq!(d.key_fields(&one_value, &keys(&["u"])).unwrap(), [Some("123e4567-e89b-12d3-a456-426614174000".to_string())]);
    assert_eq!(d.key_fields(&one_value, &keys(&["a", "b"])).unwrap_err().sqlstate, "22P02");
    let mut trailing = rec.clone();
    trailing.push(0);
    assert_eq!(d.key_fields(&trailing, &keys(&["id"])).unwrap_err().sqlstate, "22P03");
}

#[test]
fn schemas_with_references() {
    let mut d = AvroDecoder::default();
    let money = r#"{"type":"fixed","name":"Money","namespace":"m","size":2,"logicalType":"decimal","precision":4,"scale":2}"#;
    let item = r#"{"type":"record","name":"Item","namespace":"m","fields":[{"name":"price","type":"Money"}]}"#;
    let order = r#"{"type":"record","name":"Order","fields":[{"name":"total","type":"m.Money"},{"name":"item","type":"m.Item"}]}"#;
    d.insert_with_references(1, order, &[money.to_string(), item.to_string()]).unwrap();
    let msg = W::framed(1).raw(&be(1234, 2)).raw(&be(-5, 2)).0;
    let r = one(&d, &msg).unwrap();
    assert_eq!(r.get("total"), Some(&Value::Decimal { unscaled: 1234, scale: 2 }));
    assert_eq!(texts(&r)[1].1.as_deref(), Some(r#"{"price":-0.05}"#));
    assert!(d.insert(2, order).unwrap_err().message.contains("unknown type \"m.Money\""));
    d.reject(3, DecodeError::new("22P02", "schema id 3 is a PROTOBUF schema, not Avro"));
    assert!(one(&d, &W::framed(3).0).unwrap_err().message.contains("PROTOBUF"));
}
