"""format := 'protobuf': Confluent-framed Protobuf through Apicurio's Confluent-compatible API.

Schemas are registered as .proto text (schemaType PROTOBUF), one importing another through a
registry reference and the well-known types (built in, no reference). Messages are hand-encoded
here (the wire format is small: varints and length-delimited fields), framed with the schema id
and the message-index varints the Confluent serializers write (a single 0 for the first message).

Checked: message types by index (the first, a second top-level one, a nested one), a message of
the referenced file as a jsonb column, enum names, Timestamp -> timestamptz (rounded to
microseconds as PostgreSQL rounds the same text), wrappers -> their value or NULL, proto3
defaults for absent fields and NULL for absent fields with presence, repeated -> jsonb and array
columns, maps -> jsonb; bad messages -> dead letters with raw bytes and SQLSTATEs (an id the
registry does not know 22P02, a corrupt body 22P03, a message index naming no type 22P03, the id
of an Avro schema 22P02). Kinesis reads the same bytes the same way.
"""
from __future__ import annotations

import json

import pytest

from pihelpers import (KAFKA_BOOTSTRAP, confluent_frame, kinesis_add_endpoint, kinesis_consume_begin,
                       kinesis_create_stream, kinesis_put_records, pg_connect, produce, query, register_schema,
                       scalar, unique_name, wait_until)

COMMON = """
syntax = "proto3";
package shop.common;
message Money { string currency = 1; int64 units = 2; }
enum Status { STATUS_UNKNOWN = 0; PAID = 1; SHIPPED = 2; }
"""

SHOP = """
syntax = "proto3";
package shop;
import "shop/common.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Note {
  string note = 1;
  message Inner { int32 x = 1; }
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
  bytes blob = 15;
  bool gift = 16;
  sint64 delta = 17;
  message Line { string sku = 1; int32 n = 2; }
}
"""

TABLE = """CREATE TABLE orders (
  id bigint, customer text, total jsonb, status text, placed_at timestamptz, discount bigint,
  coupon text DEFAULT 'unset', tags text[], qty jsonb, attrs jsonb, lines jsonb, priority int,
  big numeric, ratio float8, blob bytea, gift boolean, delta bigint, note text, x int, sku text,
  n int, off bigint)"""


# --------------------------------------------------------------------------- the wire format
def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63)


def f_int(field: int, v: int) -> bytes:
    return varint(field << 3) + varint(v)


def f_bytes(field: int, b: bytes | str) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return varint((field << 3) | 2) + varint(len(b)) + b


def f_double(field: int, v: float) -> bytes:
    import struct
    return varint((field << 3) | 1) + struct.pack("<d", v)


def framed(schema_id: int, indexes: list[int], body: bytes) -> bytes:
    """The Confluent frame with the message indexes (the single 0 for [0], as the serializers
    write it)."""
    if indexes == [0]:
        head = b"\x00"
    else:
        head = varint(zigzag(len(indexes))) + b"".join(varint(zigzag(i)) for i in indexes)
    return confluent_frame(schema_id, head + body)


def order_body() -> bytes:
    return b"".join([
        f_int(1, 42),
        f_bytes(2, "Ada"),
        f_bytes(3, f_bytes(1, "EUR") + f_int(2, 9_007_199_254_740_993)),
        f_int(4, 2),
        f_bytes(5, f_int(1, 1_700_000_000) + f_int(2, 123_456_500)),  # .1234565 -> .123456 (half even)
        f_bytes(6, f_int(1, 0)),  # a wrapper set to its default: 0, not NULL
        f_bytes(8, "a"), f_bytes(8, 'b "c"'),
        f_bytes(9, bytes([1, 2, 0x7F])),  # packed
        f_bytes(10, f_bytes(1, "k") + f_int(2, 5)),
        f_bytes(11, f_bytes(1, "X1") + f_int(2, 3)),
        f_int(12, 0),  # optional, set to 0: 0
        f_int(13, (1 << 64) - 1),
        f_double(14, 0.1),
        f_bytes(15, b"\x00\xff"),
        f_int(16, 1),
        f_int(17, zigzag(-3)),
    ])


# --------------------------------------------------------------------------- the test
@pytest.mark.timeout(180)
def test_protobuf_messages_types_and_dead_letters(fresh_db, topic_factory, schema_registry):
    topic = topic_factory(1)
    common_subject = unique_name("pb_common")
    register_schema(common_subject, COMMON, "PROTOBUF")
    shop_id = register_schema(f"{topic}-value", SHOP, "PROTOBUF",
                              references=[{"name": "shop/common.proto", "subject": common_subject, "version": 1}])
    avro_id = register_schema(unique_name("pb_avro"), '{"type": "record", "name": "A", "fields": []}')
    messages = [
        framed(shop_id, [1], order_body()),                       # Order, every kind of field
        framed(shop_id, [1], f_int(1, 43)),                       # Order, the rest absent
        framed(shop_id, [0], f_bytes(1, "first type")),           # Note: the single 0
        framed(shop_id, [0, 0], f_int(1, 7)),                     # Note.Inner
        framed(shop_id, [1, 1], f_bytes(1, "sku-9") + f_int(2, 2)),  # Order.Line (after AttrsEntry)
        framed(999_999, [0], b""),                                # an id the registry lacks
        framed(shop_id, [1], f_bytes(2, "trunc")[:-2]),           # a corrupt body
        framed(shop_id, [5], b""),                                # an index naming no type
        framed(avro_id, [0], b""),                                # an Avro schema's id
    ]
    sent = produce(topic, messages)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE)
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", [schema_registry])
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'orders', format := 'protobuf', start_offset := -2, "
                     "metadata := '{\"offset\": \"off\"}'::jsonb)", [topic])
    wait_until(lambda: scalar(fresh_db, "SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets") == len(sent),
               timeout=90, what="every message consumed")

    rows = query(fresh_db, """SELECT off, id, customer, total::text, status, placed_at = '2023-11-14 22:13:20.123456500+00',
                                     discount, coupon, tags, qty::text, attrs::text, lines::text, priority, big::text,
                                     ratio, blob, gift, delta, note, x, sku, n FROM orders ORDER BY off""")
    full, empty, note, inner, line = rows
    assert full[1:] == (42, "Ada", '{"units": 9007199254740993, "currency": "EUR"}', "SHIPPED", True, 0, None,
                        ["a", 'b "c"'], "[1, 2, 127]", '{"k": 5}', '[{"n": 3, "sku": "X1"}]', 0,
                        "18446744073709551615", 0.1, b"\x00\xff", True, -3, None, None, None, None)
    # proto3 defaults for fields without presence; NULL for the ones with presence.
    assert empty[1:] == (43, "", None, "STATUS_UNKNOWN", None, None, None, [], "[]", "{}", "[]", None,
                         "0", 0.0, b"", False, 0, None, None, None, None)
    assert note[1:] == (None, None, None, None, None, None, "unset", None, None, None, None, None,
                        None, None, None, None, None, "first type", None, None, None)
    assert (inner[19], line[20], line[21]) == (7, "sku-9", 2)
    assert scalar(fresh_db, "SELECT placed_at FROM orders WHERE id = 42").isoformat() \
        == "2023-11-14T22:13:20.123456+00:00"

    letters = query(fresh_db, "SELECT \"offset\", value, sqlstate, error FROM pipeline_kafka.dead_letters "
                              "ORDER BY \"offset\"")
    assert [(o, bytes(v), s) for o, v, s, _ in letters] == [
        (sent[5][1], messages[5], "22P02"), (sent[6][1], messages[6], "22P03"), (sent[7][1], messages[7], "22P03"),
        (sent[8][1], messages[8], "22P02")]
    assert "schema id 999999 not found" in letters[0][3]
    assert f"schema id {avro_id} is a AVRO schema, not Protobuf" in letters[3][3]
    assert "corrupt Protobuf message body" in letters[1][3]
    assert "message index [5]" in letters[2][3]
    assert scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumer_status") is None
    json.loads(full[3])  # the nested message is valid JSON


@pytest.mark.timeout(120)
def test_kinesis_reads_the_same_protobuf_bytes(fresh_db, schema_registry):
    stream = unique_name("pb")
    kinesis_create_stream(stream, 1)
    common_subject = unique_name("pb_common")
    register_schema(common_subject, COMMON, "PROTOBUF")
    sid = register_schema(f"{stream}-value", SHOP, "PROTOBUF",
                          references=[{"name": "shop/common.proto", "subject": common_subject, "version": 1}])
    recs = [(f"k{i}", framed(sid, [1], f_int(1, i) + f_int(4, 1) + f_bytes(8, "t"))) for i in range(3)]
    recs.append(("bad", framed(sid, [1], b"\x0f")))
    kinesis_put_records(stream, recs)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE orders (id bigint, status text, tags text[])")
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", [schema_registry])
        endpoint = kinesis_add_endpoint(fresh_db)
        kinesis_consume_begin(conn, endpoint, stream, "orders", format="protobuf", start_offset=-2)
    wait_until(lambda: scalar(fresh_db, "SELECT (SELECT count(*) FROM orders) + "
                                        "(SELECT count(*) FROM pipeline_kinesis.dead_letters)") == len(recs),
               timeout=90, what="every record in orders or the dead letters")
    assert query(fresh_db, "SELECT id, status, tags FROM orders ORDER BY id") == [(i, "PAID", ["t"]) for i in range(3)]
    assert query(fresh_db, "SELECT data, sqlstate FROM pipeline_kinesis.dead_letters") == [(recs[3][1], "22P03")]


KV = """
syntax = "proto3";
package kv;
message Key { int64 id = 1; }
message Row { int64 id = 1; string v = 2; }
"""


@pytest.mark.timeout(120)
def test_upsert_with_protobuf_keys_and_tombstones(fresh_db, topic_factory, schema_registry):
    topic = topic_factory(1)
    sid = register_schema(f"{topic}-value", KV, "PROTOBUF")
    key = lambda i: framed(sid, [0], f_int(1, i))  # noqa: E731
    val = lambda i, v: framed(sid, [1], f_int(1, i) + f_bytes(2, v))  # noqa: E731
    first = [(key(1), val(1, "a")), (key(2), val(2, "b")), (key(3), val(3, "c")), (key(1), val(1, "a2")),
             (key(2), None), (key(9), None)]
    produce(topic, [v for _, v in first], keys=[k for k, _ in first])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", [schema_registry])
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'kv', format := 'protobuf', start_offset := -2, "
                     "mode := 'upsert', key_format := 'protobuf')", [topic])
    wait_until(lambda: query(fresh_db, "SELECT id, v FROM kv ORDER BY id") == [(1, "a2"), (3, "c")],
               timeout=90, what="the upserts and tombstones of the first batch")
    # A later batch: a tombstone of a stored row, a value again, a tombstone whose key is corrupt.
    produce(topic, [None, val(2, "b2"), None], keys=[key(3), key(2), framed(sid, [0], b"\x08")])
    wait_until(lambda: query(fresh_db, "SELECT id, v FROM kv ORDER BY id") == [(1, "a2"), (2, "b2")],
               timeout=60, what="the second batch applied")
    letters = query(fresh_db, "SELECT key, sqlstate FROM pipeline_kafka.dead_letters")
    assert [(bytes(k), s) for k, s in letters] == [(framed(sid, [0], b"\x08"), "22P03")]
