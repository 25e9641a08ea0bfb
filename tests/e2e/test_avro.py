"""format := 'avro': Confluent-framed Avro, each writer schema fetched once by id from the schema
registry (Apicurio), record fields into the columns of the same name. Every logical type loads
exactly; a second schema version mid-stream just works; an unknown schema id, a corrupt body and a
value that does not fit its column are exactly the dead letters (raw bytes, SQLSTATE); a registry
that is down is an outage: the consumer waits with last_error set, nothing is dead-lettered or
lost. Kinesis reads the same bytes."""
from __future__ import annotations

import datetime as dt
import io
import uuid
from decimal import Decimal

import fastavro
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, confluent_frame, kinesis_add_endpoint, kinesis_consume_begin,
                       kinesis_create_stream, kinesis_put_records, pg_connect, produce, query,
                       register_schema, registry_is_up, run_services, scalar, unique_name,
                       wait_until)

pytestmark = pytest.mark.timeout(240)


def avro(schema_id: int, schema: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return confluent_frame(schema_id, buf.getvalue())


def _record(name: str, fields: list) -> dict:
    return {"type": "record", "name": name, "namespace": "pi.test", "fields": fields}


def _begin(conn, topic: str, table: str, **opts) -> int:
    conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    extra = "".join(f", {k} := %({k})s" for k in opts)
    return conn.execute(
        f"SELECT pipeline_kafka.consume_begin(%(topic)s, %(table)s, format := 'avro', start_offset := -2{extra})",
        dict(topic=topic, table=table, **opts)).fetchone()[0]


def _add_registry(conn, url: str) -> None:
    conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (url,))


def _done(db: str, table: str, n: int, dead_letters_table: str = "pipeline_kafka.dead_letters"):
    return wait_until(lambda: scalar(db, f"SELECT (SELECT count(*) FROM {table}) + (SELECT count(*) FROM {dead_letters_table})") >= n,
                      timeout=90, what=f"{n} messages in {table} or the dead letters")


DECIMAL_60 = Decimal("-123456789012345678901234567890123456789012345678.901234567890")
LOGICAL = _record("Everything", [
    {"name": "id", "type": "long"},
    {"name": "i", "type": "int"},
    {"name": "f", "type": "float"},
    {"name": "d", "type": "double"},
    {"name": "b", "type": "boolean"},
    {"name": "s", "type": "string"},
    {"name": "raw", "type": "bytes"},
    {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 4}},
    {"name": "bigdec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 60, "scale": 12}},
    {"name": "fdec", "type": {"type": "fixed", "name": "Dec16", "size": 16, "logicalType": "decimal", "precision": 38, "scale": 0}},
    {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "tsm", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "lts", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
    {"name": "ltsm", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
    {"name": "day", "type": {"type": "int", "logicalType": "date"}},
    {"name": "tm", "type": {"type": "long", "logicalType": "time-micros"}},
    {"name": "tmm", "type": {"type": "int", "logicalType": "time-millis"}},
    {"name": "u", "type": {"type": "string", "logicalType": "uuid"}},
    {"name": "dur", "type": {"type": "fixed", "name": "Dur", "size": 12, "logicalType": "duration"}},
    {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"]}},
    {"name": "opt", "type": ["null", "int"], "default": None},
    {"name": "nested", "type": _record("Inner", [{"name": "x", "type": "int"},
                                                 {"name": "amt", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}}])},
    {"name": "m", "type": {"type": "map", "values": "long"}},
    {"name": "tags", "type": {"type": "array", "items": "string"}},
    {"name": "nums", "type": {"type": "array", "items": ["null", "int"]}},
    {"name": "arrj", "type": {"type": "array", "items": "string"}},
    {"name": "extra_field", "type": "string"},
])
TABLE = """CREATE TABLE everything (
  id bigint, i int, f real, d double precision, b boolean, s text, raw bytea, fx bytea,
  dec numeric, bigdec numeric, fdec numeric(38,0), ts timestamptz, tsm timestamptz, lts timestamp,
  ltsm timestamp, day date, tm time, tmm time, u uuid, dur interval, e text, opt int,
  nested jsonb, m json, tags text[], nums int[], arrj jsonb, absent text DEFAULT 'dflt')"""


def _everything(i: int) -> dict:
    return {
        "id": i, "i": -2147483648, "f": 0.5, "d": 1.0e300, "b": True, "s": "tab\there \"q\" é",
        "raw": b"\x00\xff\\", "fx": b"\x01\x02\x03\x04",
        "dec": Decimal("-1234567890123456.7891"), "bigdec": DECIMAL_60,
        "fdec": Decimal("99999999999999999999999999999999999999"),
        "ts": dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.timezone.utc),
        "tsm": dt.datetime(1969, 7, 20, 20, 17, 40, 123000, tzinfo=dt.timezone.utc),
        "lts": dt.datetime(2000, 1, 1, 0, 0, 0, 1), "ltsm": dt.datetime(1999, 12, 31, 23, 59, 59, 999000),
        "day": dt.date(1, 1, 1), "tm": dt.time(23, 59, 59, 999999), "tmm": dt.time(12, 34, 56, 789000),
        "u": uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
        "dur": (14).to_bytes(4, "little") + (3).to_bytes(4, "little") + (86_400_123).to_bytes(4, "little"),
        "e": "GREEN", "opt": None if i % 2 else i,
        "nested": {"x": i, "amt": Decimal("-0.05")}, "m": {"k\"1": 1, "k2": -2},
        "tags": ["a,b", "c\"d", "{e}"], "nums": [1, None, 3], "arrj": ["x", "y"], "extra_field": "ignored",
    }


def test_every_logical_type_is_exact(fresh_db, topic_factory, schema_registry):
    topic = topic_factory(1)
    sid = register_schema(f"{topic}-value", LOGICAL)
    produce(topic, [avro(sid, LOGICAL, _everything(i)) for i in (1, 2)])
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE)
        _add_registry(conn, schema_registry)
        _begin(conn, topic, "everything")
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM everything") == 2, timeout=90, what="2 rows")
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
    with pg_connect(fresh_db) as conn:
        conn.execute("SET TimeZone = 'UTC'; SET IntervalStyle = 'postgres'")
        row = conn.execute("SELECT to_jsonb(x) - 'id' - 'opt' FROM everything x WHERE id = 2").fetchone()[0]
        opt = conn.execute("SELECT array_agg(opt ORDER BY id)::text FROM everything").fetchone()[0]
        texts = conn.execute(
            "SELECT dec::text, bigdec::text, fdec::text, ts::text, tsm::text, lts::text, ltsm::text, day::text, "
            "tm::text, tmm::text, dur::text, raw::text, fx::text, tags::text, nums::text, d::text, f::text, "
            "(dur = interval '14 months 3 days 86400.123 seconds')::text FROM everything WHERE id = 2").fetchone()
    assert opt == "{NULL,2}"
    assert texts == (
        "-1234567890123456.7891", str(DECIMAL_60), "99999999999999999999999999999999999999",
        "2024-02-29 23:59:59.999999+00", "1969-07-20 20:17:40.123+00", "2000-01-01 00:00:00.000001",
        "1999-12-31 23:59:59.999", "0001-01-01", "23:59:59.999999", "12:34:56.789",
        "1 year 2 mons 3 days 24:00:00.123", "\\x00ff5c", "\\x01020304", '{"a,b","c\\"d","{e}"}', "{1,NULL,3}",
        "1e+300", "0.5", "true")
    assert row["i"] == -2147483648 and row["b"] is True and row["s"] == 'tab\there "q" é'
    assert row["u"] == "123e4567-e89b-12d3-a456-426614174000" and row["e"] == "GREEN"
    assert row["nested"] == {"x": 2, "amt": -0.05}
    assert row["m"] == {"k\"1": 1, "k2": -2} and row["arrj"] == ["x", "y"]
    assert row["absent"] == "dflt", "a column without a field gets its DEFAULT"


V1 = _record("Person", [{"name": "id", "type": "int"}, {"name": "name", "type": "string"}])
V2 = _record("Person", [{"name": "id", "type": "int"}, {"name": "name", "type": "string"},
                        {"name": "note", "type": ["null", "string"], "default": None},
                        {"name": "small", "type": "long", "default": 0}])


def test_two_versions_and_exactly_the_bad_messages_dead_lettered(fresh_db, topic_factory, schema_registry):
    topic = topic_factory(1)
    v1 = register_schema(f"{topic}-value", V1)
    v2 = register_schema(f"{topic}-value", V2)
    assert v1 != v2
    good_v1 = avro(v1, V1, {"id": 1, "name": "one"})
    bad = [
        (confluent_frame(2_000_000_000, b"\x02\x02x"), "22P02", "schema id 2000000000 not found"),
        (good_v1[:-1], "22P03", "ends early"),
        (good_v1 + b"\x00", "22P03", "1 bytes after the end of the record"),
        (b'{"id": 9, "name": "json"}', "22P02", "magic byte"),
        (avro(v2, V2, {"id": 7, "name": "seven", "note": None, "small": 70000}), "22003", "smallint"),
    ]
    msgs = [good_v1, bad[0][0], avro(v2, V2, {"id": 2, "name": "two", "note": "n2", "small": 2}), bad[1][0],
            avro(v1, V1, {"id": 3, "name": "three"}), bad[2][0], bad[3][0], bad[4][0],
            avro(v2, V2, {"id": 4, "name": "four", "note": None, "small": -4})]
    produce(topic, msgs)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL, note text DEFAULT 'none', small smallint)")
        _add_registry(conn, schema_registry)
        _begin(conn, topic, "people")
    _done(fresh_db, "people", len(msgs))
    assert query(fresh_db, "SELECT id, name, note, small FROM people ORDER BY id") == [
        (1, "one", "none", None), (2, "two", "n2", 2), (3, "three", "none", None), (4, "four", None, -4)]
    letters = query(fresh_db, "SELECT value, sqlstate, error FROM pipeline_kafka.dead_letters ORDER BY \"offset\"")
    assert [(bytes(v), s) for v, s, _ in letters] == [(m, s) for m, s, _ in bad]
    for (_, _, error), (_, _, want) in zip(letters, bad):
        assert want in error, (error, want)
    # A preview of the consumer decodes the same way (its stored registry), from the beginning
    # (the good rows now collide with the stored ones: 23505).
    cid = scalar(fresh_db, "SELECT id FROM pipeline_kafka.consumers")
    shown = query(fresh_db, "SELECT \"offset\", action, sqlstate FROM pipeline_kafka.preview(%s, \"limit\" := 20, "
                            "start_offset := -2) ORDER BY 1", (cid,))
    assert [s for _, _, s in shown] == ["23505", "22P02", "23505", "22P03", "23505", "22P03", "22P02", "22003", "23505"], shown


def test_registry_outage_waits_and_loses_nothing(fresh_db, topic_factory, registry_proxy):
    """The consumer reads the registry through a forwarding proxy (conftest's registry_proxy):
    stopping it is an outage the registry itself never sees, so the schemas stay registered (a
    restarted Apicurio would come back empty: the consumer could meet it before the schemas are
    registered again, and dead-letter the messages as unknown ids). During the outage the batch
    waits with last_error set and nothing is dead-lettered; after it every row arrives."""
    topic = topic_factory(1)
    s1 = _record("A", [{"name": "id", "type": "int"}])
    s2 = _record("A", [{"name": "id", "type": "int"}, {"name": "tag", "type": "string", "default": ""}])
    ids = (register_schema(f"{topic}-value", s1), register_schema(f"{topic}-value", s2))
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE a (id int, tag text)")
        _add_registry(conn, registry_proxy.url())
        cid = _begin(conn, topic, "a")
    # the first version's id is cached by the worker; the second one is fetched during the outage
    produce(topic, [avro(ids[0], s1, {"id": i}) for i in range(10)])
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM a") == 10, timeout=60, what="the first 10 rows")
    registry_proxy.stop()
    try:
        produce(topic, [avro(ids[1], s2, {"id": i, "tag": "v2"}) for i in range(10, 20)])
        error = wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", (cid,)),
                           timeout=60, what="the outage in last_error")
        assert "schema registry" in error and "unavailable" in error, error
        assert scalar(fresh_db, "SELECT count(*) FROM a") == 10
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
    finally:
        registry_proxy.start()
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM a") == 20, timeout=90, what="all 20 rows after the outage")
    assert scalar(fresh_db, "SELECT count(*) FROM a WHERE tag = 'v2'") == 10
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
    wait_until(lambda: scalar(fresh_db, "SELECT last_error IS NULL FROM pipeline_kafka.consumers WHERE id = %s", (cid,)),
               timeout=30, what="last_error cleared")

def test_kinesis_reads_the_same_avro_bytes(fresh_db, schema_registry):
    stream = unique_name("avro")
    kinesis_create_stream(stream, 1)
    sid = register_schema(f"{stream}-value", V2)
    recs = [(f"k{i}", avro(sid, V2, {"id": i, "name": f"n{i}", "note": None, "small": i})) for i in range(5)]
    recs.append(("bad", b"\x00\x00"))
    kinesis_put_records(stream, recs)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE people (id int, name text, note text, small smallint)")
        conn.execute("SELECT pipeline_kinesis.add_schema_registry(%s)" if False else "SELECT pipeline_kafka.add_schema_registry(%s)",
                     (schema_registry,))
        endpoint = kinesis_add_endpoint(fresh_db)
        kinesis_consume_begin(conn, endpoint, stream, "people", format="avro", start_offset=-2)
    _done(fresh_db, "people", len(recs), "pipeline_kinesis.dead_letters")
    assert query(fresh_db, "SELECT id, name, small FROM people ORDER BY id") == [(i, f"n{i}", i) for i in range(5)]
    assert query(fresh_db, "SELECT data, sqlstate FROM pipeline_kinesis.dead_letters") == [(b"\x00\x00", "22P02")]


KEY = _record("Key", [{"name": "id", "type": "long"}])
ROW = _record("Row", [{"name": "id", "type": "long"}, {"name": "v", "type": "string"}])


def test_upsert_with_avro_keys_and_tombstones(fresh_db, topic_factory, schema_registry):
    topic = topic_factory(1)
    kid = register_schema(f"{topic}-key", KEY)
    vid = register_schema(f"{topic}-value", ROW)
    key = lambda i: avro(kid, KEY, {"id": i})  # noqa: E731
    val = lambda i, v: avro(vid, ROW, {"id": i, "v": v})  # noqa: E731
    first = [(key(1), val(1, "a")), (key(2), val(2, "b")), (key(3), val(3, "c")), (key(1), val(1, "a2")),
             (key(2), None), (key(9), None)]
    produce(topic, [v for _, v in first], keys=[k for k, _ in first])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)")
        _add_registry(conn, schema_registry)
        _begin(conn, topic, "kv", mode="upsert", key_format="avro")
    wait_until(lambda: query(fresh_db, "SELECT id, v FROM kv ORDER BY id") == [(1, "a2"), (3, "c")],
               timeout=90, what="the upserts and tombstones of the first batch")
    # A later batch: a tombstone of a stored row, a value again, a tombstone whose key is corrupt.
    produce(topic, [None, val(2, "b2"), None], keys=[key(3), key(2), key(1)[:-1]])
    wait_until(lambda: query(fresh_db, "SELECT id, v FROM kv ORDER BY id") == [(1, "a2"), (2, "b2")],
               timeout=60, what="the second batch applied")
    letters = query(fresh_db, "SELECT key, sqlstate FROM pipeline_kafka.dead_letters")
    assert [(bytes(k), s) for k, s in letters] == [(key(1)[:-1], "22P03")]
