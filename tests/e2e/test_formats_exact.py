"""A message yields exactly the rows COPY would read from it, or goes to the dead letters (issue 11,
items 6 and 11): JSON numbers reach PostgreSQL as their exact text (top level and nested), a value
out of range for its column is a dead letter rather than a rounded row; a text-format `\\.` that
COPY would drop or choke on sends its message to the dead letters with its raw bytes while its
neighbours in the same batch go in intact; an empty message holds no rows in every format.

Every wait is bounded (wait_until); before asserting that nothing else happened, each test waits
for the consumer's stored offset to pass the last message (the batch committed)."""
from __future__ import annotations

import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, wait_until

BIG = "123456789012345678901234567890"
FRACTION = "0.1234567890123456789"


def _consume(conn, topic: str, table: str, fmt: str) -> int:
    return conn.execute(
        "SELECT pipeline_kafka.consume_begin(%s, %s, format := %s, start_offset := -2, batchsize := 1000)",
        (topic, table, fmt)).fetchone()[0]


def _wait_committed(db: str, cid: int, n: int) -> None:
    """Positive marker: the consumer's next offset (single partition) is past all n messages."""
    wait_until(lambda: scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', [cid]) == n,
               timeout=60, what=f"consumer {cid} to commit {n} messages")


def _letters(db: str, cid: int) -> dict[bytes, tuple]:
    rows = query(db, 'SELECT value, "offset", sqlstate, error FROM pipeline_kafka.dead_letters '
                     "WHERE consumer_id = %s", [cid])
    return {bytes(r[0]): (r[1], r[2], r[3]) for r in rows}


@pytest.mark.timeout(120)
def test_json_numbers_are_exact_and_out_of_range_is_a_dead_letter(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(1)
    msgs = [
        # Issue 11 item 6, verbatim: stored as 123456789012345680000000000000 before.
        f'{{"id": 1, "n": {BIG}, "t": {BIG}, "j": {{"big": {BIG}, "frac": {FRACTION}}}, "js": [{BIG}, 1.0, -0]}}',
        f'{{"id": 2, "n": {FRACTION}, "t": {FRACTION}, "d": 0.1}}',
        '{"id": 3, "n": 1e400, "t": 1e400, "js": {"x": 1e400, "y": 1.0, "z": -0}}',
        '{"id": 4, "t": -0, "d": -0, "js": 1.0}',
        '{"id": 5, "d": 1e400}',                      # out of range for double precision: 22003
        f'{{"id": 6, "i": {BIG}}}',                   # out of range for bigint: 22003
        '[{"id": 7, "t": 1E+2}, {"id": 8, "n": -0.000000000000000000001}]',
    ]
    sent = produce(topic, msgs)  # all before consume_begin: one batch
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE nums (id int, n numeric, t text, j jsonb, js json, d double precision, i bigint)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        cid = _consume(conn, topic, "nums", "json")
    _wait_committed(db, cid, len(msgs))

    rows = query(db, "SELECT id, n::text, t, j::text, js::text, d::text, i FROM nums ORDER BY id")
    assert rows == [
        (1, BIG, BIG, f'{{"big": {BIG}, "frac": {FRACTION}}}', f"[{BIG}, 1.0, -0]", None, None),
        (2, FRACTION, FRACTION, None, None, "0.1", None),
        (3, "1" + "0" * 400, "1e400", None, '{"x": 1e400, "y": 1.0, "z": -0}', None, None),
        (4, None, "-0", None, "1.0", "-0", None),
        (7, None, "1E+2", None, None, None, None),
        (8, "-0.000000000000000000001", None, None, None, None, None),
    ]
    # The numbers are what PostgreSQL's own input functions make of the exact text.
    assert scalar(db, "SELECT n = %s::numeric FROM nums WHERE id = 1", [BIG]) is True
    letters = _letters(db, cid)
    assert set(letters) == {msgs[4].encode(), msgs[5].encode()}
    for m in (msgs[4], msgs[5]):
        offset, sqlstate, error = letters[m.encode()]
        assert offset == sent[msgs.index(m)][1]
        assert sqlstate == "22003", (m, sqlstate, error)
        assert "out of range" in error


@pytest.mark.timeout(120)
def test_text_backslash_period_goes_to_dead_letters_and_neighbours_stay_intact(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(1)
    msgs = [
        b"1\tbefore",
        b"9\tmid\\.",                  # issue 11 item 11, verbatim: was stored as (9, 'mid')
        b"2\tafter\n3\tthird\n",
        b"10\tmi\\.d",                 # \. inside a field: COPY would raise "end-of-copy marker corrupt"
        b"11\tx\\.\n12\ty",            # \. ending the first line of two: the whole message is refused
        b"4\tescaped \\\\. period",    # an escaped backslash before a period is data
        b"5\tcr\\\r\n6\tlf\r\n",       # backslash + CR is a CR in the value, then a CRLF line end
        b"13\tbare\rcr",               # a lone CR: a line end or an error depending on the neighbours
        b"7\ttwo\\\nlines",            # backslash + newline: one row whose value holds a newline
        b"8\tlast",
    ]
    bad = {msgs[1], msgs[3], msgs[4], msgs[7]}
    sent = produce(topic, msgs)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE tx (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        cid = _consume(conn, topic, "tx", "text")
    _wait_committed(db, cid, len(msgs))

    assert query(db, "SELECT id, v FROM tx ORDER BY id") == [
        (1, "before"), (2, "after"), (3, "third"), (4, "escaped \\. period"), (5, "cr\r"), (6, "lf"),
        (7, "two\nlines"), (8, "last"),
    ]
    letters = _letters(db, cid)
    assert set(letters) == bad
    for m in bad:
        offset, sqlstate, error = letters[m]
        assert offset == sent[msgs.index(m)][1]
        assert sqlstate == "22P04", (m, sqlstate, error)
    assert "end-of-data" in letters[msgs[1]][2]
    assert "carriage return" in letters[msgs[7]][2]


@pytest.mark.timeout(120)
def test_csv_backslash_period_ends_data_only_alone_on_a_line(fresh_db, topic_factory):
    """csv: `\\.` alone on an unquoted line would end COPY's data (dead letter); inside a quoted
    field or next to other text it is data."""
    db = fresh_db
    topic = topic_factory(1)
    msgs = [b'1,"a\n\\.\nb"', b"2,\\.", b"\\.", b"3,x\n\\.\n4,y", b'5,"q""\n\\.\n"', b"6,last"]
    sent = produce(topic, msgs)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE cx (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        cid = _consume(conn, topic, "cx", "csv")
    _wait_committed(db, cid, len(msgs))

    assert query(db, "SELECT id, v FROM cx ORDER BY id") == [
        (1, "a\n\\.\nb"), (2, "\\."), (5, 'q"\n\\.\n'), (6, "last")]
    letters = _letters(db, cid)
    assert set(letters) == {msgs[2], msgs[3]}
    assert all(letters[m][0] == sent[msgs.index(m)][1] and letters[m][1] == "22P04" for m in letters)


@pytest.mark.timeout(150)
def test_an_empty_message_holds_no_rows_in_every_format(fresh_db, topic_factory):
    db = fresh_db
    cases = {
        "text": [b"1\ta", b"", None, b"2\tb"],
        "csv": [b"1,a", b"", None, b"2,b"],
        "json": [b'{"id": 1, "v": "a"}', b"", None, b'{"id": 2, "v": "b"}'],
    }
    consumers = {}
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        for fmt, msgs in cases.items():
            topic = topic_factory(1)
            produce(topic, msgs)
            conn.execute(f"CREATE TABLE e_{fmt} (id int, v text)")
            consumers[fmt] = _consume(conn, topic, f"e_{fmt}", fmt)
    for fmt, cid in consumers.items():
        _wait_committed(db, cid, len(cases[fmt]))
        assert query(db, f"SELECT id, v FROM e_{fmt} ORDER BY id") == [(1, "a"), (2, "b")], fmt
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_a_stored_consumer_with_options_copy_refuses_stops_instead_of_dead_lettering(fresh_db, topic_factory):
    """A consumer stored with a text delimiter COPY refuses (as 0.1.0's consume_begin allowed):
    its worker records the error and reads nothing, instead of dead-lettering every message
    (COPY's 22023 counted as bad data) or retrying forever (0A000 for 'N')."""
    db = fresh_db
    topic = topic_factory(1)
    produce(topic, [b"1.a", b"2.b"])
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE legacy (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        with conn.transaction():
            cid = _consume(conn, topic, "legacy", "text")
            # What an older consume_begin stored: the worker only sees the committed row.
            conn.execute("UPDATE pipeline_kafka.consumers SET delimiter = '.' WHERE id = %s", (cid,))
    error = wait_until(lambda: scalar(db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", [cid]),
                       timeout=60, what="the worker to record why it cannot start")
    assert "invalid format options" in error and "delimiter" in error, error
    assert scalar(db, "SELECT count(*) FROM legacy") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
    assert scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', [cid]) == 0
