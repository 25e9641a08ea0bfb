"""format := 'json' into a relation whose only column (besides metadata columns) is json or jsonb:
each message's JSON value (object, array, scalar) is that column's value, one row per message,
exactly as written (pipeline_kafka's json format). With more columns, fields are matched to
columns by name as before. Includes the port of pipeline_kafka's own test_consume_json scenario
(a stream with one `payload json` column and continuous views over it: here a table and views).

Every wait is bounded (wait_until) and rows are compared exactly.
"""
from __future__ import annotations

import json

import pytest
from psycopg.types.json import Jsonb

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, wait_until

MESSAGES = [
    '{"x": 1, "nested": {"k": "v1"}, "array": [1, 1, 1]}',
    '[1, "two", {"three": [3.0]}]',
    '{"big": 123456789012345678901234567890, "small": 0.1234567890123456789, "exp": 1E+2, "neg": -0}',
    '"just a string\\twith an escape"',
    "42.50",
    "true",
    "null",
    '{"dup": 1, "dup": 2}',
]


def _begin(conn, topic: str, table: str, **kw) -> int:
    conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s, format := 'json', start_offset := -2{args})",
                        [topic, table] + [kw[n] for n in names]).fetchone()[0]


def _offsets(db: str, n: int) -> None:
    wait_until(lambda: scalar(db, "SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets") == n,
               timeout=60, what=f"{n} offsets committed")


@pytest.mark.timeout(120)
def test_json_column_keeps_each_message_exactly(fresh_db, topic_factory):
    topic = topic_factory(1)
    sent = produce(topic, MESSAGES + ["", None, "{broken"])  # empty and tombstone: no row
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE j (payload json)")
        _begin(conn, topic, "j")
    _offsets(fresh_db, len(sent))
    assert sorted(r[0] for r in query(fresh_db, "SELECT payload::text FROM j")) == sorted(MESSAGES)
    letters = query(fresh_db, "SELECT value, sqlstate FROM pipeline_kafka.dead_letters")
    assert [(bytes(v), s) for v, s in letters] == [(b"{broken", "22P02")]


@pytest.mark.timeout(120)
def test_jsonb_column_with_metadata_and_exact_numbers(fresh_db, topic_factory):
    topic = topic_factory(1)
    sent = produce(topic, MESSAGES)
    with pg_connect(fresh_db) as conn:
        # the offset column is metadata: payload is still the only data column
        conn.execute("CREATE TABLE j (off bigint, payload jsonb)")
        _begin(conn, topic, "j", metadata=Jsonb({"offset": "off"}))
    _offsets(fresh_db, len(sent))
    rows = query(fresh_db, "SELECT off, payload::text FROM j ORDER BY off")
    assert [r[0] for r in rows] == [off for _, off in sent]
    assert [r[1] for r in rows] == [scalar(fresh_db, "SELECT %s::jsonb::text", [m]) for m in MESSAGES]
    big = scalar(fresh_db, "SELECT payload->>'big' FROM j WHERE payload ? 'big'")
    assert big == "123456789012345678901234567890"
    assert scalar(fresh_db, "SELECT payload->>'small' FROM j WHERE payload ? 'big'") == "0.1234567890123456789"
    assert scalar(fresh_db, "SELECT jsonb_typeof(payload) FROM j WHERE payload = '[1, \"two\", {\"three\": [3.0]}]'") == "array"


@pytest.mark.timeout(120)
def test_more_columns_keep_field_mapping(fresh_db, topic_factory):
    """A json column next to another data column: fields match columns by name, as before."""
    topic = topic_factory(1)
    sent = produce(topic, ['{"id": 1, "payload": {"a": [1, 2]}}', '{"id": 2, "payload": [3], "other": 0}',
                           "[1, 2]"])  # an array of non-objects is bad data here
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE j (id int, payload jsonb)")
        _begin(conn, topic, "j")
    _offsets(fresh_db, len(sent))
    assert query(fresh_db, "SELECT id, payload::text FROM j ORDER BY id") == [(1, '{"a": [1, 2]}'), (2, "[3]")]
    assert [r[0] for r in query(fresh_db, "SELECT sqlstate FROM pipeline_kafka.dead_letters")] == ["22P02"]


@pytest.mark.timeout(180)
def test_original_json_scenario(fresh_db, topic_factory):
    """pipeline_kafka test_consume_json: 200 JSON objects into a stream with one `payload json`
    column; a count view and an unpacking view over it (continuous views there, views here)."""
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE json_stream (payload json)")
        conn.execute("CREATE VIEW count_cv AS SELECT (payload->>'x')::integer AS x, count(*) "
                     "FROM json_stream GROUP BY x")
        conn.execute("CREATE VIEW unpack_cv AS SELECT (payload#>>'{nested,k}')::text AS k, "
                     "json_array_elements_text(payload->'array') AS el FROM json_stream")
        _begin(conn, topic, "json_stream")
    msgs = []
    for n in range(200):
        x = n % 100
        msgs.append(json.dumps({"x": x, "nested": {"k": "v%d" % x}, "array": [x, x, x]}))
    produce(topic, msgs)
    wait_until(lambda: scalar(fresh_db, "SELECT sum(count) FROM count_cv") == 200, timeout=60,
               what="200 messages counted")
    assert scalar(fresh_db, "SELECT count(*) FROM count_cv") == 100
    assert scalar(fresh_db, "SELECT count(*) FROM unpack_cv") == 600
    assert scalar(fresh_db, "SELECT count(DISTINCT k) FROM unpack_cv") == 100
    for k, el in query(fresh_db, "SELECT k, el FROM unpack_cv"):
        assert k.replace("v", "") == el
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
