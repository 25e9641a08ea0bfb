//! Format 'debezium-avro': hand-encoded Avro envelopes -> the events the JSON path builds.

use super::{decode_avro_event, decode_avro_key, Op};
use crate::avro::AvroDecoder;
use crate::rows::Value;

const VALUE: &str = r#"{"type":"record","name":"Value","namespace":"db.public.t","fields":[
 {"name":"id","type":"int"},
 {"name":"price","type":["null",{"type":"bytes","scale":2,"precision":10,"connect.name":"org.apache.kafka.connect.data.Decimal","logicalType":"decimal"}],"default":null},
 {"name":"day","type":["null",{"type":"int","connect.version":1,"connect.name":"io.debezium.time.Date"}],"default":null},
 {"name":"at","type":["null",{"type":"long","connect.version":1,"connect.name":"io.debezium.time.MicroTimestamp"}],"default":null},
 {"name":"at_ns","type":["null",{"type":"long","connect.name":"io.debezium.time.NanoTimestamp"}],"default":null},
 {"name":"note","type":["null","string"],"default":null},
 {"name":"blob","type":["null","bytes"],"default":null},
 {"name":"v","type":["null",{"type":"record","name":"VariableScaleDecimal","namespace":"io.debezium.data","connect.name":"io.debezium.data.VariableScaleDecimal","fields":[{"name":"scale","type":"int"},{"name":"value","type":"bytes"}]}],"default":null}
]}"#;

fn envelope() -> String {
    format!(
        r#"{{"type":"record","name":"Envelope","namespace":"db.public.t","fields":[
 {{"name":"before","type":["null",{VALUE}],"default":null}},
 {{"name":"after","type":["null","Value"],"default":null}},
 {{"name":"source","type":{{"type":"record","name":"Source","namespace":"io.debezium.connector.postgresql","fields":[
   {{"name":"ts_ms","type":"long"}},{{"name":"txId","type":["null","long"]}},{{"name":"lsn","type":["null","long"]}}]}}}},
 {{"name":"op","type":"string"}},
 {{"name":"ts_ms","type":["null","long"],"default":null}},
 {{"name":"transaction","type":["null",{{"type":"record","name":"block","fields":[{{"name":"id","type":"string"}}]}}],"default":null}}
]}}"#
    )
}

fn long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// A row image: id, price 12.34, day 19000, at, at_ns, note, blob, v (scale 3, 12345).
fn image(out: &mut Vec<u8>, id: i64, note: &str, blob: &[u8]) {
    long(out, 1); // the Value branch
    long(out, id);
    long(out, 1);
    bytes(out, &[0x04, 0xd2]); // 1234
    long(out, 1);
    long(out, 19000);
    long(out, 1);
    long(out, 1_700_000_000_123_456);
    long(out, 1);
    long(out, 1_700_000_000_123_456_789);
    long(out, 1);
    bytes(out, note.as_bytes());
    long(out, 1);
    bytes(out, blob);
    long(out, 1);
    long(out, 3);
    bytes(out, &[0x30, 0x39]); // 12345
}

fn message(op: &str, before: Option<(i64, &str)>, after: Option<(i64, &str, &[u8])>) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 0, 7];
    match before {
        None => long(&mut m, 0),
        Some((id, note)) => image(&mut m, id, note, b"x"),
    }
    match after {
        None => long(&mut m, 0),
        Some((id, note, blob)) => image(&mut m, id, note, blob),
    }
    long(&mut m, 1_700_000_000_000); // source.ts_ms
    long(&mut m, 1);
    long(&mut m, 555); // txId
    long(&mut m, 1);
    long(&mut m, 9999); // lsn
    bytes(&mut m, op.as_bytes());
    long(&mut m, 1);
    long(&mut m, 1_700_000_000_001);
    long(&mut m, 0); // transaction: null
    m
}

fn decoder() -> AvroDecoder {
    let mut d = AvroDecoder::default();
    d.set_connect_names(true);
    d.insert(7, &envelope()).unwrap();
    d.insert(8, r#"{"type":"record","name":"Key","fields":[{"name":"id","type":"int"}]}"#).unwrap();
    d
}

#[test]
fn an_avro_envelope_decodes_to_typed_rows() {
    let d = decoder();
    let e = decode_avro_event(&d, &message("u", Some((1, "old")), Some((1, "new", b"\x00\xff")))).unwrap().unwrap();
    assert_eq!(e.op, Op::Update);
    assert_eq!(e.ts_ms, Some(1_700_000_000_001));
    assert_eq!(e.change_id.as_deref(), Some("555/9999"));
    let after = e.after.unwrap();
    let get = |n: &str| after.record.get(n).cloned();
    assert_eq!(get("id"), Some(Value::Int(1)));
    assert_eq!(get("price"), Some(Value::Decimal { unscaled: 1234, scale: 2 }));
    assert_eq!(get("day"), Some(Value::DateDays(19000)));
    assert_eq!(get("at"), Some(Value::LocalTimestampMicros(1_700_000_000_123_456)));
    assert_eq!(get("at_ns"), Some(Value::LocalTimestampMicros(1_700_000_000_123_457)));
    assert_eq!(get("note"), Some(Value::Text("new".into())));
    assert_eq!(get("blob"), Some(Value::Bytes(b"\x00\xff".to_vec().into())));
    assert_eq!(get("v"), Some(Value::Decimal { unscaled: 12345, scale: 3 }));
    assert_eq!(e.before.unwrap().record.get("note").cloned(), Some(Value::Text("old".into())));
}

#[test]
fn placeholders_are_unavailable_not_values() {
    let d = decoder();
    let e = decode_avro_event(&d, &message("u", None, Some((2, super::PLACEHOLDER, super::PLACEHOLDER.as_bytes())))).unwrap().unwrap();
    let after = e.after.unwrap();
    assert_eq!(after.unavailable, vec!["note".to_string(), "blob".to_string()]);
    assert!(after.record.get("note").is_none());
}

#[test]
fn deletes_keys_and_bad_messages() {
    let mut d = decoder();
    d.set_missing(9);
    let e = decode_avro_event(&d, &message("d", Some((3, "gone")), None)).unwrap().unwrap();
    assert_eq!((e.op, e.after.is_none()), (Op::Delete, true));
    let k = decode_avro_key(&d, &[0, 0, 0, 0, 8, 6]).unwrap().unwrap();
    assert_eq!(k.record.get("id").cloned(), Some(Value::Int(3)));
    // an unknown op, an insert without after, a corrupt body, an unknown schema id
    assert_eq!(decode_avro_event(&d, &message("x", None, Some((1, "a", b"")))).unwrap_err().sqlstate, "22P02");
    assert_eq!(decode_avro_event(&d, &message("c", None, None)).unwrap_err().sqlstate, "22P02");
    let m = message("c", None, Some((1, "a", b"")));
    assert_eq!(decode_avro_event(&d, &m[..m.len() - 3]).unwrap_err().sqlstate, "22P03");
    let mut other = m.clone();
    other[4] = 9;
    assert_eq!(decode_avro_event(&d, &other).unwrap_err().message, "schema id 9 not found in the schema registry");
}

#[test]
fn without_connect_names_the_temporal_fields_stay_numbers() {
    let mut d = AvroDecoder::default();
    d.insert(7, &envelope()).unwrap();
    let e = decode_avro_event(&d, &message("c", None, Some((1, "a", b"")))).unwrap().unwrap();
    assert_eq!(e.after.unwrap().record.get("at").cloned(), Some(Value::Int(1_700_000_000_123_456)));
}
