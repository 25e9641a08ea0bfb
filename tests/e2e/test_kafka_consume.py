"""Kafka consuming, end to end: every format into tables with defaults, triggers, CHECK
constraints and partitions; parallelism and new partitions; start positions; stop/resume;
rolled-back consume_begin; restart and kill -9 of PostgreSQL (exactly once); consume_begin
errors with their SQLSTATEs; the owner's INSERT privilege checked for every batch.

Every wait is bounded (wait_until). Where a test asserts that something does NOT happen, it
first waits for a positive marker that proves the thing would have happened by then.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, WaitTimeout, add_partitions, high_watermarks, pg_connect,
                       pg_kill9_postmaster, pg_log_path, pg_start, pg_stop, produce, query, scalar,
                       unique_name, wait_until)

WORKER_TYPE = "pipeline_kafka consumer"

# A BEFORE INSERT trigger used by the format tests: it overwrites column "shout" with upper(v),
# so the test can see that COPY fired it for every ingested row.
SHOUT_TRIGGER = """
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.shout := upper(NEW.v);
    RETURN NEW;
END $$;
"""


# --------------------------------------------------------------------------- local helpers


def _log_size() -> int:
    try:
        return pg_log_path().stat().st_size
    except FileNotFoundError:
        return 0


def _log_since(mark: int, limit: int = 6000) -> str:
    try:
        with open(pg_log_path(), "rb") as f:
            f.seek(mark)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    lines = [ln for ln in text.splitlines() if "pipeline" in ln or "ERROR" in ln or "FATAL" in ln]
    return "\n".join(lines)[-limit:]


def _diag(db: str, mark: Optional[int] = None) -> str:
    try:
        consumers = query(db, "SELECT id, topic, relation::text, enabled, generation, last_error "
                              "FROM pipeline_kafka.consumers ORDER BY id")
        offsets = query(db, 'SELECT consumer_id, "partition", "offset" FROM pipeline_kafka.offsets '
                            'ORDER BY 1, 2')
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        consumers, offsets = repr(exc), ""
    out = f"\nconsumers: {consumers}\noffsets: {offsets}"
    if mark is not None:
        out += f"\npostgres.log (pipeline lines since test start):\n{_log_since(mark)}"
    return out


def add_broker(db: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])


def consume_begin(conn: psycopg.Connection, topic: str, relation: str, **kw: Any) -> int:
    """SELECT pipeline_kafka.consume_begin(topic, relation, name := value, ...); returns the id."""
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s{args})",
                        [topic, relation] + [kw[n] for n in names]).fetchone()[0]


def worker_count(db: str) -> int:
    return scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = %s AND datname = %s",
                  [WORKER_TYPE, db])


def stored_offsets(db: str, consumer_id: int) -> dict[int, int]:
    return dict(query(db, 'SELECT "partition", "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                      [consumer_id]))


def wait_rows(db: str, table: str, n: int, timeout: float = 30.0, mark: Optional[int] = None) -> None:
    """Wait until table has at least n rows, then assert it has exactly n (no duplicates)."""
    try:
        wait_until(lambda: scalar(db, f"SELECT count(*) FROM {table}") >= n, timeout=timeout,
                   what=f"{n} rows in {table}")
    except WaitTimeout as exc:
        got = scalar(db, f"SELECT count(*) FROM {table}")
        raise AssertionError(f"{exc}; has {got} rows{_diag(db, mark)}") from None
    got = scalar(db, f"SELECT count(*) FROM {table}")
    assert got == n, f"{table} has {got} rows, expected exactly {n}{_diag(db, mark)}"


def assert_caught_up(db: str, consumer_id: int, topic: str) -> None:
    """The stored offsets (next offset to read) equal the partitions' high watermarks: every
    message was consumed and nothing more can arrive from this topic."""
    assert stored_offsets(db, consumer_id) == high_watermarks(topic)


@pytest.fixture
def log_mark():
    return _log_size()


# --------------------------------------------------------------------------- formats


@pytest.mark.timeout(90)
def test_text_format(fresh_db, topic_factory, log_mark):
    """text: tab (default) and '|' delimiters, \\N NULLs, backslash escapes, several lines per
    message, empty messages and tombstones; DEFAULT column, BEFORE INSERT trigger, CHECK."""
    db = fresh_db
    add_broker(db)
    tab_topic, pipe_topic = topic_factory(1), topic_factory(1)
    with pg_connect(db) as conn:
        conn.execute(SHOUT_TRIGGER)
        for t in ("t_tab", "t_pipe"):
            conn.execute(f"CREATE TABLE {t} (id int CHECK (id > 0), v text, tag text DEFAULT 'dflt', shout text)")
            conn.execute(f"CREATE TRIGGER shout BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION shout()")

    produce(tab_topic, [
        "1\talpha\tt1\tignored",                      # trigger overwrites shout
        "2\tbeta\t\\N\tx\n3\tgamma\tt3\tx\n",          # two lines = two rows; \N = NULL
        "4\ttab\\there\tt4\tx",                       # \t escape inside a value
        "5\tback\\\\slash\tt5\tx",                    # escaped backslash
        "",                                           # empty message: no rows
        None,                                         # tombstone: no rows
        "6\t\\N\tt6\tx\n7\t\tt7\tx",                  # NULL v; empty (non-NULL) v
    ])
    produce(pipe_topic, [
        "10|a b|t10|x",
        "11|\\N|\\N|x\n12|c\\|d|t12|x\n13|tab\there|t13|x",   # escaped delimiter; literal tab is data
    ])
    with pg_connect(db) as conn:
        consume_begin(conn, tab_topic, "t_tab", format="text", start_offset=-2)
        consume_begin(conn, pipe_topic, "t_pipe", format="text", delimiter="|", start_offset=-2)

    wait_rows(db, "t_tab", 7, mark=log_mark)
    wait_rows(db, "t_pipe", 4, mark=log_mark)
    assert query(db, "SELECT id, v, tag, shout FROM t_tab ORDER BY id") == [
        (1, "alpha", "t1", "ALPHA"),
        (2, "beta", None, "BETA"),
        (3, "gamma", "t3", "GAMMA"),
        (4, "tab\there", "t4", "TAB\tHERE"),
        (5, "back\\slash", "t5", "BACK\\SLASH"),
        (6, None, "t6", None),
        (7, "", "t7", ""),
    ]
    assert query(db, "SELECT id, v, tag, shout FROM t_pipe ORDER BY id") == [
        (10, "a b", "t10", "A B"),
        (11, None, None, None),
        (12, "c|d", "t12", "C|D"),
        (13, "tab\there", "t13", "TAB\tHERE"),
    ]


@pytest.mark.timeout(90)
def test_csv_format(fresh_db, topic_factory, log_mark):
    """csv: default, ';' delimiter, '|' delimiter with quote "'" and escape '\\'; NULL (unquoted
    empty) vs empty string (quoted), quoted delimiters, doubled quotes, a quoted field holding a
    newline, several lines per message; DEFAULT column, BEFORE INSERT trigger, CHECK."""
    db = fresh_db
    add_broker(db)
    t_def, t_semi, t_custom = topic_factory(1), topic_factory(1), topic_factory(1)
    with pg_connect(db) as conn:
        conn.execute(SHOUT_TRIGGER)
        for t in ("c_def", "c_semi", "c_custom"):
            conn.execute(f"CREATE TABLE {t} (id int CHECK (id > 0), v text, tag text DEFAULT 'dflt', shout text)")
            conn.execute(f"CREATE TRIGGER shout BEFORE INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION shout()")

    produce(t_def, [
        "1,plain,t1,ignored",
        '2,"quoted, comma",t2,x\n3,,t3,x',            # two rows; unquoted empty = NULL
        '4,"",,x',                                    # quoted empty = '' ; tag NULL
        '5,"line1\nline2",t5,x',                      # quoted newline: ONE row
        '6,"say ""hi""",t6,x\n',                      # doubled quote; final newline
        '7,"multi\nline\n",t7,x\n8,after,t8,x',       # quoted newlines, then another row
    ])
    produce(t_semi, [
        "20;a,b;t20;x",                               # comma is data with ';' delimiter
        '21;"x;y";t21;x\n22;;;x',                     # quoted delimiter; NULLs
    ])
    produce(t_custom, [
        "30|'it\\'s'|t30|x",                          # escape \ before quote '
        "31|'a|b'|t31|x\n32|'back\\\\slash'|t32|x",    # quoted delimiter; escaped escape
        "33|\"dq\"|'t''33'|x",                        # " is plain data; '' is NOT an escape here
    ])
    with pg_connect(db) as conn:
        consume_begin(conn, t_def, "c_def", format="csv", start_offset=-2)
        consume_begin(conn, t_semi, "c_semi", format="csv", delimiter=";", start_offset=-2)
        consume_begin(conn, t_custom, "c_custom", format="csv", delimiter="|", quote="'", escape="\\",
                      start_offset=-2)

    wait_rows(db, "c_def", 8, mark=log_mark)
    wait_rows(db, "c_semi", 3, mark=log_mark)
    # c_custom: row 33 has quote "'" with escape "\\", so 't''33' is two quoted strings next to each
    # other, which COPY reads as t33 (the doubled quote closes and reopens the quoting).
    wait_rows(db, "c_custom", 4, mark=log_mark)
    assert query(db, "SELECT id, v, tag, shout FROM c_def ORDER BY id") == [
        (1, "plain", "t1", "PLAIN"),
        (2, "quoted, comma", "t2", "QUOTED, COMMA"),
        (3, None, "t3", None),
        (4, "", None, ""),
        (5, "line1\nline2", "t5", "LINE1\nLINE2"),
        (6, 'say "hi"', "t6", 'SAY "HI"'),
        (7, "multi\nline\n", "t7", "MULTI\nLINE\n"),
        (8, "after", "t8", "AFTER"),
    ]
    assert query(db, "SELECT id, v, tag, shout FROM c_semi ORDER BY id") == [
        (20, "a,b", "t20", "A,B"),
        (21, "x;y", "t21", "X;Y"),
        (22, None, None, None),
    ]
    assert query(db, "SELECT id, v, tag, shout FROM c_custom ORDER BY id") == [
        (30, "it's", "t30", "IT'S"),
        (31, "a|b", "t31", "A|B"),
        (32, "back\\slash", "t32", "BACK\\SLASH"),
        (33, '"dq"', "t33", '"DQ"'),
    ]


@pytest.mark.timeout(90)
def test_json_format(fresh_db, topic_factory, log_mark):
    """json: fields matched by name, extra fields ignored, absent fields take the DEFAULT, null
    gives NULL, nested object/array into jsonb, an array of objects = several rows, embedded
    newline stays one row; BEFORE INSERT trigger and CHECK apply."""
    db = fresh_db
    add_broker(db)
    topic = topic_factory(1)
    with pg_connect(db) as conn:
        conn.execute(SHOUT_TRIGGER)
        conn.execute("CREATE TABLE j (id int CHECK (id > 0), v text, tag text DEFAULT 'dflt', doc jsonb, "
                     "n numeric, flag boolean, shout text, added timestamptz DEFAULT now())")
        conn.execute("CREATE TRIGGER shout BEFORE INSERT ON j FOR EACH ROW EXECUTE FUNCTION shout()")

    produce(topic, [
        '{"id": 1, "v": "a", "tag": "t1", "doc": {"k": [1, 2], "s": "x"}, "n": 1.5, "flag": true, '
        '"extra": "ignored", "shout": "overwritten"}',
        '{"v": "b", "id": 2}',                                          # absent tag/doc -> default/NULL
        '[{"id": 3, "v": "c"}, {"id": 4, "v": "d", "tag": null}, {"id": 5, "v": "e", "tag": "t5"}]',
        '{"id": 6, "v": "line1\\nline2\\ttab \\\\ back"}',              # JSON escapes: one row
        '{"id": 7, "v": "arr", "doc": [1, {"a": null}, "s"], "n": -2, "flag": false}',
        '{"id": 8, "v": "unicode \\u00e9\\u20ac", "doc": {"nested": {"deep": true}}}',
        '[]',                                                           # no rows
    ])
    with pg_connect(db) as conn:
        consume_begin(conn, topic, "j", format="json", start_offset=-2)

    wait_rows(db, "j", 8, mark=log_mark)
    rows = query(db, "SELECT id, v, tag, doc, n, flag, shout, added IS NOT NULL FROM j ORDER BY id")
    from decimal import Decimal
    # upper() of non-ASCII letters depends on the database's collation: ask PostgreSQL.
    upper8 = scalar(db, "SELECT upper(%s)", ["unicode \u00e9\u20ac"])
    assert rows == [
        (1, "a", "t1", {"k": [1, 2], "s": "x"}, Decimal("1.5"), True, "A", True),
        (2, "b", "dflt", None, None, None, "B", True),
        (3, "c", "dflt", None, None, None, "C", True),
        (4, "d", None, None, None, None, "D", True),
        (5, "e", "t5", None, None, None, "E", True),
        (6, "line1\nline2\ttab \\ back", "dflt", None, None, None, "LINE1\nLINE2\tTAB \\ BACK", True),
        (7, "arr", "dflt", [1, {"a": None}, "s"], Decimal("-2"), False, "ARR", True),
        (8, "unicode \u00e9\u20ac", "dflt", {"nested": {"deep": True}}, None, None, upper8, True),
    ]


@pytest.mark.timeout(90)
def test_partitioned_target(fresh_db, topic_factory, log_mark):
    """Rows from a csv and a json consumer are routed to the partitions of a partitioned table
    (with a DEFAULT partition, a DEFAULT column, a trigger on the parent and a CHECK)."""
    db = fresh_db
    add_broker(db)
    csv_topic, json_topic = topic_factory(2), topic_factory(1)
    with pg_connect(db) as conn:
        conn.execute(SHOUT_TRIGGER)
        conn.execute("CREATE TABLE pt (id int CHECK (id > 0), region text, v text, tag text DEFAULT 'dflt', "
                     "shout text) PARTITION BY LIST (region)")
        conn.execute("CREATE TABLE pt_eu PARTITION OF pt FOR VALUES IN ('eu')")
        conn.execute("CREATE TABLE pt_us PARTITION OF pt FOR VALUES IN ('us')")
        conn.execute("CREATE TABLE pt_other PARTITION OF pt DEFAULT")
        conn.execute("CREATE TRIGGER shout BEFORE INSERT ON pt FOR EACH ROW EXECUTE FUNCTION shout()")

    produce(csv_topic, ["1,eu,a,t,x\n2,us,b,t,x", "3,apac,c,t,x"], partition=0)
    produce(csv_topic, ["4,us,d,t,x", "5,,e,t,x"], partition=1)
    produce(json_topic, ['{"id": 6, "region": "eu", "v": "f"}',
                         '[{"id": 7, "region": "us", "v": "g"}, {"id": 8, "region": "mars", "v": "h"}]'])
    with pg_connect(db) as conn:
        consume_begin(conn, csv_topic, "pt", format="csv", start_offset=-2)
        consume_begin(conn, json_topic, "pt", format="json", start_offset=-2)

    wait_rows(db, "pt", 8, mark=log_mark)
    assert query(db, "SELECT tableoid::regclass::text, id, region, v, tag, shout FROM pt ORDER BY id") == [
        ("pt_eu", 1, "eu", "a", "t", "A"),
        ("pt_us", 2, "us", "b", "t", "B"),
        ("pt_other", 3, "apac", "c", "t", "C"),
        ("pt_us", 4, "us", "d", "t", "D"),
        ("pt_other", 5, None, "e", "t", "E"),
        ("pt_eu", 6, "eu", "f", "dflt", "F"),
        ("pt_us", 7, "us", "g", "dflt", "G"),
        ("pt_other", 8, "mars", "h", "dflt", "H"),
    ]


@pytest.mark.timeout(60)
def test_crlf_line_endings(fresh_db, topic_factory, log_mark):
    """README: text/csv lines end with \\n (or \\r\\n). Messages with either ending, in the same
    batch, are all ingested."""
    db = fresh_db
    add_broker(db)
    t_text, t_csv = topic_factory(1), topic_factory(1)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE crlf_text (id int, v text)")
        conn.execute("CREATE TABLE crlf_csv (id int, v text)")
    # Produced before consume_begin(start_offset := -2), so they arrive together in one batch.
    produce(t_text, ["1\tlf\n", "2\tcrlf\r\n", "3\tnone"])
    produce(t_csv, ["1,lf\n", "2,crlf\r\n", "3,none"])
    with pg_connect(db) as conn:
        consume_begin(conn, t_text, "crlf_text", format="text", start_offset=-2)
        consume_begin(conn, t_csv, "crlf_csv", format="csv", start_offset=-2)
    wait_rows(db, "crlf_text", 3, timeout=10, mark=log_mark)
    wait_rows(db, "crlf_csv", 3, timeout=10, mark=log_mark)
    assert query(db, "SELECT id, v FROM crlf_text ORDER BY id") == [(1, "lf"), (2, "crlf"), (3, "none")]
    assert query(db, "SELECT id, v FROM crlf_csv ORDER BY id") == [(1, "lf"), (2, "crlf"), (3, "none")]


# --------------------------------------------------------------------------- partitions, parallelism


@pytest.mark.timeout(120)
def test_parallelism_and_new_partitions(fresh_db, topic_factory, log_mark):
    """A 4-partition topic consumed with parallelism 1 and 2 (exactly once, 1 + 2 workers);
    partitions added while running are picked up (metadata_refresh = 2), also by a consumer
    restarted later."""
    db = fresh_db
    add_broker(db)
    topic = topic_factory(4)
    per_part = 250
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t1 (p int, i int)")
        conn.execute("CREATE TABLE t2 (p int, i int)")
    for p in range(4):
        produce(topic, [f"{p},{i}" for i in range(per_part)], partition=p)
    with pg_connect(db) as conn:
        c1 = consume_begin(conn, topic, "t1", format="csv", parallelism=1, batchsize=100, start_offset=-2)
        c2 = consume_begin(conn, topic, "t2", format="csv", parallelism=2, batchsize=100, start_offset=-2)

    wait_rows(db, "t1", 4 * per_part, mark=log_mark)
    wait_rows(db, "t2", 4 * per_part, mark=log_mark)
    for t in ("t1", "t2"):
        assert scalar(db, f"SELECT count(DISTINCT (p, i)) FROM {t}") == 4 * per_part
        assert query(db, f"SELECT p, count(*) FROM {t} GROUP BY p ORDER BY p") == [(p, per_part) for p in range(4)]
    assert stored_offsets(db, c1) == stored_offsets(db, c2) == {p: per_part for p in range(4)}
    # 1 worker for t1 + 2 for t2.
    wait_until(lambda: worker_count(db) == 3, timeout=10, what="3 consumer workers")
    # Stopping t1's consumer leaves exactly the 2 workers of the parallelism-2 consumer.
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't1')", [topic])
    wait_until(lambda: worker_count(db) == 2, timeout=5, what="2 consumer workers after consume_end of t1")
    assert scalar(db, "SELECT parallelism FROM pipeline_kafka.consumers WHERE id = %s", [c2]) == 2

    try:
        with pg_connect("postgres") as conn:
            conn.execute("ALTER SYSTEM SET pipeline_ingest.metadata_refresh = 2")
            conn.execute("SELECT pg_reload_conf()")
        add_partitions(topic, 6)
        produce(topic, [f"4,{i}" for i in range(50)], partition=4)
        produce(topic, [f"5,{i}" for i in range(30)], partition=5)
        # The running parallelism-2 consumer picks both new partitions up from their beginning
        # (4 -> worker 0, 5 -> worker 1).
        wait_rows(db, "t2", 4 * per_part + 80, timeout=30, mark=log_mark)
        assert stored_offsets(db, c2) == {0: per_part, 1: per_part, 2: per_part, 3: per_part, 4: 50, 5: 30}
        # The stopped consumer, restarted, continues from its offsets and reads the new partitions.
        with pg_connect(db) as conn:
            assert conn.execute("SELECT pipeline_kafka.consume_begin()").fetchone()[0] == 1
        wait_rows(db, "t1", 4 * per_part + 80, timeout=30, mark=log_mark)
        for t, c in (("t1", c1), ("t2", c2)):
            assert scalar(db, f"SELECT count(DISTINCT (p, i)) FROM {t}") == 4 * per_part + 80
            assert_caught_up(db, c, topic)
        wait_until(lambda: worker_count(db) == 3, timeout=10, what="3 consumer workers")
    finally:
        with pg_connect("postgres") as conn:
            conn.execute("ALTER SYSTEM RESET pipeline_ingest.metadata_refresh")
            conn.execute("SELECT pg_reload_conf()")


# --------------------------------------------------------------------------- start positions, stop/resume


@pytest.mark.timeout(90)
def test_start_offset(fresh_db, topic_factory, log_mark):
    """start_offset NULL (new consumer) and -1 = end, -2 = beginning, n = offset n in every
    partition; stored offsets are the next offset to read."""
    db = fresh_db
    add_broker(db)
    topic = topic_factory(2)
    cases = {"s_null": None, "s_end": -1, "s_begin": -2, "s_abs": 2}
    with pg_connect(db) as conn:
        for t in cases:
            conn.execute(f"CREATE TABLE {t} (phase text, p int, i int)")
    for p in range(2):
        produce(topic, [f"pre,{p},{i}" for i in range(5)], partition=p)

    ids = {}
    with pg_connect(db) as conn:
        for t, start in cases.items():
            # The offsets are resolved and stored by consume_begin itself: read them inside its
            # transaction, before any worker can move them.
            with conn.transaction():
                kw = {} if start is None else {"start_offset": start}
                ids[t] = consume_begin(conn, topic, t, format="csv", **kw)
                stored = dict(conn.execute('SELECT "partition", "offset" FROM pipeline_kafka.offsets '
                                           'WHERE consumer_id = %s', [ids[t]]).fetchall())
            expected = {None: 5, -1: 5, -2: 0, 2: 2}[start]
            assert stored == {0: expected, 1: expected}, (t, stored)

    for p in range(2):
        produce(topic, [f"post,{p},{i}" for i in range(5, 8)], partition=p)

    # The post messages come after the pre ones in each partition, so once they are in, any pre
    # message that was going to be ingested is in too.
    expected_rows = {
        "s_null": [("post", p, i) for p in range(2) for i in range(5, 8)],
        "s_end": [("post", p, i) for p in range(2) for i in range(5, 8)],
        "s_begin": [("pre" if i < 5 else "post", p, i) for p in range(2) for i in range(8)],
        "s_abs": [("pre" if i < 5 else "post", p, i) for p in range(2) for i in range(2, 8)],
    }
    for t, rows in expected_rows.items():
        wait_rows(db, t, len(rows), mark=log_mark)
        assert query(db, f"SELECT phase, p, i FROM {t} ORDER BY p, i") == rows, t
        assert stored_offsets(db, ids[t]) == {0: 8, 1: 8}, t


@pytest.mark.timeout(90)
def test_consume_end_then_begin_resumes(fresh_db, topic_factory, log_mark):
    """consume_end stops the worker within about a second; messages produced meanwhile are
    ingested exactly once after consume_begin()."""
    db = fresh_db
    add_broker(db)
    topic = topic_factory(2)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int, p int)")
        cid = consume_begin(conn, topic, "t", format="csv", batchsize=50)
    for p in range(2):
        produce(topic, [f"{i},{p}" for i in range(p * 1000, p * 1000 + 100)], partition=p)
    wait_rows(db, "t", 200, mark=log_mark)
    assert worker_count(db) == 1

    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
    t0 = time.monotonic()
    wait_until(lambda: worker_count(db) == 0, timeout=5, interval=0.05, what="the worker to exit after consume_end")
    stop_s = time.monotonic() - t0
    assert scalar(db, "SELECT enabled FROM pipeline_kafka.consumers WHERE id = %s", [cid]) is False
    assert stored_offsets(db, cid) == {0: 100, 1: 100}

    # Produced while stopped. No worker exists (checked above), so nothing can be ingested.
    for p in range(2):
        produce(topic, [f"{i},{p}" for i in range(p * 1000 + 100, p * 1000 + 250)], partition=p)
    assert worker_count(db) == 0
    assert scalar(db, "SELECT count(*) FROM t") == 200

    with pg_connect(db) as conn:
        assert conn.execute("SELECT pipeline_kafka.consume_begin()").fetchone()[0] == 1
        assert conn.execute("SELECT pipeline_kafka.consume_begin()").fetchone()[0] == 0  # already running
    wait_rows(db, "t", 500, mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT id) FROM t") == 500
    assert_caught_up(db, cid, topic)
    print(f"consume_end took effect in {stop_s:.2f}s")


@pytest.mark.timeout(60)
def test_rolled_back_consume_begin_starts_nothing(fresh_db, topic_factory, log_mark):
    db = fresh_db
    add_broker(db)
    topic = topic_factory(1)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t_rb (v text)")
        conn.execute("CREATE TABLE t_ok (v text)")
    produce(topic, ["m1", "m2", "m3"])
    with pg_connect(db) as conn:
        conn.execute("BEGIN")
        consume_begin(conn, topic, "t_rb", start_offset=-2)
        assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0  # not visible outside
        conn.execute("ROLLBACK")
        ok_id = consume_begin(conn, topic, "t_ok", start_offset=-2)

    # Positive marker: the committed consumer, begun after the rollback, has run and ingested
    # everything; a consumer started by the rolled-back call would have had the same chance.
    wait_rows(db, "t_ok", 3, mark=log_mark)
    assert query(db, "SELECT id, relation::text FROM pipeline_kafka.consumers") == [(ok_id, "t_ok")]
    assert query(db, "SELECT DISTINCT consumer_id FROM pipeline_kafka.offsets") == [(ok_id,)]
    assert worker_count(db) == 1
    assert scalar(db, "SELECT count(*) FROM t_rb") == 0


# --------------------------------------------------------------------------- errors, privileges


@pytest.mark.timeout(90)
def test_consume_begin_errors(pg_role, fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(1)
    role = pg_role()

    def sqlstate_of(conn, sql, params=()):
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(sql, params)
        return ei.value.sqlstate

    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute(f'GRANT SELECT ON t TO "{role}"')
        # No broker yet.
        assert sqlstate_of(conn, "SELECT pipeline_kafka.consume_begin(%s, 't')", [topic]) == "55000"
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        assert sqlstate_of(conn, "SELECT pipeline_kafka.consume_begin(%s, 'no_such_table')", [topic]) == "42P01"
        assert sqlstate_of(conn, "SELECT pipeline_kafka.consume_begin(%s, 't')",
                           [unique_name("pi_missing")]) == "42704"
        assert sqlstate_of(conn, "SELECT pipeline_kafka.consume_begin(%s, 't', format := 'xml')", [topic]) == "22023"
        assert sqlstate_of(conn, "SELECT pipeline_kafka.consume_begin(%s, 't', batchsize := 0)", [topic]) == "22023"
        conn.execute(f'SET ROLE "{role}"')
        assert sqlstate_of(conn, "SELECT pipeline_kafka.consume_begin(%s, 't')", [topic]) == "42501"
        conn.execute("RESET ROLE")
        # Nothing was stored by the failed calls; a valid call then works.
        assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
        assert scalar(db, "SELECT count(*) FROM pipeline_kafka.offsets") == 0
        consume_begin(conn, topic, "t")
    assert query(db, "SELECT topic, relation::text FROM pipeline_kafka.consumers") == [(topic, "t")]


@pytest.mark.timeout(120)
def test_revoked_insert_stops_owner_worker(pg_role, fresh_db, topic_factory, log_mark):
    """The worker writes as the consumer's owner: once INSERT is revoked from it, batches fail
    (recorded in last_error) and nothing is written; after GRANT, everything arrives exactly once."""
    db = fresh_db
    add_broker(db)
    topic = topic_factory(2)
    role = pg_role()
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        conn.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
        # consumers write as their table's owner: the role owns the table, then loses INSERT on it
        conn.execute(f'ALTER TABLE t OWNER TO "{role}"')
        conn.execute(f'SET ROLE "{role}"')
        cid = consume_begin(conn, topic, "t", format="csv", batchsize=10)
        conn.execute("RESET ROLE")
    assert scalar(db, "SELECT owner::text FROM pipeline_kafka.consumers WHERE id = %s", [cid]) == role

    produce(topic, [f"{i},before" for i in range(5)], partition=0)
    wait_rows(db, "t", 5, mark=log_mark)

    with pg_connect(db) as conn:
        conn.execute(f'REVOKE INSERT ON t FROM "{role}"')
    produce(topic, [f"{i},during" for i in range(5, 10)], partition=0)
    produce(topic, [f"{i},during" for i in range(10, 15)], partition=1)
    # Positive marker: the worker tried the batch holding the new messages and recorded why it failed.
    try:
        wait_until(lambda: "permission denied" in (scalar(db, "SELECT last_error FROM pipeline_kafka.consumers "
                                                              "WHERE id = %s", [cid]) or ""),
                   timeout=20, what="last_error to mention 'permission denied'")
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}; rows: {scalar(db, 'SELECT count(*) FROM t')}{_diag(db, log_mark)}") from None
    assert scalar(db, "SELECT count(*) FROM t") == 5
    assert stored_offsets(db, cid) == {0: 5, 1: 0}
    # And for a bounded while after that (the worker retries with backoff), still nothing written.
    with pytest.raises(WaitTimeout):
        wait_until(lambda: scalar(db, "SELECT count(*) FROM t") != 5, timeout=2, what="rows written without INSERT")
    assert stored_offsets(db, cid) == {0: 5, 1: 0}

    with pg_connect(db) as conn:
        conn.execute(f'GRANT INSERT ON t TO "{role}"')
    wait_rows(db, "t", 15, timeout=45, mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT id) FROM t") == 15
    assert query(db, "SELECT v, count(*) FROM t GROUP BY v ORDER BY v") == [("before", 5), ("during", 10)]
    assert_caught_up(db, cid, topic)


# --------------------------------------------------------------------------- restart and crash


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_restart_while_flowing_no_loss_no_duplicates(fresh_db, topic_factory, log_mark):
    """pg_ctl stop -m fast, then start, while messages are being produced and consumed."""
    db = fresh_db
    add_broker(db)
    topic = topic_factory(4)
    chunks, chunk = 10, 2000
    total = 5000 + chunks * chunk
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int, payload text)")
        # Small batches: one transaction per 20 messages keeps ingestion running for a few
        # seconds, so the stop lands while batches are flowing.
        cid = consume_begin(conn, topic, "t", format="csv", batchsize=20, parallelism=2)
    produce(topic, [f"{i},first" for i in range(5000)])

    errors: list[BaseException] = []

    def producer():
        try:
            for c in range(chunks):
                base = 5000 + c * chunk
                produce(topic, [f"{i},later" for i in range(base, base + chunk)], timeout=60)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    th = threading.Thread(target=producer, daemon=True)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") > 0, timeout=30, interval=0.05,
               what="ingestion to start")
    th.start()
    before_stop = scalar(db, "SELECT count(*) FROM t")
    pg_stop("fast")
    pg_start()
    # One snapshot: rows and stored offsets agree after the restart.
    rows, offs = query(db, 'SELECT (SELECT count(*) FROM t), (SELECT coalesce(sum("offset"), 0)::bigint '
                           'FROM pipeline_kafka.offsets WHERE consumer_id = %s)', [cid])[0]
    assert rows == offs >= before_stop, (rows, offs, before_stop)
    th.join(timeout=90)
    assert not th.is_alive(), "producer thread did not finish"
    assert not errors, errors
    wait_rows(db, "t", total, timeout=90, mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT id) FROM t") == total
    assert_caught_up(db, cid, topic)
    print(f"stopped with {before_stop}/{total} rows ingested")
    assert before_stop < total


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_exactly_once_across_kill9(fresh_db, topic_factory, log_mark):
    """200k small csv messages over 4 partitions, batchsize 1000, no unique constraint: kill -9
    the postmaster twice while batches commit; afterwards every id is in the table exactly once.

    Ingestion is fast (~100k rows/s), so to land both kills in the middle of the work the
    messages come in two halves: the first half is in Kafka before consume_begin (kill 1 at
    >= 10% of N, while that half is being ingested); the second half is produced after the
    restart, in the background (kill 2 at >= 60% of N, while it is being produced and ingested).
    """
    db = fresh_db
    add_broker(db)
    topic = topic_factory(4)
    n = 200_000
    half = n // 2
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id bigint, payload text)")  # no unique constraint: duplicates would show
    for p in range(4):
        produce(topic, (f"{i},payload-{i:08d}" for i in range(p, half, 4)), partition=p, timeout=120)
    with pg_connect(db) as conn:
        cid = consume_begin(conn, topic, "t", format="csv", batchsize=1000, parallelism=2, start_offset=-2)

    def progress() -> int:
        # The stored offsets commit together with the rows: their sum is the number of rows in.
        return scalar(db, 'SELECT coalesce(sum("offset"), 0)::bigint FROM pipeline_kafka.offsets '
                          'WHERE consumer_id = %s', [cid])

    def kill_at(threshold: int, limit: int) -> int:
        seen = wait_until(lambda: (lambda v: v if v >= threshold else 0)(progress()), timeout=60,
                          interval=0.01, what=f"{threshold} messages ingested")
        assert seen < limit, f"ingestion reached {seen} before the kill could land (limit {limit})"
        pg_kill9_postmaster()
        pg_start()
        # One snapshot: the rows in the table and the stored offsets agree (nothing half-committed),
        # and nothing committed before the crash was lost.
        rows, offs = query(db, 'SELECT (SELECT count(*) FROM t), (SELECT coalesce(sum("offset"), 0)::bigint '
                               'FROM pipeline_kafka.offsets WHERE consumer_id = %s)', [cid])[0]
        assert rows == offs >= seen, (rows, offs, seen)
        return seen

    kills = [kill_at(n // 10, half)]

    errors: list[BaseException] = []

    def producer():
        try:
            produce(topic, (f"{i},payload-{i:08d}" for i in range(half, n)), timeout=120)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    try:
        kills.append(kill_at(n * 6 // 10, n))
    finally:
        th.join(timeout=120)
    assert not th.is_alive(), "producer thread did not finish"
    assert not errors, errors

    wait_rows(db, "t", n, timeout=120, mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT id) FROM t") == n
    assert query(db, "SELECT min(id), max(id) FROM t") == [(0, n - 1)]
    assert_caught_up(db, cid, topic)
    print(f"killed at progress {kills} of {n}")


@pytest.mark.timeout(120)
def test_csv_column_list_leaves_the_rest_to_defaults(fresh_db, topic_factory):
    """consume_begin(columns := ...) names the columns csv/text fields fill; the others get their
    defaults. A message with more fields than listed columns is bad data (a dead letter)."""
    topic = topic_factory(1)
    produce(topic, ["1,a", "2,b", "3,c,extra", "4,d"])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, v text, src text DEFAULT 'kafka', at timestamptz DEFAULT now())")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2, "
                     "columns := ARRAY['id', 'v'])", (topic,))
        wait_until(lambda: scalar(fresh_db, "SELECT (SELECT count(*) FROM t) + "
                                            "(SELECT count(*) FROM pipeline_kafka.dead_letters)") == 4,
                   timeout=60, what="4 messages accounted for")
        rows = query(fresh_db, "SELECT id, v, src, at IS NOT NULL FROM t ORDER BY id")
        assert rows == [(1, "a", "kafka", True), (2, "b", "kafka", True), (4, "d", "kafka", True)]
        assert query(fresh_db, "SELECT value, sqlstate FROM pipeline_kafka.dead_letters") == [(b"3,c,extra", "22P04")]
