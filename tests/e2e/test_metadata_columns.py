"""Metadata columns (consume_begin's `metadata`), end to end against Kafka and kinesalite: every
field lands in its column for every row a message becomes, in every format (text, csv, json, raw);
partitions and offsets equal what the broker assigned, timestamps the producer's, headers an
object (repeated names as arrays, null values as null, non-UTF-8 values as {"hex": ...}); a key
that is not UTF-8 for a text column is a dead letter; tombstones still make no row; Kinesis shard
ids and sequence numbers equal what PutRecords returned. consume_begin's refusals with their
SQLSTATEs (more in pg_regress/sql/10_metadata.sql).

Every wait is bounded (wait_until) and rows are compared exactly.
"""
from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records,
                       pg_connect, query, scalar, wait_table_rows, wait_until)

KAFKA_META = {"topic": "src", "partition": "part", "offset": "off", "key": "k", "timestamp": "ts", "headers": "h"}
META_COLUMNS = "src text, part int, off bigint, k bytea, ts timestamptz, h jsonb"


def produce_full(topic: str, msgs: list[dict], timeout: float = 30.0) -> list[tuple[int, int]]:
    """Produce messages with their own partition, key, timestamp (ms) and headers; returns
    [(partition, offset)] as the broker assigned them, in order."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "acks": "all", "enable.idempotence": True})
    results: list = [None] * len(msgs)

    def cb(i):
        def _cb(err, msg):
            results[i] = err if err is not None else (msg.partition(), msg.offset())
        return _cb

    for i, m in enumerate(msgs):
        kw = {k: m[k] for k in ("key", "partition", "timestamp", "headers") if m.get(k) is not None}
        p.produce(topic, value=m.get("value"), on_delivery=cb(i), **kw)
    assert p.flush(timeout) == 0
    assert all(isinstance(r, tuple) for r in results), results
    return results


def ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc)


def begin(conn, topic: str, table: str, **kw) -> int:
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s, start_offset := -2{args})",
                        [topic, table] + [kw[n] for n in names]).fetchone()[0]


HEADERS_0 = [("a", b"1"), ("b", None), ("a", b"2"), ("bin", b"\xff\x00"), ("a", None)]
HEADERS_0_JSON = {"a": ["1", "2", None], "b": None, "bin": {"hex": "ff00"}}

# (format, table's data columns, message values, rows (data columns) per message)
CASES = {
    "text": ("id int, v text", [b"1\tone", b"2\ttwo\n3\tth\\tree", b"4\tfour"],
             [[(1, "one")], [(2, "two"), (3, "th\tree")], [(4, "four")]]),
    "csv": ("id int, v text", [b"1,one", b'2,two\n3,"th,ree"', b"4,four"],
            [[(1, "one")], [(2, "two"), (3, "th,ree")], [(4, "four")]]),
    "json": ("id int, v text", [b'{"id": 1, "v": "one"}', b'[{"id": 2, "v": "two"}, {"v": "three", "id": 3}]',
                                b'{"id": 4, "v": "four", "extra": true}'],
             [[(1, "one")], [(2, "two"), (3, "three")], [(4, "four")]]),
    "raw": ("v text", [b"one", b"two\nthree\t3", b"four\\"], [[("one",)], [("two\nthree\t3",)], [("four\\",)]]),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", list(CASES))
def test_every_kafka_field_in_every_format(fresh_db, topic_factory, fmt):
    data_columns, values, rows = CASES[fmt]
    topic = topic_factory(2)
    msgs = [
        dict(value=values[0], partition=0, key=b"k\x00\\\xff", timestamp=1_700_000_000_123, headers=HEADERS_0),
        dict(value=values[1], partition=1, timestamp=1_600_000_000_000),  # no key, no headers
        dict(value=None, partition=1, key=b"gone", timestamp=1_600_000_000_001),  # a tombstone: no row
        dict(value=values[2], partition=1, key=b"plain", timestamp=1_650_000_000_999, headers=[("x", b"y\tz\\\"")]),
    ]
    sent = produce_full(topic, msgs)
    expect_meta = [
        (topic, sent[0][0], sent[0][1], b"k\x00\\\xff", ts(1_700_000_000_123), HEADERS_0_JSON),
        (topic, sent[1][0], sent[1][1], None, ts(1_600_000_000_000), {}),
        None,
        (topic, sent[3][0], sent[3][1], b"plain", ts(1_650_000_000_999), {"x": "y\tz\\\""}),
    ]
    with pg_connect(fresh_db) as conn:
        conn.execute(f"CREATE TABLE t ({data_columns}, {META_COLUMNS})")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        begin(conn, topic, "t", format=fmt, metadata=Jsonb(KAFKA_META))
    # The tombstone's partition is committed past it: the positive marker that it was read.
    wait_until(lambda: scalar(fresh_db, "SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets") == 4,
               timeout=60, what="every offset committed")
    data = data_columns.split(", ")
    names = ", ".join(c.split()[0] for c in data)
    got = query(fresh_db, f"SELECT {names}, src, part, off, k, ts, h FROM t ORDER BY part, off, {names}")
    want = []
    for i in (0, 1, 3):
        for r in rows[i if i < 2 else 2]:
            meta = expect_meta[i]
            want.append((*r, meta[0], meta[1], meta[2], meta[3], meta[4], meta[5]))
    want.sort(key=lambda r: (r[-5], r[-4], r[:len(data)]))
    assert [(*r[:-3], bytes(r[-3]) if r[-3] is not None else None, *r[-2:]) for r in got] == want
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_text_key_column_and_invalid_keys(fresh_db, topic_factory):
    """A key goes into a text column as its text; a key that is not UTF-8 (or holds NUL) makes the
    message a dead letter (22021) with its raw bytes; no key is NULL."""
    topic = topic_factory(1)
    sent = produce_full(topic, [
        dict(value=b"1", key="ключ".encode()),
        dict(value=b"2", key=b"\xc3\x28"),
        dict(value=b"3"),
        dict(value=b"4", key=b"a\x00b"),
        dict(value=b"5", key=b"tab\there"),
    ])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, k text, off bigint)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        begin(conn, topic, "t", metadata=Jsonb({"key": "k", "offset": "off"}))
    wait_until(lambda: scalar(fresh_db, "SELECT (SELECT count(*) FROM t) + "
                                        "(SELECT count(*) FROM pipeline_kafka.dead_letters)") == 5,
               timeout=60, what="all five messages handled")
    assert query(fresh_db, "SELECT id, k, off FROM t ORDER BY id") == [
        (1, "ключ", sent[0][1]), (3, None, sent[2][1]), (5, "tab\there", sent[4][1])]
    letters = query(fresh_db, "SELECT \"offset\", sqlstate, value, key FROM pipeline_kafka.dead_letters ORDER BY 1")
    assert [(r[0], r[1], bytes(r[2]), bytes(r[3])) for r in letters] == [
        (sent[1][1], "22021", b"2", b"\xc3\x28"), (sent[3][1], "22021", b"4", b"a\x00b")]


@pytest.mark.timeout(120)
def test_text_without_column_list_fills_the_other_columns_in_order(fresh_db, topic_factory):
    """Metadata columns may stand anywhere; the fields fill the remaining columns in order, and a
    custom delimiter does not disturb the metadata values (which contain it)."""
    topic = topic_factory(1)
    sent = produce_full(topic, [dict(value=b"1|a", key=b"x|y", timestamp=1_700_000_000_000)])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (k text, id int, ts timestamptz, v text, src text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        begin(conn, topic, "t", format="text", delimiter="|",
              metadata=Jsonb({"key": "k", "timestamp": "ts", "topic": "src"}))
    wait_table_rows(fresh_db, "t", 1)
    assert query(fresh_db, "SELECT k, id, ts, v, src FROM t") == [("x|y", 1, ts(1_700_000_000_000), "a", topic)]
    assert sent[0][1] == 0


@pytest.mark.parametrize("metadata, sqlstate", [
    ({"bogus": "off"}, "22023"),
    ({"offset": 5}, "22023"),
    ({"offset": "nope"}, "42703"),
    ({"offset": "part"}, "42804"),
    ({"timestamp": "k"}, "42804"),
    ({"offset": "off", "partition": "off"}, "42701"),
])
def test_consume_begin_refuses_bad_mappings(fresh_db, metadata, sqlstate):
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, part int, off bigint, k text)")
        with pytest.raises(psycopg.Error) as err:
            begin(conn, "topic", "t", metadata=Jsonb(metadata))
        assert err.value.sqlstate == sqlstate, err.value
        conn.rollback()
        # a listed column cannot also be a metadata column
        with pytest.raises(psycopg.Error) as err:
            begin(conn, "topic", "t", columns=["id", "off"], metadata=Jsonb({"offset": "off"}))
        assert err.value.sqlstate == "42701"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_kinesis_metadata(fresh_db, stream_factory, log_mark, fmt):
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(2)
    values = {"text": ["1", "2\n3", "4"], "json": ['{"id": 1}', '[{"id": 2}, {"id": 3}]', '{"id": 4}']}[fmt]
    before = dt.datetime.now(dt.timezone.utc)
    sent = kinesis_put_records(stream, [("pk-a", values[0]), ("pk-b", values[1]), ("ключ", values[2])])
    after = dt.datetime.now(dt.timezone.utc)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE kt (id int, s text, shard text, seq numeric, pk text, at timestamptz)")
        kinesis_consume_begin(conn, "local", stream, "kt", format=fmt, start_offset=-2, metadata=Jsonb(
            {"stream": "s", "shard_id": "shard", "sequence_number": "seq", "partition_key": "pk",
             "arrival_time": "at"}))
    wait_table_rows(db, "kt", 4, log_mark=log_mark)
    rows = query(db, "SELECT id, s, shard, seq::text, pk, at FROM kt ORDER BY id")
    record_of = {1: 0, 2: 1, 3: 1, 4: 2}
    pks = ["pk-a", "pk-b", "ключ"]
    for (rid, s, shard, seq, pk, at) in rows:
        r = record_of[rid]
        assert (s, shard, seq, pk) == (stream, sent[r][0], sent[r][1], pks[r]), rows
        # kinesalite's approximate arrival time, in ms; a second of slack for its rounding
        assert before - dt.timedelta(seconds=1) <= at <= after + dt.timedelta(seconds=1), (at, before, after)


@pytest.mark.timeout(120)
def test_kinesis_partition_key_as_bytea_and_sequence_as_text(fresh_db, stream_factory, log_mark):
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(1)
    sent = kinesis_put_records(stream, [("key\\1", b"\x00\x01raw\\")])
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE kr (v bytea, pk bytea, seq text)")
        kinesis_consume_begin(conn, "local", stream, "kr", format="raw", start_offset=-2,
                              metadata=Jsonb({"partition_key": "pk", "sequence_number": "seq"}))
    wait_table_rows(db, "kr", 1, log_mark=log_mark)
    (v, pk, seq), = query(db, "SELECT v, pk, seq FROM kr")
    assert (bytes(v), bytes(pk), seq) == (b"\x00\x01raw\\", b"key\\1", sent[0][1])


@pytest.mark.timeout(120)
def test_dropped_metadata_column_stalls_and_recovers(fresh_db, topic_factory):
    """A metadata column dropped after consume_begin is not a data error: the batch fails, the
    error shows in last_error, nothing is dead-lettered or skipped, and once the column is back the
    message goes in with its offset."""
    topic = topic_factory(1)
    produce_full(topic, [dict(value=b"1")])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, off bigint)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        begin(conn, topic, "t", metadata=Jsonb({"offset": "off"}))
    wait_table_rows(fresh_db, "t", 1)
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE t DROP COLUMN off")
    sent = produce_full(topic, [dict(value=b"2")])
    wait_until(lambda: "42703" in (scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers") or ""),
               timeout=60, what="the missing column in last_error")
    assert scalar(fresh_db, "SELECT count(*) FROM t") == 1
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE t ADD COLUMN off bigint")
    wait_table_rows(fresh_db, "t", 2, timeout=90)
    assert query(fresh_db, "SELECT id, off FROM t WHERE id = 2") == [(2, sent[0][1])]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
