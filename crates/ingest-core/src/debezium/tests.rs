use super::*;
use crate::rows::Value;
use std::borrow::Cow;

fn text(s: &str) -> Value<'static> {
    Value::Text(Cow::Owned(s.to_string()))
}

fn field(e: &Option<Row>, name: &str) -> Value<'static> {
    e.as_ref().unwrap().record.get(name).cloned().unwrap_or_else(|| panic!("no field {name}"))
}

/// A wrapped event whose after row has one field of the given schema and JSON value.
fn wrapped(field_schema: &str, value: &str) -> Vec<u8> {
    format!(
        r#"{{"schema":{{"type":"struct","fields":[
            {{"type":"struct","optional":true,"field":"before","fields":[{{"type":"int32","field":"id"}},{field_schema}]}},
            {{"type":"struct","optional":true,"field":"after","fields":[{{"type":"int32","field":"id"}},{field_schema}]}},
            {{"type":"string","field":"op"}},{{"type":"int64","optional":true,"field":"ts_ms"}}]}},
          "payload":{{"before":null,"after":{{"id":1,"v":{value}}},"op":"c","ts_ms":1700000000000}}}}"#
    )
    .into_bytes()
}

fn decoded(field_schema: &str, value: &str) -> Result<Cell, DecodeError> {
    let e = decode_event(&wrapped(field_schema, value))?.unwrap();
    let after = e.after.unwrap();
    if after.unavailable.iter().any(|n| n == "v") {
        return Ok(Cell::Unavailable);
    }
    Ok(Cell::Value(after.record.get("v").cloned().unwrap()))
}

fn val(field_schema: &str, value: &str) -> Value<'static> {
    match decoded(field_schema, value).unwrap() {
        Cell::Value(v) => v,
        Cell::Unavailable => panic!("unavailable"),
    }
}

#[test]
fn envelopes_with_and_without_the_wrapper() {
    let plain = br#"{"before":{"id":1,"name":"a"},"after":{"id":1,"name":"b","price":12.50,"tags":[1,2],"ok":true,"n":null},"source":{"ts_ms":5},"op":"u","ts_ms":7}"#;
    let e = decode_event(plain).unwrap().unwrap();
    assert_eq!(e.op, Op::Update);
    assert_eq!(e.ts_ms, Some(7));
    assert_eq!(field(&e.before, "name"), text("a"));
    // without a schema a field loads as its JSON text (numbers keep every digit as written)
    assert_eq!(field(&e.after, "price"), text("12.50"));
    assert_eq!(field(&e.after, "tags"), text("[1,2]"));
    assert_eq!(field(&e.after, "ok"), Value::Bool(true));
    assert_eq!(field(&e.after, "n"), Value::Null);
    let w = decode_event(&wrapped(r#"{"type":"string","optional":true,"field":"v"}"#, r#""x""#)).unwrap().unwrap();
    assert_eq!((w.op, w.ts_ms, field(&w.after, "v"), w.before), (Op::Create, Some(1_700_000_000_000), text("x"), None));
    let src_ts = decode_event(br#"{"before":null,"after":{"id":1},"source":{"ts_ms":5},"op":"r"}"#).unwrap().unwrap();
    assert_eq!((src_ts.op, src_ts.ts_ms), (Op::Read, Some(5)));
    // tombstones: a null value (the worker sees no payload), or a null payload
    assert_eq!(decode_event(b"null").unwrap(), None);
    assert_eq!(decode_event(br#"{"schema":null,"payload":null}"#).unwrap(), None);
    let t = decode_event(br#"{"before":null,"after":null,"op":"t","ts_ms":1}"#).unwrap().unwrap();
    assert_eq!(t.op, Op::Truncate);
}

#[test]
fn connect_decimals_decode_exactly() {
    let dec = r#"{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2","connect.decimal.precision":"10"},"field":"v"}"#;
    // 1234567 = 0x12D687, scale 2
    assert_eq!(val(dec, r#""EtaH""#), Value::Decimal { unscaled: 1_234_567, scale: 2 });
    // -1 = 0xFF; -12.50 = -1250 = 0xFB1E
    assert_eq!(val(dec, r#""/w==""#), Value::Decimal { unscaled: -1, scale: 2 });
    assert_eq!(val(dec, r#""+x4=""#), Value::Decimal { unscaled: -1250, scale: 2 });
    assert_eq!(val(dec, r#""AA==""#).to_text().unwrap(), "0.00");
    // 38 nines: 16 bytes
    let big: i128 = 99_999_999_999_999_999_999_999_999_999_999_999_999;
    let b64 = encode64(&big.to_be_bytes());
    assert_eq!(val(dec, &format!("\"{b64}\"")), Value::Decimal { unscaled: big, scale: 2 });
    // 17 bytes with a redundant sign byte is fine; a real 17-byte value is 22003
    let mut seventeen = vec![0u8];
    seventeen.extend_from_slice(&big.to_be_bytes());
    assert_eq!(val(dec, &format!("\"{}\"", encode64(&seventeen))), Value::Decimal { unscaled: big, scale: 2 });
    let mut huge = vec![1u8];
    huge.extend_from_slice(&[0u8; 16]);
    assert_eq!(decoded(dec, &format!("\"{}\"", encode64(&huge))).unwrap_err().sqlstate, "22003");
    assert_eq!(decoded(dec, r#""not base64!""#).unwrap_err().sqlstate, "22P02");
    // decimal.format=NUMERIC: the number as written
    assert_eq!(val(dec, "12.50"), text("12.50"));
    let vsd = r#"{"type":"struct","optional":true,"name":"io.debezium.data.VariableScaleDecimal","fields":[{"type":"int32","field":"scale"},{"type":"bytes","field":"value"}],"field":"v"}"#;
    assert_eq!(val(vsd, r#"{"scale":3,"value":"MDk="}"#), Value::Decimal { unscaled: 12345, scale: 3 });
    assert_eq!(decoded(vsd, r#"{"value":"MDk="}"#).unwrap_err().sqlstate, "22P02");
}

fn encode64(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            s.push(if k <= c.len() { A[(n >> (18 - 6 * k) & 63) as usize] as char } else { '=' });
        }
    }
    s
}

#[test]
fn dates_times_and_timestamps() {
    let f = |name: &str, ty: &str| format!(r#"{{"type":"{ty}","optional":true,"name":"{name}","field":"v"}}"#);
    assert_eq!(val(&f("io.debezium.time.Date", "int32"), "19723"), Value::DateDays(19723));
    assert_eq!(val(&f("io.debezium.time.Date", "int32"), "-1").to_text().unwrap(), "1969-12-31");
    assert_eq!(val(&f("io.debezium.time.Time", "int32"), "45296789"), text("12:34:56.789000"));
    assert_eq!(val(&f("io.debezium.time.MicroTime", "int64"), "45296789012"), text("12:34:56.789012"));
    assert_eq!(val(&f("io.debezium.time.NanoTime", "int64"), "45296789012345"), text("12:34:56.789012345"));
    assert_eq!(val(&f("io.debezium.time.MicroTime", "int64"), "86400000000"), text("24:00:00.000000"));
    assert_eq!(val(&f("io.debezium.time.Timestamp", "int64"), "1700000000123"), Value::LocalTimestampMicros(1_700_000_000_123_000));
    assert_eq!(val(&f("io.debezium.time.MicroTimestamp", "int64"), "-1").to_text().unwrap(), "1969-12-31 23:59:59.999999");
    assert_eq!(val(&f("io.debezium.time.NanoTimestamp", "int64"), "1700000000123456789"), Value::LocalTimestampMicros(1_700_000_000_123_457));
    assert_eq!(val(&f("org.apache.kafka.connect.data.Timestamp", "int64"), "0").to_text().unwrap(), "1970-01-01 00:00:00.000000");
    assert_eq!(val(&f("io.debezium.time.ZonedTimestamp", "string"), r#""2024-01-02T03:04:05.123456Z""#), text("2024-01-02T03:04:05.123456Z"));
    assert_eq!(val(&f("io.debezium.time.ZonedTime", "string"), r#""03:04:05Z""#), text("03:04:05Z"));
    assert_eq!(val(&f("io.debezium.time.MicroDuration", "int64"), "1500000"), text("1500000 microseconds"));
    assert_eq!(decoded(&f("io.debezium.time.Date", "int32"), r#""2024-01-01""#).unwrap_err().sqlstate, "22P02");
}

#[test]
fn plain_connect_types() {
    let f = |ty: &str, name: Option<&str>| match name {
        Some(n) => format!(r#"{{"type":"{ty}","optional":true,"name":"{n}","field":"v"}}"#),
        None => format!(r#"{{"type":"{ty}","optional":true,"field":"v"}}"#),
    };
    assert_eq!(val(&f("int64", None), "-9223372036854775808"), Value::Int(i64::MIN));
    assert_eq!(val(&f("int16", None), "null"), Value::Null);
    assert_eq!(val(&f("double", None), "0.1"), Value::Float(0.1));
    assert!(matches!(val(&f("float", None), r#""NaN""#), Value::Float(x) if x.is_nan()));
    assert_eq!(val(&f("boolean", None), "false"), Value::Bool(false));
    assert_eq!(val(&f("bytes", None), r#""AP8=""#), Value::Bytes(Cow::Owned(vec![0, 255])));
    assert_eq!(val(&f("string", Some("io.debezium.data.Json")), r#""{\"a\": 1}""#), text(r#"{"a": 1}"#));
    assert_eq!(val(&f("string", Some("io.debezium.data.Uuid")), r#""1b4e28ba-2fa1-11d2-883f-0016d3cca427""#), text("1b4e28ba-2fa1-11d2-883f-0016d3cca427"));
    assert_eq!(val(r#"{"type":"array","items":{"type":"int32"},"optional":true,"field":"v"}"#, "[1, 2]"), text("[1, 2]"));
    assert_eq!(decoded(&f("int32", None), r#""7""#).unwrap_err().sqlstate, "22P02");
    assert_eq!(decoded(&f("boolean", None), "1").unwrap_err().sqlstate, "22P02");
    assert_eq!(base64("AP8"), Some(vec![0, 255]));
    assert_eq!(base64("A"), None);
}

#[test]
fn toast_placeholders_are_unavailable_never_values() {
    assert_eq!(decoded(r#"{"type":"string","optional":true,"field":"v"}"#, r#""__debezium_unavailable_value""#).unwrap(), Cell::Unavailable);
    assert_eq!(decoded(r#"{"type":"bytes","optional":true,"field":"v"}"#, r#""X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==""#).unwrap(), Cell::Unavailable);
    assert_eq!(
        decoded(r#"{"type":"array","items":{"type":"string"},"optional":true,"field":"v"}"#, r#"["__debezium_unavailable_value"]"#).unwrap(),
        Cell::Unavailable
    );
    let e = decode_event(br#"{"before":null,"after":{"id":1,"doc":"__debezium_unavailable_value","b":"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="},"op":"u"}"#).unwrap().unwrap();
    let after = e.after.unwrap();
    assert_eq!(after.unavailable, vec!["b".to_string(), "doc".to_string()]);
    assert_eq!(after.record.get("doc"), None);
}

#[test]
fn malformed_events_are_refused_with_a_sqlstate() {
    let err = |m: &[u8]| decode_event(m).unwrap_err();
    assert_eq!(err(b"").sqlstate, "22P02");
    assert_eq!(err(b"{not json").sqlstate, "22032");
    assert_eq!(err(b"[1,2]").sqlstate, "22P02");
    assert_eq!(err(&[0xff, 0xfe]).sqlstate, "22021");
    assert!(err(br#"{"id": 1, "name": "a"}"#).message.contains("no \"op\""));
    let unknown = err(br#"{"before":null,"after":{"id":1},"op":"x"}"#);
    assert_eq!(unknown.sqlstate, "22P02");
    assert!(unknown.message.contains("unknown change event op \"x\""), "{}", unknown.message);
    assert!(err(br#"{"before":null,"after":null,"op":"c"}"#).message.contains("no \"after\""));
    assert!(err(br#"{"before":null,"after":5,"op":"c"}"#).message.contains("not a JSON object"));
    // a field the schema does not name
    let w = String::from_utf8(wrapped(r#"{"type":"int32","field":"v"}"#, "1")).unwrap().replace(r#""v":1"#, r#""v":1,"w":2"#);
    assert!(err(w.as_bytes()).message.contains("\"w\" is not in the event's schema"));
}

#[test]
fn message_keys_with_and_without_the_wrapper() {
    let k = decode_key(br#"{"id": 7}"#).unwrap().unwrap();
    assert_eq!(k.record.get("id"), Some(&text("7")));
    let w = decode_key(br#"{"schema":{"type":"struct","fields":[{"type":"int32","optional":false,"field":"id"}]},"payload":{"id":7}}"#).unwrap().unwrap();
    assert_eq!(w.record.get("id"), Some(&Value::Int(7)));
    assert_eq!(decode_key(b"null").unwrap(), None);
    assert!(decode_key(b"7").is_err());
}

fn ev(json: &str) -> Event {
    decode_event(json.as_bytes()).unwrap().unwrap()
}

fn keys() -> Vec<String> {
    vec!["id".to_string()]
}

fn cols() -> Vec<String> {
    ["id", "a", "b"].iter().map(|s| s.to_string()).collect()
}

fn steps(events: &[&str]) -> Vec<(usize, Vec<Step>)> {
    events
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let e = (*j != "tombstone").then(|| ev(j));
            (i, step_of(e.as_ref(), None, &keys(), &cols()).unwrap())
        })
        .collect()
}

fn given(v: &[(usize, &str)]) -> Option<Given> {
    Some(v.iter().map(|(i, s)| (*i, Some(s.to_string()))).collect())
}

#[test]
fn steps_of_each_op() {
    let s = steps(&[
        r#"{"before":null,"after":{"id":1,"a":"x","zz":"ignored"},"op":"c"}"#,
        r#"{"before":{"id":1},"after":{"id":2,"a":"y"},"op":"u"}"#,
        r#"{"before":{"id":2,"a":null},"after":null,"op":"d"}"#,
        "tombstone",
        r#"{"before":null,"after":null,"op":"t"}"#,
    ]);
    assert_eq!(s[0].1, vec![Step::Upsert { key: vec!["1".into()], values: vec![(0, Some("1".into())), (1, Some("x".into()))], fill: None }]);
    assert_eq!(s[1].1[0], Step::Delete { key: vec!["1".into()], change_id: None });
    assert!(matches!(&s[1].1[1], Step::Upsert { key, .. } if key == &vec!["2".to_string()]));
    assert_eq!(s[2].1, vec![Step::Delete { key: vec!["2".into()], change_id: None }]);
    assert!(s[3].1.is_empty());
    assert_eq!(s[4].1, vec![Step::Truncate]);
    // a delete without before takes the message key; without either it is 22004
    let d = ev(r#"{"before":null,"after":null,"op":"d"}"#);
    let mk = decode_key(br#"{"id":9}"#).unwrap().unwrap();
    assert_eq!(step_of(Some(&d), Some(&mk), &keys(), &cols()).unwrap(), vec![Step::Delete { key: vec!["9".into()], change_id: None }]);
    assert_eq!(step_of(Some(&d), None, &keys(), &cols()).unwrap_err().sqlstate, "22004");
    let nokey = ev(r#"{"before":null,"after":{"a":"x"},"op":"c"}"#);
    assert_eq!(step_of(Some(&nokey), None, &keys(), &cols()).unwrap_err().sqlstate, "22004");
    let nullkey = ev(r#"{"before":null,"after":{"id":null},"op":"r"}"#);
    assert_eq!(step_of(Some(&nullkey), None, &keys(), &cols()).unwrap_err().sqlstate, "22004");
}

#[test]
fn collapse_keeps_the_last_change_per_key_and_merges_placeholders() {
    let s = steps(&[
        r#"{"before":null,"after":{"id":1,"a":"x","b":"big"},"op":"c"}"#,
        r#"{"before":null,"after":{"id":1,"a":"y","b":"__debezium_unavailable_value"},"op":"u"}"#,
        r#"{"before":null,"after":{"id":2,"a":"p","b":"q"},"op":"c"}"#,
        r#"{"before":{"id":2},"after":null,"op":"d"}"#,
        "tombstone",
        r#"{"before":null,"after":{"id":3,"a":"m","b":"__debezium_unavailable_value"},"op":"u"}"#,
        r#"{"before":{"id":4},"after":null,"op":"d"}"#,
        r#"{"before":null,"after":{"id":4,"a":"n","b":"__debezium_unavailable_value"},"op":"c"}"#,
    ]);
    let c = collapse(s.iter().map(|(i, v)| (*i, v.as_slice())), false);
    assert!(!c.truncate);
    let by = |k: &str| c.finals.iter().find(|f| f.key == vec![k.to_string()]).unwrap().clone();
    // the placeholder keeps the batch's earlier value
    assert_eq!(by("1").upsert, given(&[(0, "1"), (1, "y"), (2, "big")]));
    assert_eq!((by("1").delete_first, by("1").msgs.clone()), (false, vec![0, 1]));
    assert_eq!((by("2").upsert, by("2").msgs.clone()), (None, vec![2, 3]));
    // the stored value is kept (b not given, no delete first)
    assert_eq!((by("3").upsert, by("3").delete_first), (given(&[(0, "3"), (1, "m")]), false));
    // re-created after a delete: the stored row goes first, b gets its default
    assert_eq!((by("4").upsert, by("4").delete_first), (given(&[(0, "4"), (1, "n")]), true));
    assert_eq!(c.finals.iter().map(|f| f.key[0].as_str()).collect::<Vec<_>>(), vec!["1", "2", "3", "4"]);
}

#[test]
fn truncates_apply_only_when_asked() {
    let s = steps(&[
        r#"{"before":null,"after":{"id":1,"a":"x"},"op":"c"}"#,
        r#"{"before":null,"after":null,"op":"t"}"#,
        r#"{"before":null,"after":{"id":2,"a":"y"},"op":"c"}"#,
    ]);
    let skipped = collapse(s.iter().map(|(i, v)| (*i, v.as_slice())), false);
    assert_eq!((skipped.truncate, skipped.finals.len(), skipped.skipped_truncates.clone()), (false, 2, vec![1]));
    let applied = collapse(s.iter().map(|(i, v)| (*i, v.as_slice())), true);
    assert!(applied.truncate);
    assert_eq!(applied.finals.len(), 1);
    assert_eq!((applied.finals[0].key.clone(), applied.finals[0].delete_first), (vec!["2".to_string()], false));
}

#[test]
fn a_key_change_fills_its_placeholders_from_the_old_row() {
    let s = steps(&[
        // 5 was created in this batch: the batch knows its b
        r#"{"before":null,"after":{"id":5,"a":"x","b":"five"},"op":"c","source":{"txId":1,"lsn":10}}"#,
        r#"{"before":{"id":5},"after":null,"op":"d","source":{"txId":2,"lsn":20}}"#,
        r#"{"before":null,"after":{"id":6,"a":"y","b":"__debezium_unavailable_value"},"op":"c","source":{"txId":2,"lsn":20}}"#,
        // 7 is only in the table: the writer reads its b
        r#"{"before":null,"after":{"id":8,"a":"z","b":"__debezium_unavailable_value"},"op":"c","source":{"txId":3,"lsn":30}}"#,
        r#"{"before":{"id":7},"after":null,"op":"d","source":{"txId":3,"lsn":30}}"#,
        // and changes its key again (8 -> 10): 10's b is still 7's
        r#"{"before":{"id":8},"after":null,"op":"d","source":{"txId":5,"lsn":50}}"#,
        r#"{"before":null,"after":{"id":10,"a":"v","b":"__debezium_unavailable_value"},"op":"c","source":{"txId":5,"lsn":50}}"#,
        // no d of the same log record in the batch: b is left to its default
        r#"{"before":null,"after":{"id":9,"a":"w","b":"__debezium_unavailable_value"},"op":"c","source":{"txId":4,"lsn":40}}"#,
    ]);
    let c = collapse(s.iter().map(|(i, v)| (*i, v.as_slice())), false);
    let by = |k: &str| c.finals.iter().find(|f| f.key == vec![k.to_string()]).unwrap().clone();
    assert_eq!((by("6").upsert, by("6").fill), (given(&[(0, "6"), (1, "y"), (2, "five")]), vec![]));
    assert_eq!(by("8").upsert, None);
    assert_eq!(by("10").upsert, given(&[(0, "10"), (1, "v")]));
    assert_eq!(by("10").fill, vec![Fill { from: vec!["7".into()], columns: vec![2] }]);
    assert_eq!((by("9").upsert, by("9").fill), (given(&[(0, "9"), (1, "w")]), vec![]));
    assert_eq!(by("7").upsert, None);
}

/// Events a real Debezium 3.5 captured (tests/e2e/fixtures/debezium/README.md): every message
/// decodes, and the batch folded at once ends as the source table (the columns whose text does
/// not depend on PostgreSQL's output functions).
#[test]
fn real_debezium_fixtures_fold_into_the_source_table() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/fixtures/debezium");
    for (name, compared) in [
        ("postgres_schemas", &["id", "qty", "price", "ok", "day", "note", "big"][..]),
        ("postgres_noschema", &["id", "qty", "price", "ok", "note", "big"][..]),
    ] {
        let lines = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
        let fin: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.final.json"))).unwrap()).unwrap();
        let columns: Vec<String> = fin["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
        let mut steps = Vec::new();
        for (i, line) in lines.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let m: serde_json::Value = serde_json::from_str(line).unwrap();
            let value = (!m["value"].is_null()).then(|| m["value"].to_string());
            let event = value.map(|v| decode_event(v.as_bytes()).unwrap_or_else(|e| panic!("{name} line {i}: {e}"))).flatten();
            let key = decode_key(m["key"].to_string().as_bytes()).unwrap();
            steps.push((i, step_of(event.as_ref(), key.as_ref(), &keys(), &columns).unwrap()));
        }
        let c = collapse(steps.iter().map(|(i, v)| (*i, v.as_slice())), false);
        let mut rows: Vec<&Final> = c.finals.iter().filter(|f| f.upsert.is_some()).collect();
        rows.sort_by_key(|f| f.key[0].clone()); // as the file orders them (by the text)
        let expected = fin["rows"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "{name}");
        for (f, want) in rows.iter().zip(expected) {
            assert!(f.fill.is_empty(), "{name}: one batch needs no stored row");
            let given = f.upsert.as_ref().unwrap();
            for col in compared {
                let i = columns.iter().position(|c| c == col).unwrap();
                let got = given.iter().find(|(c, _)| *c == i).and_then(|(_, v)| v.clone());
                assert_eq!(got.as_deref(), want[i].as_str(), "{name}: row {:?} column {col}", f.key);
            }
        }
    }
}
