"""pipeline_kafka's own test scenarios (pipelinedb/pipeline_kafka test/test_pipeline_kafka.py),
ported: a PipelineDB stream is a table here and a continuous view a plain view over it, so every
scenario's SQL is the original's apart from CREATE STREAM / CREATE CONTINUOUS VIEW.

Ported: basic, consumers (offsets across restarts), consume_stream_partitioned (plus the safety
checks the original lacked: keys naming no relation, a relation the owner may not write, the
extension's own tables), consume_text (comma and tab delimiters), grouped consumer (group_id;
what the group coordinator sees is in test_group_commit.py), produce (emit_tuple into a json
stream, read back by a json consumer), lag (consumer_lag; more in test_consumer_lag.py) and
null offsets.

Where the semantics differ, the assertions say so:
- Offsets are the NEXT offset to read (the original stored the last one read): after 1000
  messages over 4 partitions they sum to 1000, not 996.
- null offsets: the original stored NULL for a partition no message was read from yet; here
  consume_begin stores every partition's start position (the high watermark for a new
  consumer), so such a partition shows that offset (0 on an empty topic), never NULL. The
  scenario's point, "a partition without messages keeps its starting position", still holds.
- Not ported: test_consume_json (developer "formats" ports it with json into one json column),
  test_broker_failure (needs a multi-broker cluster with replication), the grouped-consumer
  failover / session-loss / defer_lock scenarios (they test ZooKeeper locks between two
  PipelineDB servers sharing a group; here each database's offsets are its own and two
  databases consuming one topic each read everything, see README "Migrating"), and
  test_multiple_shards (shard_id / num_shards do not exist: parallelism spreads partitions).
"""
from __future__ import annotations

import threading
from typing import Any

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, wait_until


def add_broker(db: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])


def execute(db: str, sql: str, params: Any = None) -> None:
    with pg_connect(db) as conn:
        conn.execute(sql, params)


def create_stream(db: str, name: str, **columns: str) -> None:
    """CREATE STREAM name (columns) of PipelineDB, as a table."""
    cols = ", ".join(f"{c} {t}" for c, t in columns.items())
    execute(db, f"CREATE TABLE {name} ({cols})")


def create_cv(db: str, name: str, select: str) -> None:
    """CREATE CONTINUOUS VIEW of PipelineDB, as a view computed when read."""
    execute(db, f"CREATE VIEW {name} AS {select}")


def consume_begin(db: str, topic: str, relation: str, **kw: Any) -> int:
    args = "".join(f", {n} := %s" for n in kw)
    with pg_connect(db) as conn:
        return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s{args})",
                            [topic, relation] + list(kw.values())).fetchone()[0]


def consume_end_all(db: str) -> None:
    execute(db, "SELECT pipeline_kafka.consume_end()")


def offsets(db: str) -> list[tuple]:
    return query(db, 'SELECT consumer_id, "partition", "offset" FROM pipeline_kafka.offsets ORDER BY 1, 2')


def wait_rows(db: str, checks: dict[str, Any], timeout: float = 60.0) -> None:
    """Waits until every query in checks returns its value (its first column of its first row)."""
    def ok():
        got = {q: scalar(db, q) for q in checks}
        return got if got == checks else None
    try:
        wait_until(ok, timeout=timeout, what=str(checks))
    except AssertionError as e:
        got = {q: scalar(db, q) for q in checks}
        status = query(db, "SELECT consumer_id, state, last_error FROM pipeline_kafka.consumer_status")
        raise AssertionError(f"{e}\n got {got}\n status {status}") from None


def test_basic(fresh_db, topic_factory):
    """Produce 1000 messages and find each of them in the stream exactly once."""
    db = fresh_db
    add_broker(db)
    create_stream(db, "stream", x="integer")
    create_cv(db, "basic", "SELECT x, COUNT(*) FROM stream GROUP BY x")
    topic = topic_factory()
    consume_begin(db, topic, "stream")
    produce(topic, [str(n) for n in range(1000)])
    wait_rows(db, {"SELECT sum(count) FROM basic": 1000, "SELECT count(*) FROM basic": 1000})
    assert scalar(db, "SELECT sum(x) FROM stream") == sum(range(1000))


def test_consumers(fresh_db, topic_factory):
    """Offsets are kept across consume_end / consume_begin: messages produced while stopped are
    read after the restart, none twice."""
    db = fresh_db
    add_broker(db)
    create_stream(db, "stream", x="integer")
    create_cv(db, "basic", "SELECT x, COUNT(*) FROM stream GROUP BY x")
    topic = topic_factory(partitions=4)
    consume_begin(db, topic, "stream", parallelism=4)
    produce(topic, [str(n) for n in range(1000)], key=None)
    wait_rows(db, {"SELECT sum(count) FROM basic": 1000, "SELECT count(*) FROM basic": 1000})
    consume_end_all(db)

    rows = offsets(db)
    assert len(rows) == 4
    assert len({r[0] for r in rows}) == 1, "one consumer"
    assert [r[1] for r in rows] == [0, 1, 2, 3]
    # the next offset to read: the original's sum was 996 (the last offsets read)
    assert sum(r[2] for r in rows) == 1000

    produce(topic, [str(n) for n in range(1000)])
    consume_begin(db, topic, "stream", parallelism=4)
    wait_rows(db, {"SELECT sum(count) FROM basic": 2000, "SELECT count(*) FROM basic": 1000})
    consume_end_all(db)
    rows = offsets(db)
    assert [r[1] for r in rows] == [0, 1, 2, 3]
    assert sum(r[2] for r in rows) == 2000
    assert scalar(db, "SELECT count(*) FROM stream") == 2000


def test_consume_stream_partitioned(fresh_db, topic_factory):
    """Messages whose key names a stream go to that stream; four producers at once."""
    db = fresh_db
    add_broker(db)
    for n in range(4):
        create_stream(db, f"stream{n}", x="integer")
        create_cv(db, f"cv{n}", f"SELECT x, COUNT(*) FROM stream{n} GROUP BY x")
    topic = topic_factory()
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s)", [topic])

    threads = [threading.Thread(target=produce, args=(topic, [str(n) for n in range(100)]),
                                kwargs={"key": f"stream{s}"}) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_rows(db, {q: 100 for n in range(4)
                   for q in (f"SELECT sum(count) FROM cv{n}", f"SELECT count(*) FROM cv{n}")})
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
    # one consumer, no relation of its own; consume_end_stream_partitioned stops it
    assert query(db, "SELECT relation, relname FROM pipeline_kafka.consumers") == [(None, None)]
    execute(db, "SELECT pipeline_kafka.consume_end_stream_partitioned(%s)", [topic])
    assert scalar(db, "SELECT enabled FROM pipeline_kafka.consumers") is False


def test_consume_stream_partitioned_safety(pg_role, fresh_db, topic_factory):
    """The safety the original lacked: the consumer belongs to its caller and writes only into
    tables of roles whose privileges it has, as their owners (issue 19.1). Keys naming another
    schema's table (qualified, quoted) are written; no key, another role's table (even with
    INSERT granted), a schema the table's owner may not use, a view or the extension's own
    offsets table: those messages
    become dead letters with the reason and SQLSTATE, the others rows, and the offsets of the
    whole batch commit."""
    role = pg_role()
    db = fresh_db
    add_broker(db)
    execute(db, f"""
        CREATE SCHEMA s;
        CREATE TABLE s."Mixed Case" (x integer);
        CREATE TABLE public.plain (x integer);
        CREATE TABLE public.secret (x integer);
        CREATE VIEW public.a_view AS SELECT 1 AS x;
        CREATE SCHEMA hidden;
        CREATE TABLE hidden.t (x integer);
        ALTER TABLE hidden.t OWNER TO "{role}";
        GRANT USAGE ON SCHEMA s TO "{role}";
        ALTER TABLE s."Mixed Case" OWNER TO "{role}";
        ALTER TABLE public.plain OWNER TO "{role}";
        GRANT INSERT ON public.secret TO "{role}";
    """)
    topic = topic_factory()
    with pg_connect(db) as conn:
        conn.execute(f'SET ROLE "{role}"')
        cid = conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, format := 'csv')",
                           [topic]).fetchone()[0]
        conn.execute("RESET ROLE")
    assert scalar(db, "SELECT owner::text FROM pipeline_kafka.consumers WHERE id = %s", [cid]) == role

    sent = [("plain", "1"), ('s."Mixed Case"', "2"), ("PLAIN", "3"), (" s . \"Mixed Case\" ", "4"),
            (None, "5"), ("no_such_table", "6"), ("secret", "7"), ("a_view", "8"),
            ("pipeline_kafka.offsets", "9"), ("bad name!", "10"), ("hidden.t", "11"),
            ("plain", "not a number"), (None, None)]  # the last: a tombstone, no rows, no dead letter
    for key, value in sent:
        produce(topic, [value], key=key)
    wait_rows(db, {"SELECT count(*) FROM pipeline_kafka.dead_letters": 8,
                   'SELECT "offset" FROM pipeline_kafka.offsets': len(sent)})
    assert query(db, "SELECT x FROM public.plain ORDER BY x") == [(1,), (3,)]
    assert query(db, 'SELECT x FROM s."Mixed Case" ORDER BY x') == [(2,), (4,)]
    assert scalar(db, "SELECT count(*) FROM public.secret") == 0
    letters = query(db, "SELECT convert_from(key, 'UTF8'), convert_from(value, 'UTF8'), sqlstate, error "
                        "FROM pipeline_kafka.dead_letters ORDER BY \"offset\"")
    by_value = {v: (k, state, err) for k, v, state, err in letters}
    assert by_value["5"][:2] == (None, "42P01") and "no key" in by_value["5"][2]
    assert by_value["6"][1] == "42P01" and "does not exist" in by_value["6"][2]
    assert by_value["7"][1] == "42501" and "belongs to postgres" in by_value["7"][2]
    assert by_value["8"][1] == "42809"
    assert by_value["9"][1] == "42501"
    assert by_value["10"][1] == "42602"
    # its own table, but no USAGE on its schema: refused, the consumer goes on
    assert by_value["11"][1] == "42501" and "schema hidden" in by_value["11"][2]
    assert scalar(db, "SELECT count(*) FROM hidden.t") == 0
    assert by_value["not a number"][1] == "22P02"
    # every message is accounted for: the offsets are past the last one (the tombstone)
    assert offsets(db) == [(cid, 0, len(sent))]
    # nothing was written into the extension's tables
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.offsets") == 1

    # Only members of the owner may change or stop it.
    other = pg_role()
    with pg_connect(db) as conn:
        conn.execute(f'SET ROLE "{other}"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pipeline_kafka.consume_end_stream_partitioned(%s)", [topic])
    with pg_connect(db) as conn:
        conn.execute(f'SET ROLE "{other}"')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s)", [topic])
    with pg_connect(db) as conn:
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT pipeline_kafka.consume_end_stream_partitioned('no_such_topic')")
    execute(db, "SELECT pipeline_kafka.consume_drop_stream_partitioned(%s)", [topic])
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0


def test_consume_text(fresh_db, topic_factory):
    """Text messages with a comma and with a tab as delimiter."""
    db = fresh_db
    add_broker(db)
    create_stream(db, "comma_stream", x="integer", y="integer", z="integer")
    create_cv(db, "comma_cv", "SELECT x, y, z FROM comma_stream")
    create_stream(db, "tab_stream", x="integer", y="integer", z="integer")
    create_cv(db, "tab_cv", "SELECT x, y, z FROM tab_stream")
    comma, tab = topic_factory(), topic_factory()
    consume_begin(db, comma, "comma_stream", delimiter=",")
    consume_begin(db, tab, "tab_stream", delimiter="\t")
    produce(comma, [",".join([str(n)] * 3) for n in range(100)])
    produce(tab, ["\t".join([str(n)] * 3) for n in range(100)])
    wait_rows(db, {"SELECT count(*) FROM comma_cv": 100, "SELECT count(*) FROM tab_cv": 100})
    assert query(db, "SELECT * FROM comma_cv ORDER BY x") == [(i, i, i) for i in range(100)]
    assert query(db, "SELECT * FROM tab_cv ORDER BY x") == [(i, i, i) for i in range(100)]


def test_grouped_consumer(fresh_db, topic_factory):
    """Consumers with a group_id keep their offsets in PostgreSQL: after a restart only the new
    messages are read; start_offset still chooses where to begin."""
    db = fresh_db
    add_broker(db)
    create_stream(db, "stream0", x="integer")
    create_stream(db, "stream1", x="integer")
    create_cv(db, "group0", "SELECT x, COUNT(*) FROM stream0 GROUP BY x")
    create_cv(db, "group1", "SELECT x, COUNT(*) FROM stream1 GROUP BY x")
    t0, t1 = topic_factory(partitions=4), topic_factory(partitions=4)
    g0, g1 = f"{t0}_group0", f"{t1}_group1"
    consume_begin(db, t0, "stream0", group_id=g0)
    consume_begin(db, t1, "stream1", group_id=g1)
    produce(t0, [str(n) for n in range(1, 101)])
    produce(t1, [str(n) for n in range(1, 101)])
    wait_rows(db, {"SELECT sum(count) FROM group0": 100, "SELECT sum(count) FROM group1": 100,
                   "SELECT count(*) FROM group0": 100, "SELECT count(*) FROM group1": 100})
    consume_end_all(db)
    assert offsets(db), "offsets are stored locally"

    produce(t0, [str(-n) for n in range(1, 101)])
    produce(t1, [str(-n) for n in range(1, 101)])
    consume_begin(db, t0, "stream0", group_id=g0)
    consume_begin(db, t1, "stream1", group_id=g1)
    # only the second batch was read after the restart: x = 1..100 then -1..-100 sums to 0
    wait_rows(db, {"SELECT sum(x) FROM group0": 0, "SELECT sum(x) FROM group1": 0,
                   "SELECT sum(count) FROM group0": 200, "SELECT sum(count) FROM group1": 200,
                   "SELECT count(*) FROM group0": 200, "SELECT count(*) FROM group1": 200})

    create_cv(db, "group2", "SELECT x FROM stream0")
    consume_end_all(db)
    execute(db, "TRUNCATE stream0")
    # skip one message per partition: start_offset is the next offset to read, in every partition
    consume_begin(db, t0, "stream0", group_id=f"{t0}_group2", start_offset=1)
    wait_rows(db, {"SELECT count(*) FROM group2": 196})


def test_produce_emit_tuple_into_a_json_stream(fresh_db, topic_factory):
    """emit_tuple sends each inserted row as JSON; a json consumer reads them into a stream."""
    db = fresh_db
    add_broker(db)
    topic = topic_factory()
    create_stream(db, "src", x="integer", y="text")
    create_stream(db, "json_stream", x="integer", y="text")
    create_cv(db, "json_cv", "SELECT x, y FROM json_stream")
    execute(db, f"CREATE TRIGGER emit AFTER INSERT ON src FOR EACH ROW "
                f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{topic}')")
    consume_begin(db, topic, "json_stream", format="json")
    execute(db, "INSERT INTO src SELECT n, 'v' || n FROM generate_series(1, 100) n")
    execute(db, "SELECT pipeline_kafka.produce_message(%s, %s)", [topic, b'{"x": 101, "y": "by hand"}'])
    wait_rows(db, {"SELECT count(*) FROM json_cv": 101})
    assert query(db, "SELECT x, y FROM json_cv ORDER BY x") == \
        [(n, f"v{n}") for n in range(1, 101)] + [(101, "by hand")]


def test_lag(fresh_db, topic_factory):
    """consumer_lag: no lag once everything is read; a stopped consumer's lag grows with what is
    produced meanwhile, a running one's does not."""
    db = fresh_db
    add_broker(db)
    create_stream(db, "stream0", x="integer")
    create_cv(db, "lag0", "SELECT count(*) FROM stream0")
    create_stream(db, "stream1", x="integer")
    create_cv(db, "lag1", "SELECT count(*) FROM stream1")
    t0, t1 = topic_factory(partitions=8), topic_factory(partitions=4)
    consume_begin(db, t0, "stream0")
    consume_begin(db, t1, "stream1")
    produce(t0, [str(n) for n in range(100)], keys=[str(n) for n in range(100)])
    produce(t1, [str(n) for n in range(100)], keys=[str(n) for n in range(100)])
    wait_rows(db, {"SELECT count FROM lag0": 100, "SELECT count FROM lag1": 100})
    consume_end_all(db)
    assert scalar(db, "SELECT sum(lag) FROM pipeline_kafka.consumer_lag") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumer_lag") == 12

    consume_begin(db, t0, "stream0")
    produce(t0, [str(n) for n in range(100)])
    produce(t1, [str(n) for n in range(100)])
    wait_rows(db, {"SELECT count FROM lag0": 200, "SELECT count FROM lag1": 100})
    lag = f"SELECT sum(lag) FROM pipeline_kafka.consumer_lag WHERE topic = %s"
    wait_until(lambda: scalar(db, lag, [t0]) == 0, timeout=30, what="no lag on the running consumer")
    assert scalar(db, lag, [t1]) == 100
    consume_end_all(db)


def test_null_offsets(fresh_db, topic_factory):
    """A partition no message was read from keeps the position consume_begin gave it (the
    original stored NULL there; see the module docstring)."""
    db = fresh_db
    add_broker(db)
    topic = topic_factory(partitions=4)
    create_stream(db, "null_stream", x="integer")
    create_cv(db, "null0", "SELECT count(*) FROM null_stream")
    consume_begin(db, topic, "null_stream", group_id=f"{topic}_null_offsets")
    produce(topic, ["1"], partition=2)
    wait_rows(db, {"SELECT count FROM null0": 1})
    consume_end_all(db)
    rows = offsets(db)
    assert [(p, o) for _, p, o in rows] == [(0, 0), (1, 0), (2, 1), (3, 0)]
    assert scalar(db, 'SELECT count(*) FROM pipeline_kafka.offsets WHERE "offset" IS NULL') == 0


def test_consume_begin_stream_partitioned_arguments(fresh_db, topic_factory):
    """Its arguments are checked as consume_begin's, each with its SQLSTATE, before anything is
    stored; a rolled-back call leaves nothing behind."""
    db = fresh_db
    topic = topic_factory()
    call = "SELECT pipeline_kafka.consume_begin_stream_partitioned(%s{})"
    with pg_connect(db) as conn:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute(call.format(""), [topic])          # no broker yet
    add_broker(db)
    cases = [
        (None, "", psycopg.errors.NullValueNotAllowed),
        (topic, ", format := 'xml'", psycopg.errors.InvalidParameterValue),
        (topic, ", start_offset := -3", psycopg.errors.InvalidParameterValue),
        (topic, ", parallelism := 0", psycopg.errors.InvalidParameterValue),
        (topic, ", on_error := 'ignore'", psycopg.errors.InvalidParameterValue),
        ("bad topic!", "", psycopg.errors.InvalidParameterValue),
        ("pi_no_such_topic_for_sure", "", psycopg.errors.UndefinedObject),
    ]
    for t, extra, error in cases:
        with pg_connect(db) as conn:
            with pytest.raises(error):
                conn.execute(call.format(extra), [t])
    with pg_connect(db) as conn:
        conn.execute("BEGIN")
        conn.execute(call.format(""), [topic])
        conn.execute("ROLLBACK")
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
