"""format := 'raw', end to end: the whole message value is the one column not filled by metadata.
bytea takes any bytes (NUL, backslashes, every byte value) unchanged; text takes UTF-8 text and
dead-letters anything else (22021) with its raw bytes; json/jsonb take valid JSON and dead-letter
the rest with COPY's own error (22P02). An empty message is the empty value; a tombstone makes no
row. consume_begin refuses raw options and relation shapes it cannot fill.

Every wait is bounded (wait_until) and rows are compared exactly.
"""
from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, wait_until


def _begin(conn, topic: str, table: str, **kw) -> int:
    conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s, format := 'raw', start_offset := -2{args})",
                        [topic, table] + [kw[n] for n in names]).fetchone()[0]


def _handled(db: str, n: int) -> None:
    """Every one of n messages is a row or a dead letter, and the offsets say all n were read."""
    wait_until(lambda: scalar(db, "SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets") == n,
               timeout=60, what=f"{n} offsets committed")


@pytest.mark.timeout(120)
def test_bytea_round_trips_any_bytes(fresh_db, topic_factory):
    topic = topic_factory(1)
    values = [bytes(range(256)), b"\x00", b"\\", b"\\x41", b"a\tb\nc\r\\.\n", b"\\N", b"", "ünï".encode()]
    sent = produce(topic, values + [None])  # the tombstone makes no row
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE r (v bytea)")
        _begin(conn, topic, "r")
    _handled(fresh_db, len(sent))
    got = [bytes(r[0]) for r in query(fresh_db, "SELECT v FROM r")]
    assert sorted(got) == sorted(values)
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_text_takes_utf8_and_dead_letters_the_rest(fresh_db, topic_factory):
    topic = topic_factory(1)
    good = ["plain", "tab\there\nnewline \\ back\\slash \\N \\.", "ünïcödé ✓", ""]
    bad = [b"\xff\xfe", b"nul\x00byte", b"\xc3\x28"]
    sent = produce(topic, [g.encode() for g in good[:2]] + bad[:1] + [g.encode() for g in good[2:]] + bad[1:])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE r (v text, off bigint)")
        _begin(conn, topic, "r", metadata=Jsonb({"offset": "off"}))
    _handled(fresh_db, len(sent))
    assert sorted(r[0] for r in query(fresh_db, "SELECT v FROM r")) == sorted(good)
    letters = query(fresh_db, "SELECT value, sqlstate FROM pipeline_kafka.dead_letters ORDER BY \"offset\"")
    assert [(bytes(v), s) for v, s in letters] == [(b, "22021") for b in bad]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("typ", ["jsonb", "json"])
def test_json_columns_take_valid_json_only(fresh_db, topic_factory, typ):
    topic = topic_factory(1)
    good = ['{"a": [1, 2.50, {"b": null}]}', "[1, 2]", '"s"', "123456789012345678901234567890", "null"]
    bad = ["{not json", "", "[1,"]
    produce(topic, good[:2] + bad[:1] + good[2:] + bad[1:])
    with pg_connect(fresh_db) as conn:
        conn.execute(f"CREATE TABLE r (v {typ}, part int)")
        _begin(conn, topic, "r", metadata=Jsonb({"partition": "part"}))
    _handled(fresh_db, len(good) + len(bad))
    got = sorted(r[0] for r in query(fresh_db, "SELECT v::text FROM r"))
    if typ == "json":
        want = sorted(good)   # json keeps the text exactly
    else:
        want = sorted(scalar(fresh_db, "SELECT %s::jsonb::text", [g]) for g in good)
    assert got == want
    assert scalar(fresh_db, "SELECT v::text FROM r WHERE v::text LIKE '1234%%'") == "123456789012345678901234567890"
    letters = query(fresh_db, "SELECT value, sqlstate FROM pipeline_kafka.dead_letters ORDER BY \"offset\"")
    assert [(bytes(v).decode(), s) for v, s in letters] == [(b, "22P02") for b in bad]


@pytest.mark.parametrize("table, kw, sqlstate", [
    ("CREATE TABLE r (a bytea, b text)", {}, "42P10"),
    ("CREATE TABLE r (a bytea, off bigint, b text)", {"metadata": Jsonb({"offset": "off"})}, "42P10"),
    ("CREATE TABLE r (off bigint)", {"metadata": Jsonb({"offset": "off"})}, "42P10"),
    ("CREATE TABLE r (a bytea)", {"delimiter": ","}, "22023"),
    ("CREATE TABLE r (a bytea)", {"quote": "'"}, "22023"),
    ("CREATE TABLE r (a bytea)", {"escape": "\\"}, "22023"),
    ("CREATE TABLE r (a bytea)", {"columns": ["a"]}, "22023"),
])
def test_consume_begin_refuses(fresh_db, table, kw, sqlstate):
    with pg_connect(fresh_db) as conn:
        conn.execute(table)
        with pytest.raises(psycopg.Error) as err:
            _begin(conn, "topic", "r", **kw)
        assert err.value.sqlstate == sqlstate, err.value


@pytest.mark.timeout(120)
def test_kinesis_raw_text_and_dead_letters(fresh_db, stream_factory, log_mark):
    """The same rules on the Kinesis side: each record's data is the value; a record that is not
    UTF-8 is a dead letter with its raw bytes."""
    from pihelpers import kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records, wait_table_rows
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(1)
    sent = kinesis_put_records(stream, [("a", "line one\nline\ttwo \\"), ("b", b"\xff\xfe"), ("c", "✓")])
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE kr (body text, seq text)")
        kinesis_consume_begin(conn, "local", stream, "kr", format="raw", start_offset=-2,
                              metadata=Jsonb({"sequence_number": "seq"}))
    wait_table_rows(db, "kr", 2, log_mark=log_mark)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 1, timeout=30,
               what="the dead letter")
    assert query(db, "SELECT body, seq FROM kr ORDER BY seq") == [("line one\nline\ttwo \\", sent[0][1]),
                                                                   ("✓", sent[2][1])]
    (data, sqlstate, seq), = query(db, "SELECT data, sqlstate, sequence_number FROM pipeline_kinesis.dead_letters")
    assert (bytes(data), sqlstate, seq) == (b"\xff\xfe", "22021", sent[1][1])
