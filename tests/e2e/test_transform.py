"""Transforms (consume_begin's `transform`): a SQL function receives each batch as
pipeline_kafka.message[] (pipeline_kinesis.record[]) inside the batch transaction, as the
consumer's owner. SETOF the relation's row type: its rows are inserted; void: it wrote itself.
A failing message is found by bisection and dead-lettered with its raw bytes and the function's
error; the rest commits with the offsets, exactly once across a crash. The function cannot write
what its owner cannot, nor leave its role or settings behind for the worker."""
from __future__ import annotations

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records, pg_connect,
                       pg_kill9_postmaster, pg_start, produce, query, scalar, wait_until)


def _begin(conn, topic: str, relation: str, **kw) -> int:
    conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s, start_offset := -2{args})",
                        [topic, relation] + [kw[n] for n in names]).fetchone()[0]


GRAPH = """
CREATE TABLE nodes (id int PRIMARY KEY);
CREATE TABLE edges (a int REFERENCES nodes, b int REFERENCES nodes, PRIMARY KEY (a, b));
-- Memgraph's example: "1" is a node, "1 2" an edge (with its nodes)
CREATE FUNCTION graph(batch pipeline_kafka.message[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  m pipeline_kafka.message;
  ids int[];
BEGIN
  FOREACH m IN ARRAY batch LOOP
    ids := string_to_array(convert_from(m.value, 'UTF8'), ' ')::int[];
    IF cardinality(ids) NOT IN (1, 2) THEN
      RAISE EXCEPTION 'expected "a" or "a b", got %', convert_from(m.value, 'UTF8') USING ERRCODE = '22023';
    END IF;
    INSERT INTO nodes SELECT unnest(ids) ON CONFLICT DO NOTHING;
    IF cardinality(ids) = 2 THEN
      INSERT INTO edges VALUES (ids[1], ids[2]) ON CONFLICT DO NOTHING;
    END IF;
  END LOOP;
END $$;
"""


@pytest.mark.timeout(120)
def test_memgraph_like_void_transform_writes_nodes_and_edges(fresh_db, topic_factory):
    topic = topic_factory(1)
    sent = produce(topic, ["1", "2", "1 2", "3", "2 3", "1 2 3", "4 x", "3 1"])
    with pg_connect(fresh_db) as conn:
        conn.execute(GRAPH)
        cid = _begin(conn, topic, "nodes", transform="graph(pipeline_kafka.message[])")
    wait_until(lambda: scalar(fresh_db, 'SELECT max("offset") FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                              [cid]) == len(sent), timeout=60, what="every message committed")
    assert [r[0] for r in query(fresh_db, "SELECT id FROM nodes ORDER BY id")] == [1, 2, 3]
    assert query(fresh_db, "SELECT a, b FROM edges ORDER BY a, b") == [(1, 2), (2, 3), (3, 1)]
    letters = query(fresh_db, 'SELECT "offset", convert_from(value, \'UTF8\'), sqlstate, error '
                              'FROM pipeline_kafka.dead_letters ORDER BY "offset"')
    assert [(r[0], r[1], r[2]) for r in letters] == [(5, "1 2 3", "22023"), (6, "4 x", "22P02")]
    assert 'expected "a" or "a b", got 1 2 3' in letters[0][3]


@pytest.mark.timeout(120)
def test_setof_transform_rows_carry_every_message_field(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ["a"], key="k1", headers=[("h", b"1"), ("h", b"2"), ("solo", None), ("x", b"y")])
    produce(topic, ["b", "c"])
    with pg_connect(fresh_db) as conn:
        conn.execute("""
            CREATE TABLE t (topic text, part int, off bigint, k text, v text, ts timestamptz, h jsonb, n int);
            CREATE FUNCTION shout(batch pipeline_kafka.message[]) RETURNS SETOF t LANGUAGE sql AS $$
              SELECT m.topic, m."partition", m."offset", convert_from(m.key, 'UTF8'), upper(convert_from(m.value, 'UTF8')),
                     m."timestamp", m.headers, cardinality(batch)
              FROM unnest(batch) m $$;""")
        _begin(conn, topic, "t", transform="shout(pipeline_kafka.message[])")
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 3, timeout=60, what="3 rows")
    rows = query(fresh_db, "SELECT topic, part, off, k, v, ts > now() - interval '10 minutes', h FROM t ORDER BY off")
    assert rows == [
        (topic, 0, 0, "k1", "A", True, {"h": ["1", "2"], "solo": None, "x": "y"}),
        (topic, 0, 1, None, "B", True, None),
        (topic, 0, 2, None, "C", True, None),
    ]
    # all three came in one batch (produced before consume_begin): one call, one array
    assert scalar(fresh_db, "SELECT min(n) FROM t") == 3
    assert scalar(fresh_db, "SELECT sum(rows) FROM pipeline_kafka.consumer_status") == 3


@pytest.mark.timeout(120)
def test_transform_errors_dead_letter_exactly_the_failing_messages(fresh_db, topic_factory):
    topic = topic_factory(1)
    values = [f"v{i}" for i in range(40)]
    bad = {3, 17, 18, 39}
    for i in bad:
        values[i] = f"bad{i}"
    sent = produce(topic, values)
    with pg_connect(fresh_db) as conn:
        conn.execute("""
            CREATE TABLE t (v text);
            CREATE FUNCTION picky(batch pipeline_kafka.message[]) RETURNS SETOF t LANGUAGE sql AS $$
              SELECT convert_from(m.value, 'UTF8') || (1 / (convert_from(m.value, 'UTF8') NOT LIKE 'bad%')::int)::text
              FROM unnest(batch) m $$;""")
        cid = _begin(conn, topic, "t", transform="picky(pipeline_kafka.message[])")
    wait_until(lambda: scalar(fresh_db, 'SELECT max("offset") FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                              [cid]) == len(sent), timeout=60, what="every message committed")
    assert sorted(r[0] for r in query(fresh_db, "SELECT v FROM t")) == sorted(f"v{i}1" for i in range(40) if i not in bad)
    letters = query(fresh_db, 'SELECT "offset", value, sqlstate, error FROM pipeline_kafka.dead_letters ORDER BY "offset"')
    assert [(r[0], bytes(r[1]), r[2]) for r in letters] == [(i, f"bad{i}".encode(), "22012") for i in sorted(bad)]
    assert all("division by zero" in r[3] for r in letters)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_transform_exactly_once_across_kill9(fresh_db, topic_factory):
    topic = topic_factory(2)
    n = 30_000
    with pg_connect(fresh_db) as conn:
        conn.execute("""
            CREATE TABLE t (id bigint);  -- no unique constraint: duplicates would show
            CREATE TABLE calls (n int);   -- the transform's own write, beside its rows
            CREATE FUNCTION ids(batch pipeline_kafka.message[]) RETURNS SETOF t LANGUAGE plpgsql AS $$
            BEGIN
              INSERT INTO calls VALUES (cardinality(batch));
              RETURN QUERY SELECT convert_from(m.value, 'UTF8')::bigint FROM unnest(batch) m;
            END $$;""")
    for p in range(2):
        produce(topic, (str(i) for i in range(p, n, 2)), partition=p, timeout=120)
    with pg_connect(fresh_db) as conn:
        cid = _begin(conn, topic, "t", transform="ids(pipeline_kafka.message[])", batchsize=200, parallelism=2)

    def progress() -> int:
        return scalar(fresh_db, 'SELECT coalesce(sum("offset"), 0)::bigint FROM pipeline_kafka.offsets '
                                'WHERE consumer_id = %s', [cid])

    seen = wait_until(lambda: (lambda v: v if v >= n // 5 else 0)(progress()), timeout=60, interval=0.01,
                      what="a fifth ingested")
    assert seen < n, "ingestion finished before the kill could land"
    pg_kill9_postmaster()
    pg_start()
    rows, calls, offs = query(fresh_db, 'SELECT (SELECT count(*) FROM t), (SELECT coalesce(sum(n), 0) FROM calls), '
                                        '(SELECT coalesce(sum("offset"), 0)::bigint FROM pipeline_kafka.offsets '
                                        'WHERE consumer_id = %s)', [cid])[0]
    assert rows == calls == offs >= seen, (rows, calls, offs, seen)
    wait_until(lambda: progress() == n, timeout=120, what="every message committed after the restart")
    assert query(fresh_db, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t") == [(n, n, 0, n - 1)]
    assert scalar(fresh_db, "SELECT sum(n) FROM calls") == n


@pytest.mark.timeout(120)
def test_transform_cannot_write_what_its_owner_cannot(pg_role, fresh_db, topic_factory):
    """mallory's consumer with mallory's transform writing into a table mallory may not write:
    the batch fails (not about the data: retried, shown in last_error), nothing is written, no
    offset moves, nothing is dead-lettered."""
    mallory = pg_role()
    topic = topic_factory(1)
    produce(topic, ["x"])
    with pg_connect(fresh_db) as conn:
        conn.execute(f"""
            CREATE TABLE victim (v text);
            CREATE TABLE m_t (v text);
            ALTER TABLE m_t OWNER TO "{mallory}";
            CREATE FUNCTION sneak(batch pipeline_kafka.message[]) RETURNS void LANGUAGE sql
              AS $$ INSERT INTO victim SELECT 'pwned' $$;
            ALTER FUNCTION sneak(pipeline_kafka.message[]) OWNER TO "{mallory}";""")
        cid = _begin(conn, topic, "m_t", transform="sneak(pipeline_kafka.message[])")
        assert scalar(fresh_db, "SELECT owner::text FROM pipeline_kafka.consumers WHERE id = %s", [cid]) == mallory
    err = wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", [cid]),
                     timeout=60, what="the batch's error")
    assert "permission denied for table victim" in err and "42501" in err, err
    assert scalar(fresh_db, "SELECT count(*) FROM victim") == 0
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
    assert scalar(fresh_db, 'SELECT coalesce(max("offset"), 0) FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                  [cid]) == 0


@pytest.mark.timeout(120)
def test_transform_runs_as_owner_and_leaves_no_role_or_setting_behind(pg_role, fresh_db, topic_factory):
    alice = pg_role()
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute(f"""
            CREATE TABLE seen (v text, usr text, path text, custom text, set_role text);
            ALTER TABLE seen OWNER TO "{alice}";
            CREATE FUNCTION nosy(batch pipeline_kafka.message[]) RETURNS SETOF seen LANGUAGE plpgsql AS $$
            DECLARE
              refused text := 'allowed';
              before_path text := current_setting('search_path');
              before_custom text := current_setting('pi_test.leak', true);
            BEGIN
              BEGIN
                SET ROLE postgres;
              EXCEPTION WHEN OTHERS THEN
                refused := SQLSTATE;
              END;
              PERFORM set_config('search_path', 'evil, public', false);
              PERFORM set_config('pi_test.leak', 'leaked', false);
              RETURN QUERY SELECT convert_from(m.value, 'UTF8'), current_user::text, before_path, before_custom, refused
                           FROM unnest(batch) m;
            END $$;
            ALTER FUNCTION nosy(pipeline_kafka.message[]) OWNER TO "{alice}";""")
        cid = _begin(conn, topic, "seen", transform="nosy(pipeline_kafka.message[])")
    produce(topic, ["first"])
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM seen") == 1, timeout=60, what="the first batch")
    produce(topic, ["second"])
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM seen") == 2, timeout=60, what="the second batch")
    rows = query(fresh_db, "SELECT v, usr, path, coalesce(custom, ''), set_role FROM seen ORDER BY v")
    path = rows[0][2]
    assert "evil" not in path
    # the second batch starts with the search_path and (empty) setting the first one found
    assert rows == [("first", alice, path, "", "42501"), ("second", alice, path, "", "42501")], rows
    assert scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", [cid]) is None


@pytest.mark.timeout(120)
def test_kinesis_transform_gets_records(stream_factory, fresh_db):
    stream, shards = stream_factory(1)
    kinesis_add_endpoint(fresh_db)
    sent = kinesis_put_records(stream, [("pk-a", "one"), ("pk-b", "two")])
    with pg_connect(fresh_db) as conn:
        conn.execute("""
            CREATE TABLE r (stream text, shard text, seq text, sub bigint, pk text, data text, at timestamptz);
            CREATE FUNCTION recs(batch pipeline_kinesis.record[]) RETURNS SETOF r LANGUAGE sql AS $$
              SELECT m.stream, m.shard_id, m.sequence_number, m.sub_sequence, m.partition_key,
                     convert_from(m.data, 'UTF8'), m.arrival_time FROM unnest(batch) m $$;""")
        kinesis_consume_begin(conn, "local", stream, "r", start_offset=-2, transform="recs(pipeline_kinesis.record[])")
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM r") == 2, timeout=60, what="2 records")
    rows = query(fresh_db, "SELECT stream, shard, seq, sub, pk, data, at IS NOT NULL FROM r ORDER BY seq::numeric")
    assert rows == [(stream, sent[0][0], sent[0][1], None, "pk-a", "one", True),
                    (stream, sent[1][0], sent[1][1], None, "pk-b", "two", True)]
    assert shards == [sent[0][0]]


@pytest.mark.parametrize("function,sqlstate", [
    ("CREATE FUNCTION f(text) RETURNS void LANGUAGE sql AS 'SELECT'", "42883"),
    ("CREATE FUNCTION f(pipeline_kinesis.record[]) RETURNS void LANGUAGE sql AS 'SELECT'", "42883"),
    ("CREATE FUNCTION f(pipeline_kafka.message[]) RETURNS SETOF int LANGUAGE sql AS 'SELECT 1'", "42804"),
    ("CREATE FUNCTION f(pipeline_kafka.message[]) RETURNS void LANGUAGE sql AS 'SELECT';"
     "REVOKE EXECUTE ON FUNCTION f(pipeline_kafka.message[]) FROM PUBLIC", "42501"),
    ("CREATE FUNCTION f(pipeline_kafka.message[]) RETURNS void LANGUAGE sql AS 'SELECT'", None),
])
def test_consume_begin_checks_the_function(pg_role, fresh_db, function, sqlstate):
    """Signature 42883, return type 42804, EXECUTE for the consumer's owner (the table's) 42501;
    checked before any broker is asked (none is configured here: 55000 is how far a valid call
    gets)."""
    owner = pg_role()
    with pg_connect(fresh_db) as conn:
        conn.execute(f'CREATE TABLE t (v text); ALTER TABLE t OWNER TO "{owner}"; {function}')
        argtype = "pipeline_kinesis.record[]" if "record[]" in function else ("text" if "f(text)" in function
                                                                                else "pipeline_kafka.message[]")
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT pipeline_kafka.consume_begin('topic', 't', transform := %s)", [f"f({argtype})"])
        assert err.value.sqlstate == (sqlstate or "55000"), err.value
