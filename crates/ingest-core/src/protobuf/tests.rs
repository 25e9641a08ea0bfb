use super::values::timestamp_micros;
use super::*;
use crate::rows::Value;

const COMMON: &str = r#"
syntax = "proto3";
package shop.common;
message Money { string currency = 1; int64 units = 2; }
enum Status { STATUS_UNKNOWN = 0; PAID = 1; SHIPPED = 2; }
"#;

const SHOP: &str = r#"
syntax = "proto3";
package shop;
import "shop/common.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Other {
  string note = 1;
  message Inner {
    int32 x = 1;
    message Deep { string s = 1; }
  }
}

message Order {
  int64 id = 1;
  string customer = 2;
  shop.common.Money total = 3;
  shop.common.Status status = 4;
  google.protobuf.Timestamp placed_at = 5;
  google.protobuf.Int64Value discount = 6;
  google.protobuf.StringValue coupon = 7;
  repeated string tags = 8;
  repeated int32 qty = 9;
  map<string, int64> attrs = 10;
  repeated Line lines = 11;
  optional int32 priority = 12;
  uint64 big = 13;
  double ratio = 14;
  float f = 15;
  bytes blob = 16;
  bool gift = 17;
  sint64 delta = 18;
  message Line { string sku = 1; int32 n = 2; }
}
"#;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn int(out: &mut Vec<u8>, field: u32, v: i64) {
    key(out, field, 0);
    varint(out, v as u64);
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// A Confluent frame: magic, id, the message indexes (the single 0 for `[0]`, as the
/// serializers write it), the body.
fn frame(id: u32, indexes: &[i64], body: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    if indexes == [0] {
        out.push(0);
    } else {
        varint(&mut out, zigzag(indexes.len() as i64));
        for &i in indexes {
            varint(&mut out, zigzag(i));
        }
    }
    out.extend_from_slice(body);
    out
}

fn decoder() -> ProtobufDecoder {
    let mut d = ProtobufDecoder::default();
    d.insert(7, SHOP, &[("shop/common.proto", COMMON)]).unwrap();
    d
}

fn decode<'m>(d: &ProtobufDecoder, msg: &'m [u8]) -> Record<'m> {
    let mut out = Vec::new();
    d.decode(msg, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    out.pop().unwrap()
}

fn text<'a>(r: &'a Record<'_>, name: &str) -> &'a str {
    match r.get(name) {
        Some(Value::Text(t)) => t,
        other => panic!("{name}: {other:?}"),
    }
}

fn full_order() -> Vec<u8> {
    let mut b = Vec::new();
    int(&mut b, 1, -42);
    bytes(&mut b, 2, "Ada \"L\"".as_bytes());
    let mut money = Vec::new();
    bytes(&mut money, 1, b"EUR");
    int(&mut money, 2, 9_007_199_254_740_993);
    bytes(&mut b, 3, &money);
    int(&mut b, 4, 2);
    let mut ts = Vec::new();
    int(&mut ts, 1, 1_700_000_000);
    int(&mut ts, 2, 123_456_789);
    bytes(&mut b, 5, &ts);
    let mut disc = Vec::new();
    int(&mut disc, 1, 0);
    bytes(&mut b, 6, &disc); // a wrapper present with its default value
    bytes(&mut b, 8, b"a");
    bytes(&mut b, 8, b"b,\"c\"");
    bytes(&mut b, 9, &[1, 2, 0x7f]); // packed int32 1, 2, 127
    let mut entry = Vec::new();
    bytes(&mut entry, 1, b"k");
    int(&mut entry, 2, 5);
    bytes(&mut b, 10, &entry);
    let mut line = Vec::new();
    bytes(&mut line, 1, b"X1");
    int(&mut line, 2, 3);
    bytes(&mut b, 11, &line);
    int(&mut b, 12, 0);
    int(&mut b, 13, -1); // uint64 max
    key(&mut b, 14, 1);
    b.extend_from_slice(&0.25f64.to_le_bytes());
    key(&mut b, 15, 5);
    b.extend_from_slice(&1.5f32.to_le_bytes());
    bytes(&mut b, 16, &[0, 0xff]);
    int(&mut b, 17, 1);
    int(&mut b, 18, zigzag(-3) as i64);
    b
}

#[test]
fn every_field_kind_of_a_message_with_references() {
    let d = decoder();
    let msg = frame(7, &[1], &full_order());
    let r = decode(&d, &msg);
    assert_eq!(r.get("id"), Some(&Value::Int(-42)));
    assert_eq!(text(&r, "customer"), "Ada \"L\"");
    // A message of the imported file: JSON with the .proto names, 64-bit integers as numbers.
    assert_eq!(
        text(&r, "total"),
        r#"{"currency":"EUR","units":9007199254740993}"#
    );
    assert_eq!(text(&r, "status"), "SHIPPED");
    let micros = 1_700_000_000_000_000 + 123_457;
    assert_eq!(r.get("placed_at"), Some(&Value::TimestampMicros(micros)));
    assert_eq!(r.get("discount"), Some(&Value::Int(0)));
    assert_eq!(r.get("coupon"), Some(&Value::Null));
    assert_eq!(text(&r, "tags"), r#"["a","b,\"c\""]"#);
    assert_eq!(text(&r, "qty"), "[1,2,127]");
    assert_eq!(text(&r, "attrs"), r#"{"k":5}"#);
    assert_eq!(text(&r, "lines"), r#"[{"sku":"X1","n":3}]"#);
    assert_eq!(r.get("priority"), Some(&Value::Int(0)));
    assert_eq!(r.get("big"), Some(&Value::UInt(u64::MAX)));
    assert_eq!(r.get("ratio"), Some(&Value::Float(0.25)));
    assert_eq!(r.get("f"), Some(&Value::Float(1.5)));
    assert_eq!(r.get("blob"), Some(&Value::Bytes(vec![0, 0xff].into())));
    assert_eq!(r.get("gift"), Some(&Value::Bool(true)));
    assert_eq!(r.get("delta"), Some(&Value::Int(-3)));
    let names: Vec<&str> = r.fields.iter().map(|(n, _)| n.as_ref()).collect();
    assert_eq!(names.len(), 18);
}

#[test]
fn absent_fields_are_defaults_without_presence_and_null_with_it() {
    let d = decoder();
    let msg = frame(7, &[1], &[]);
    let r = decode(&d, &msg);
    assert_eq!(r.get("id"), Some(&Value::Int(0)));
    assert_eq!(text(&r, "customer"), "");
    assert_eq!(text(&r, "status"), "STATUS_UNKNOWN");
    assert_eq!(r.get("gift"), Some(&Value::Bool(false)));
    assert_eq!(r.get("blob"), Some(&Value::Bytes(Vec::new().into())));
    for with_presence in ["total", "placed_at", "discount", "coupon", "priority"] {
        assert_eq!(r.get(with_presence), Some(&Value::Null), "{with_presence}");
    }
    assert_eq!(text(&r, "tags"), "[]");
    assert_eq!(text(&r, "attrs"), "{}");
    // A nested message writes its fields without presence with their defaults.
    let mut b = Vec::new();
    bytes(&mut b, 3, &[]);
    let msg = frame(7, &[1], &b);
    assert_eq!(
        text(&decode(&d, &msg), "total"),
        r#"{"currency":"","units":0}"#
    );
}

#[test]
fn message_indexes_pick_the_type() {
    let d = decoder();
    // The single 0: the first message of the file.
    let mut b = Vec::new();
    bytes(&mut b, 1, b"hi");
    let msg = frame(7, &[0], &b);
    assert_eq!(text(&decode(&d, &msg), "note"), "hi");
    // [0, 0]: Other.Inner; [0, 0, 0]: Other.Inner.Deep.
    let mut b = Vec::new();
    int(&mut b, 1, 9);
    let msg = frame(7, &[0, 0], &b);
    assert_eq!(decode(&d, &msg).get("x"), Some(&Value::Int(9)));
    let mut b = Vec::new();
    bytes(&mut b, 1, b"deep");
    let msg = frame(7, &[0, 0, 0], &b);
    assert_eq!(text(&decode(&d, &msg), "s"), "deep");
    // Order.Line, after Order's map-entry type AttrsEntry: [1, 1].
    let mut b = Vec::new();
    bytes(&mut b, 1, b"sku");
    let msg = frame(7, &[1, 1], &b);
    assert_eq!(text(&decode(&d, &msg), "sku"), "sku");
    // The parser: count 0 is [0]; a count, then zig-zag indexes.
    assert_eq!(message_indexes(&[0, 9]).unwrap(), (vec![0], &[9u8][..]));
    assert_eq!(
        message_indexes(&[4, 2, 0, 7]).unwrap(),
        (vec![1, 0], &[7u8][..])
    );
    let mut deep = vec![0x80, 0x01];
    deep.extend([0; 65]);
    assert_eq!(message_indexes(&deep).unwrap(), (vec![0; 64], &[0u8][..]));
}

#[test]
fn bad_frames_indexes_and_bodies_are_errors() {
    let d = decoder();
    let mut out = Vec::new();
    let err = |msg: &[u8]| {
        let mut out = Vec::new();
        d.decode(msg, &mut out).unwrap_err()
    };
    assert_eq!(err(&[1, 0, 0, 0, 7, 0]).sqlstate, "22P02");
    let e = err(&frame(7, &[5], &[]));
    assert_eq!(e.sqlstate, "22P03");
    assert!(e.message.contains("[5]"), "{}", e.message);
    assert_eq!(err(&frame(7, &[0, 3], &[])).sqlstate, "22P03");
    assert_eq!(err(&frame(7, &[-1], &[])).sqlstate, "22P03");
    assert_eq!(err(&[0, 0, 0, 0, 7, 0x82, 0x01]).sqlstate, "22P03"); // count 65
    assert_eq!(
        err(&[0, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).sqlstate,
        "22P03"
    );
    assert_eq!(err(&[0, 0, 0, 0, 7]).sqlstate, "22P03"); // no indexes at all
                                                         // Corrupt bodies: a truncated length-delimited field, a bad wire type, a bad UTF-8 string.
    let e = err(&frame(7, &[1], &[0x12, 0x05, b'a']));
    assert_eq!(e.sqlstate, "22P03");
    assert!(
        e.message.starts_with("corrupt Protobuf message body"),
        "{}",
        e.message
    );
    assert_eq!(err(&frame(7, &[1], &[0x0f])).sqlstate, "22P03");
    assert_eq!(err(&frame(7, &[1], &[0x12, 0x01, 0xff])).sqlstate, "22P03");
    // A Timestamp whose nanos are out of range.
    let mut ts = Vec::new();
    int(&mut ts, 2, 1_000_000_000);
    let mut b = Vec::new();
    bytes(&mut b, 5, &ts);
    assert_eq!(err(&frame(7, &[1], &b)).sqlstate, "22008");
    // Nothing was appended by the failures.
    let ok = frame(7, &[0], &[]);
    assert!(d.decode(&ok, &mut out).is_ok());
    assert_eq!(out.len(), 1);
}

#[test]
fn schemas_compile_with_their_references_and_are_bounded() {
    let mut d = ProtobufDecoder::new(3);
    let e = d.insert(1, SHOP, &[]).unwrap_err();
    assert_eq!(e.sqlstate, "22P02");
    assert!(e.message.contains("shop/common.proto"), "{}", e.message);
    // An unusable schema is kept as such: its messages are dead letters with its error.
    assert!(d.has(1));
    let mut out = Vec::new();
    let first = frame(1, &[0], &[]);
    assert_eq!(d.decode(&first, &mut out).unwrap_err(), e);
    let e = d.insert(2, "syntax = \"proto3\"; message {", &[]).unwrap_err();
    assert_eq!(e.sqlstate, "22P02");
    assert!(!e.message.contains('\n'));
    assert_eq!(d.insert(3, "syntax = \"proto3\"; enum E { A = 0; }", &[]).unwrap_err().sqlstate, "22P02");
    // Bounded: the oldest inserted leaves first; re-inserting an id does not grow the cache.
    d.insert(4, COMMON, &[]).unwrap();
    assert!(!d.has(1) && d.has(2) && d.has(4));
    d.insert(4, COMMON, &[]).unwrap();
    assert_eq!((d.schemas.len(), d.order.len()), (3, 3));
    // An id the registry does not know (the worker marks it), until the next batch asks again.
    let unknown = frame(9, &[0], &[]);
    assert_eq!(d.decode(&unknown, &mut out).unwrap_err().sqlstate, "XX000");
    d.set_missing(9);
    let e = d.decode(&unknown, &mut out).unwrap_err();
    assert_eq!((e.sqlstate, e.message.as_str()), ("22P02", "schema id 9 not found in the schema registry"));
    d.clear_missing();
    assert_eq!(d.decode(&unknown, &mut out).unwrap_err().sqlstate, "XX000");
    // A schema of another type (the worker checks the registry's schemaType) is kept as refused.
    d.reject(9, DecodeError::new("22P02", "schema id 9 is a AVRO schema, not Protobuf"));
    assert!(d.has(9));
    assert!(d.decode(&unknown, &mut out).unwrap_err().message.contains("not Protobuf"));
    assert!(out.is_empty());
}

#[test]
fn repeated_fields_into_array_columns_are_array_literals() {
    let mut d = decoder();
    d.set_array_columns(["tags", "qty", "lines", "customer"].map(String::from));
    let msg = frame(7, &[1], &full_order());
    let r = decode(&d, &msg);
    assert_eq!(text(&r, "tags"), r#"{"a","b,\"c\""}"#);
    assert_eq!(text(&r, "qty"), r#"{"1","2","127"}"#);
    assert_eq!(text(&r, "lines"), r#"{"{\"sku\":\"X1\",\"n\":3}"}"#);
    assert_eq!(text(&r, "customer"), "Ada \"L\""); // not repeated: unchanged
    let empty = frame(7, &[1], &[]);
    assert_eq!(text(&decode(&d, &empty), "qty"), "{}");
}

#[test]
fn timestamps_round_to_microseconds_as_postgresql_input_does() {
    // What PostgreSQL 15 gives for '1970-01-01 00:00:00.<nanos, 9 digits>+00' (checked against
    // 5000 random and half-way nanos values): half to even on the double.
    for (nanos, micros) in [(0, 0), (1, 0), (499, 0), (500, 0), (501, 1), (1_499, 1), (1_500, 2), (2_500, 2), (999_999_499, 999_999), (999_999_500, 1_000_000), (123_456_789, 123_457)] {
        assert_eq!(timestamp_micros(0, nanos).unwrap(), micros, "{nanos}");
    }
    assert_eq!(timestamp_micros(1, 1_499).unwrap(), 1_000_001);
    assert_eq!(timestamp_micros(1, 1_501).unwrap(), 1_000_002);
    assert_eq!(timestamp_micros(-1, 999_999_999).unwrap(), 0); // carries into the next second
    assert_eq!(
        timestamp_micros(-62_135_596_800, 0).unwrap(),
        -62_135_596_800_000_000
    );
    assert_eq!(
        timestamp_micros(i64::MAX / 1000, 0).unwrap_err().sqlstate,
        "22008"
    );
    assert_eq!(timestamp_micros(0, -1).unwrap_err().sqlstate, "22008");
}

#[test]
fn json_of_repeated_well_known_types_enums_bytes_and_maps() {
    let schema = r#"
syntax = "proto3";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
enum Color { RED = 0; GREEN = 1; }
message M {
  repeated google.protobuf.Timestamp times = 1;
  repeated Color colors = 2;
  repeated bytes blobs = 3;
  map<int32, Color> by_id = 4;
  repeated float fs = 5;
  repeated google.protobuf.Int32Value ws = 6;
}
"#;
    let mut d = ProtobufDecoder::default();
    d.set_array_columns(["times", "ws"].map(String::from));
    d.insert(3, schema, &[]).unwrap();
    let mut b = Vec::new();
    let mut ts = Vec::new();
    int(&mut ts, 1, 86_400);
    int(&mut ts, 2, 500_000_000);
    bytes(&mut b, 1, &ts);
    bytes(&mut b, 2, &[1, 0, 7]);
    bytes(&mut b, 3, b"\x00\x01\xfe");
    bytes(&mut b, 3, b"ab");
    for (k, v) in [(9, 1), (-2, 0)] {
        let mut e = Vec::new();
        int(&mut e, 1, k);
        int(&mut e, 2, v);
        bytes(&mut b, 4, &e);
    }
    let mut fs = Vec::new();
    fs.extend_from_slice(&0.1f32.to_le_bytes());
    fs.extend_from_slice(&f32::NAN.to_le_bytes());
    bytes(&mut b, 5, &fs);
    let mut w = Vec::new();
    int(&mut w, 1, 4);
    bytes(&mut b, 6, &w);
    bytes(&mut b, 6, &[]);
    let msg = frame(3, &[0], &b);
    let r = decode(&d, &msg);
    assert_eq!(text(&r, "times"), r#"{"1970-01-02 00:00:00.500000+00"}"#);
    assert_eq!(text(&r, "colors"), r#"["GREEN","RED",7]"#);
    assert_eq!(text(&r, "blobs"), r#"["AAH+","YWI="]"#);
    assert_eq!(text(&r, "by_id"), r#"{"-2":"RED","9":"GREEN"}"#);
    assert_eq!(text(&r, "fs"), r#"[0.1,"NaN"]"#);
    assert_eq!(text(&r, "ws"), r#"{"4","0"}"#);
    let d = ProtobufDecoder {
        array_columns: HashSet::new(),
        ..d
    };
    let r = decode(&d, &msg);
    assert_eq!(text(&r, "times"), r#"["1970-01-02T00:00:00.500Z"]"#);
    assert_eq!(text(&r, "ws"), "[4,0]");
}


#[test]
fn hostile_nesting_is_refused_not_recursed() {
    let mut d = ProtobufDecoder::default();
    d.insert(1, "syntax = \"proto3\"; message R { R r = 1; int32 n = 2; }", &[]).unwrap();
    let nest = |levels: usize| {
        let mut body = Vec::new();
        int(&mut body, 2, 1);
        for _ in 0..levels {
            let mut outer = Vec::new();
            bytes(&mut outer, 1, &body);
            body = outer;
        }
        frame(1, &[0], &body)
    };
    let ok = nest(50);
    let r = decode(&d, &ok);
    assert!(text(&r, "r").starts_with(r#"{"r":{"r":"#));
    let deep = nest(5000);
    let mut out = Vec::new();
    assert_eq!(d.decode(&deep, &mut out).unwrap_err().sqlstate, "22P03");
}

#[test]
fn any_and_duration_in_json() {
    let schema = r#"
syntax = "proto3";
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
message Known { int32 k = 1; }
message M { google.protobuf.Any any = 1; google.protobuf.Duration d = 2; }
"#;
    let mut d = ProtobufDecoder::default();
    d.insert(1, schema, &[]).unwrap();
    let any = |type_url: &str| {
        let mut a = Vec::new();
        bytes(&mut a, 1, type_url.as_bytes());
        let mut k = Vec::new();
        int(&mut k, 1, 5);
        bytes(&mut a, 2, &k);
        let mut b = Vec::new();
        bytes(&mut b, 1, &a);
        let mut dur = Vec::new();
        int(&mut dur, 1, 1);
        int(&mut dur, 2, 500_000_000);
        bytes(&mut b, 2, &dur);
        frame(1, &[1], &b)
    };
    let known = any("type.googleapis.com/Known");
    let r = decode(&d, &known);
    assert_eq!(text(&r, "any"), r#"{"@type":"type.googleapis.com/Known","k":5}"#);
    assert_eq!(text(&r, "d"), r#""1.500s""#);
    let unknown = any("type.googleapis.com/Elsewhere");
    let mut out = Vec::new();
    assert_eq!(d.decode(&unknown, &mut out).unwrap_err().sqlstate, "22P03");
}

#[test]
fn presence_of_proto2_fields_and_oneof_members() {
    let schema = r#"
syntax = "proto2";
message P {
  optional int32 a = 1 [default = 7];
  required string b = 2;
  repeated int64 c = 3;
  oneof choice { string s = 4; int32 i = 5; }
}
"#;
    let mut d = ProtobufDecoder::default();
    d.insert(2, schema, &[]).unwrap();
    let mut b = Vec::new();
    bytes(&mut b, 2, b"x");
    int(&mut b, 5, 0);
    let msg = frame(2, &[0], &b);
    let r = decode(&d, &msg);
    // proto2: an absent optional field is NULL (its declared default is not applied); a oneof
    // member set to 0 is 0, the other member NULL.
    assert_eq!(r.get("a"), Some(&Value::Null));
    assert_eq!(text(&r, "b"), "x");
    assert_eq!(text(&r, "c"), "[]");
    assert_eq!((r.get("s"), r.get("i")), (Some(&Value::Null), Some(&Value::Int(0))));
}

#[test]
fn upsert_keys_from_a_key_message() {
    let d = decoder();
    let mut b = Vec::new();
    int(&mut b, 1, 42);
    bytes(&mut b, 2, b"Ada");
    let key = frame(7, &[1], &b);
    let keys = ["customer".to_string(), "id".to_string(), "coupon".to_string()];
    assert_eq!(d.key_fields(&key, &keys).unwrap(), vec![Some("Ada".into()), Some("42".into()), None]);
    let e = d.key_fields(&key, &["nope".to_string()]).unwrap_err();
    assert_eq!((e.sqlstate, e.message.as_str()), ("22P02", "the Protobuf key has no field \"nope\""));
    let e = d.key_fields(&key[..key.len() - 1], &keys).unwrap_err();
    assert_eq!(e.sqlstate, "22P03");
    assert!(e.message.starts_with("invalid Protobuf key: corrupt"), "{}", e.message);
}

#[test]
fn field_types_give_new_columns_their_types() {
    let d = decoder();
    let types = d.field_types(&frame(7, &[1], &[]));
    let want = [
        ("id", "bigint"), ("customer", "text"), ("total", "jsonb"), ("status", "text"), ("placed_at", "timestamptz"),
        ("discount", "bigint"), ("coupon", "text"), ("tags", "jsonb"), ("qty", "jsonb"), ("attrs", "jsonb"),
        ("lines", "jsonb"), ("priority", "integer"), ("big", "numeric"), ("ratio", "double precision"), ("f", "real"),
        ("blob", "bytea"), ("gift", "boolean"), ("delta", "bigint"),
    ];
    assert_eq!(types, want.iter().map(|(n, t)| (n.to_string(), *t)).collect::<Vec<_>>());
    assert!(d.field_types(&frame(8, &[0], &[])).is_empty());
}
