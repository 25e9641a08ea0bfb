"""Kinesis consuming, end to end: each format (text, csv, json) into tables, one record = one
message, with the same rules as the Kafka consumer (README "Formats"): several lines per record,
NULLs, quoting, a column list with defaults, json objects and arrays, exact numbers, nested
values, extra fields ignored.

Every wait is bounded (wait_until); the expected rows are compared exactly.
"""
from __future__ import annotations

import pytest

from pihelpers import (kinesis_add_endpoint, kinesis_consume_begin, pipeline_diag, kinesis_put_records,
                       kinesis_seqnums, pg_connect, query, scalar, wait_table_rows)


def _start(db: str, stream: str, table: str, **kw) -> int:
    with pg_connect(db) as conn:
        return kinesis_consume_begin(conn, "local", stream, table, start_offset=-2, **kw)


def _caught_up(db: str, cid: int, sent: list[tuple[str, str]]) -> None:
    """The stored checkpoint of every shard is the last record put into it: the checkpoint
    commits with the rows, so once every row is in, nothing is left to read."""
    last: dict[str, str] = {}
    for shard, seq in sent:
        last[shard] = seq
    got = {s: v[0] for s, v in kinesis_seqnums(db, cid).items() if s in last}
    assert got == last, f"checkpoints {got}, last records {last}{pipeline_diag(db)}"


@pytest.mark.timeout(120)
def test_text_format(stream_factory, fresh_db, log_mark):
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(1)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t_tab (id int, v text, tag text DEFAULT 'dflt')")
        conn.execute("CREATE TABLE t_pipe (id int, v text, tag text DEFAULT 'dflt')")
    stream2, _ = stream_factory(1)
    sent = kinesis_put_records(stream, [
        ("a", "1\talpha\tt1"),
        ("b", "2\tbeta\t\\N\n3\tgamma\tt3\n"),     # two lines = two rows; \N = NULL
        ("c", "4\ttab\\there\tt4"),                # \t escape inside a value
        ("a", "5\tback\\\\slash\tt5"),             # escaped backslash
        ("b", "6\t\\N\tt6\r\n7\t\tt7"),            # CRLF line end; NULL vs empty value
    ])
    sent2 = kinesis_put_records(stream2, [("x", "10|a b|t10"), ("y", "11|c\\|d|\\N")])
    cid = _start(db, stream, "t_tab", format="text")
    cid2 = _start(db, stream2, "t_pipe", format="text", delimiter="|", columns=["id", "v", "tag"])
    wait_table_rows(db, "t_tab", 7, log_mark=log_mark)
    wait_table_rows(db, "t_pipe", 2, log_mark=log_mark)
    assert query(db, "SELECT id, v, tag FROM t_tab ORDER BY id") == [
        (1, "alpha", "t1"), (2, "beta", None), (3, "gamma", "t3"), (4, "tab\there", "t4"),
        (5, "back\\slash", "t5"), (6, None, "t6"), (7, "", "t7")]
    assert query(db, "SELECT id, v, tag FROM t_pipe ORDER BY id") == [(10, "a b", "t10"), (11, "c|d", None)]
    _caught_up(db, cid, sent)
    _caught_up(db, cid2, sent2)


@pytest.mark.timeout(120)
def test_csv_format_with_column_list(stream_factory, fresh_db, log_mark):
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(1)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE c (id int, v text, src text DEFAULT 'kinesis', at timestamptz DEFAULT now())")
        conn.execute("CREATE TABLE c_semi (id int, v text)")
    sent = kinesis_put_records(stream, [
        ("k1", "1,plain"),
        ("k2", '2,"quoted, comma"\n3,'),               # two rows; unquoted empty = NULL
        ("k3", '4,""'),                                # quoted empty = ''
        ("k1", '5,"line1\nline2"'),                    # quoted newline: ONE row
        ("k2", '6,"say ""hi"""\n'),                    # doubled quote; final newline
    ])
    stream2, _ = stream_factory(1)
    sent2 = kinesis_put_records(stream2, [("k", "20;a,b"), ("k", '21;"x;y"\n22;')])
    cid = _start(db, stream, "c", format="csv", columns=["id", "v"])
    cid2 = _start(db, stream2, "c_semi", format="csv", delimiter=";")
    wait_table_rows(db, "c", 6, log_mark=log_mark)
    wait_table_rows(db, "c_semi", 3, log_mark=log_mark)
    assert query(db, "SELECT id, v, src, at IS NOT NULL FROM c ORDER BY id") == [
        (1, "plain", "kinesis", True), (2, "quoted, comma", "kinesis", True), (3, None, "kinesis", True),
        (4, "", "kinesis", True), (5, "line1\nline2", "kinesis", True), (6, 'say "hi"', "kinesis", True)]
    assert query(db, "SELECT id, v FROM c_semi ORDER BY id") == [(20, "a,b"), (21, "x;y"), (22, None)]
    _caught_up(db, cid, sent)
    _caught_up(db, cid2, sent2)


@pytest.mark.timeout(120)
def test_json_format(stream_factory, fresh_db, log_mark):
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(1)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE j (id int, amount numeric, big numeric, doc jsonb, note text DEFAULT 'dflt', "
                     "ok boolean)")
    sent = kinesis_put_records(stream, [
        ("a", '{"id": 1, "amount": 1.50, "ok": true, "extra": "ignored"}'),
        ("b", '[{"id": 2, "note": null}, {"id": 3, "doc": {"x": [1, 2.50], "y": "z"}}]'),
        ("c", '{"id": 4, "big": 123456789012345678901234567890.0123456789, "note": "multi\\nline"}'),
        ("a", '{"id": 5, "doc": [1, {"a": null}], "ok": false}'),
    ])
    cid = _start(db, stream, "j", format="json")
    wait_table_rows(db, "j", 5, log_mark=log_mark)
    rows = query(db, "SELECT id, amount::text, big::text, doc::text, note, ok FROM j ORDER BY id")
    assert rows == [
        (1, "1.50", None, None, "dflt", True),
        (2, None, None, None, None, None),                  # JSON null gives NULL, not the default
        (3, None, None, '{"x": [1, 2.50], "y": "z"}', "dflt", None),
        (4, None, "123456789012345678901234567890.0123456789", None, "multi\nline", None),
        (5, None, None, '[1, {"a": null}]', "dflt", False),
    ]
    _caught_up(db, cid, sent)
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0
