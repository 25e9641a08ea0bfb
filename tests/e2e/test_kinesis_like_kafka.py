"""Kafka and Kinesis alike (issue 24.12): one id sequence for every consumer (fresh and updated
databases), pipeline_kinesis.consumer_lag, and pipeline_kinesis.seek (to a record, to a time,
fenced against running workers, its errors with their SQLSTATEs).

Every wait is bounded (wait_until); each "not ingested again" assertion follows a marker record
put after it and seen ingested (a shard is read in order).
"""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, fresh_db as fresh_database, kinesis_add_endpoint, kinesis_consume_begin,
                       kinesis_put_records, kinesis_split_shard, kpl_aggregate, pg_connect, query, scalar, wait_until)


def _values(db: str, table: str = "t") -> Counter:
    return Counter(v for (v,) in query(db, f"SELECT v FROM {table}"))


def _wait_values(db: str, want: Counter, table: str = "t", timeout: float = 60.0) -> None:
    wait_until(lambda: _values(db, table) == want, timeout=timeout,
               what=f"rows {dict(want)} in {table} (have {dict(_values(db, table))})")


def _wait_clock_past(t: float, margin: float = 0.01) -> None:
    """Until the wall clock is `margin` s past t (kinesalite stamps arrivals in milliseconds)."""
    wait_until(lambda: time.time() > t + margin, timeout=2, interval=0.002, what="the clock to move on")


def _seek(db: str, stream: str, relation: str = "t", user: str | None = None, **kw) -> int:
    args = "".join(f", {k} := %s" for k in kw)
    with pg_connect(db, user=user) as conn:
        return conn.execute(f"SELECT pipeline_kinesis.seek('local', %s, %s{args})",
                            [stream, relation, *kw.values()]).fetchone()[0]


# --------------------------------------------------------------------------- one id sequence


@pytest.mark.timeout(120)
def test_kafka_and_kinesis_consumers_never_share_an_id(fresh_db, topic_factory, stream_factory):
    """Kafka, Kinesis and stream-partitioned consumers take their ids from one sequence: in a fresh
    database no two consumers of either system have the same id (on 0.6.0 both had a consumer 1)."""
    db = fresh_db
    topic, topic2 = topic_factory(1), topic_factory(1)
    stream, _ = stream_factory(1)
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        for t in ("a", "b", "c"):
            conn.execute(f"CREATE TABLE {t} (v text)")
        ids = [
            kinesis_consume_begin(conn, "local", stream, "a"),
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'a')", [topic]).fetchone()[0],
            kinesis_consume_begin(conn, "local", stream, "b"),
        ]
        conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s)", [topic2])
        ids.append(conn.execute("SELECT id FROM pipeline_kafka.consumers WHERE topic = %s", [topic2]).fetchone()[0])
        ids.append(kinesis_consume_begin(conn, "local", stream, "c"))
    assert ids == sorted(ids) and len(set(ids)) == 5, ids
    kafka = {r[0] for r in query(db, "SELECT id FROM pipeline_kafka.consumers")}
    kinesis = {r[0] for r in query(db, "SELECT id FROM pipeline_kinesis.consumers")}
    assert kafka & kinesis == set() and kafka | kinesis == set(ids)


@pytest.mark.timeout(120)
def test_an_updated_database_numbers_new_consumers_past_both_systems(topic_factory, stream_factory):
    """A 0.6.0 database with Kafka consumer 1 and Kinesis consumers 1 and 2: after the update the
    old ids stay (documented), and new consumers of either system get 3, 4, ..."""
    topic = topic_factory(1)
    stream, _ = stream_factory(1)
    with fresh_database(extension=False) as db:
        with pg_connect(db) as conn:
            conn.execute("CREATE EXTENSION pipeline_ingest VERSION '0.6.0'")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
            for t in ("a", "b", "c", "d"):
                conn.execute(f"CREATE TABLE {t} (v text)")
        kinesis_add_endpoint(db)
        with pg_connect(db) as conn:
            assert conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'a')", [topic]).fetchone()[0] == 1
            assert kinesis_consume_begin(conn, "local", stream, "a") == 1
            assert kinesis_consume_begin(conn, "local", stream, "b") == 2
            conn.execute("ALTER EXTENSION pipeline_ingest UPDATE")
        with pg_connect(db) as conn:
            assert kinesis_consume_begin(conn, "local", stream, "c") == 3
            assert conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'd')", [topic]).fetchone()[0] == 4
            # the old consumers keep their ids and their rows
            assert conn.execute("SELECT array_agg(id ORDER BY id) FROM pipeline_kinesis.consumers").fetchone()[0] == [1, 2, 3]
            assert conn.execute("SELECT array_agg(id ORDER BY id) FROM pipeline_kafka.consumers").fetchone()[0] == [1, 4]
            assert conn.execute("SELECT to_regclass('pipeline_kinesis.consumers_id_seq')").fetchone()[0] is None


# --------------------------------------------------------------------------- consumer_lag


@pytest.mark.timeout(180)
def test_kinesis_consumer_lag(fresh_db, roles, stream_factory):
    """One row per consumer and shard: the checkpoint, millis_behind_latest while a worker reads
    the shard (NULL once stopped), lag 0 for a shard read to its end (a split's parent), NULL where
    Kinesis does not say; only the consumer owner's members see its rows."""
    db = fresh_db
    owner, outsider = roles("pi_lag_owner"), roles("pi_lag_outsider")
    stream, shards = stream_factory(2)
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    with pg_connect(db, user=owner) as conn:
        conn.execute("CREATE TABLE t (v text)")
        cid = kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2)
    put = kinesis_put_records(stream, [(f"k{i}", f"r{i}") for i in range(40)])
    last = {}
    for shard, seq in put:
        last[shard] = seq
    assert set(last) == set(shards)

    def lag_rows(user=None):
        with pg_connect(db, user=user) as conn:
            return conn.execute("SELECT consumer_id, stream, shard_id, sequence_number, millis_behind_latest, lag "
                                "FROM pipeline_kinesis.consumer_lag ORDER BY shard_id").fetchall()

    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 40, timeout=60, what="40 rows")
    wait_until(lambda: [(r[2], r[3]) for r in lag_rows()] == sorted(last.items())
               and all(r[4] is not None for r in lag_rows()), timeout=30,
               what=f"checkpoints and millis_behind_latest in consumer_lag (have {lag_rows()})")
    rows = lag_rows(owner)
    assert [(r[0], r[1]) for r in rows] == [(cid, stream)] * 2
    assert all(r[4] >= 0 and r[5] is None for r in rows), rows
    assert lag_rows(outsider) == []

    # A split: the parent is read to its end (lag 0 in records), its children are read.
    children = kinesis_split_shard(stream, shards[0])
    wait_until(lambda: any(r[2] == shards[0] and r[5] == 0 for r in lag_rows()), timeout=60,
               what=f"the split parent finished in consumer_lag (have {lag_rows()})")
    parent = [r for r in lag_rows() if r[2] == shards[0]][0]
    assert parent[4] is None and parent[3] == last[shards[0]], parent
    wait_until(lambda: {r[2] for r in lag_rows()} >= set(children), timeout=60, what="the children in consumer_lag")

    with pg_connect(db, user=owner) as conn:
        conn.execute("SELECT pipeline_kinesis.consume_end('local', %s, 't')", [stream])
    wait_until(lambda: all(r[4] is None for r in lag_rows()), timeout=30,
               what=f"millis_behind_latest NULL once stopped (have {lag_rows()})")
    assert len(lag_rows(owner)) == len(lag_rows()) >= 4


# --------------------------------------------------------------------------- seek


@pytest.mark.timeout(180)
def test_seek_back_to_a_record_reingests_from_that_record(fresh_db, stream_factory):
    """While the consumer runs, seek(shard, sequence_number of record 4) makes records 4..9 be
    read again, each once (the record named included: AT_SEQUENCE_NUMBER), then reading goes on."""
    db = fresh_db
    stream, (shard,) = stream_factory(1)
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (v text)")
        cid = kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2)
    put = kinesis_put_records(stream, [("k", f"r{i}") for i in range(10)])
    first = Counter(f"r{i}" for i in range(10))
    _wait_values(db, first)
    gen = scalar(db, "SELECT generation FROM pipeline_kinesis.consumers WHERE id = %s", [cid])

    assert _seek(db, stream, shard_id=shard, sequence_number=put[4][1]) == 1
    assert scalar(db, "SELECT generation FROM pipeline_kinesis.consumers WHERE id = %s", [cid]) == gen + 1
    want = first + Counter(f"r{i}" for i in range(4, 10))
    _wait_values(db, want)
    (_, marker), = kinesis_put_records(stream, [("k", "marker")])
    _wait_values(db, want + Counter(["marker"]))
    # the checkpoint is the last record again (committed with its row)
    assert query(db, "SELECT seqnum, finished FROM pipeline_kinesis.seqnums WHERE consumer_id = %s", [cid]) \
        == [(marker, False)]


@pytest.mark.timeout(120)
def test_seek_to_a_kpl_aggregate_reads_all_its_user_records_again(fresh_db, stream_factory):
    """A sequence number names a whole record: seeking to a KPL aggregate reads every one of its
    user records again, then what follows it."""
    db = fresh_db
    stream, (shard,) = stream_factory(1)
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (v text)")
        kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2)
    put = kinesis_put_records(stream, [("p", "p0"), ("agg", kpl_aggregate([(f"k{i}", f"a{i}") for i in range(5)])),
                                       ("p", "p1")])
    once = Counter(["p0", "p1"] + [f"a{i}" for i in range(5)])
    _wait_values(db, once)
    assert _seek(db, stream, shard_id=shard, sequence_number=put[1][1]) == 1
    _wait_values(db, once + Counter(["p1"] + [f"a{i}" for i in range(5)]))


@pytest.mark.timeout(180)
def test_seek_during_ingestion_is_fenced(fresh_db, stream_factory):
    """A seek while the worker is writing a batch: the batch read from the old position does not
    commit, the worker restarts at the new one. With the consumer row locked by the test (no batch
    half-way), checkpoint record c and the shard moved back to record c-4: every record is in the
    table once, except c-4 .. c, exactly twice."""
    db = fresh_db
    stream, (shard,) = stream_factory(1)
    kinesis_add_endpoint(db)
    n = 600
    put = kinesis_put_records(stream, [("k", str(i)) for i in range(n)])
    index = {seq: i for i, (_, seq) in enumerate(put)}
    with pg_connect(db) as conn:
        # a slow trigger keeps the worker inside its batches (10 records each, ~50 ms)
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("""CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$""")
        conn.execute("CREATE TRIGGER slow BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION slow()")
        cid = kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2, batchsize=10)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") >= 100, timeout=60, what="100 rows")
    with pg_connect(db) as conn:
        with conn.transaction():
            conn.execute("SELECT 1 FROM pipeline_kinesis.consumers WHERE id = %s FOR UPDATE", [cid])
            seq = conn.execute("SELECT seqnum FROM pipeline_kinesis.seqnums WHERE consumer_id = %s", [cid]).fetchone()[0]
            c = index[seq]
            assert c < n - 1, "ingestion finished before the seek; the test needs it mid-way"
            wait_until(lambda: scalar(db, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                                          "WHERE NOT l.granted AND a.backend_type = 'pipeline_kinesis consumer' "
                                          "AND a.datname = %s", [db]) > 0,
                       timeout=30, what="the worker's batch waiting for the consumer row")
            assert conn.execute("SELECT pipeline_kinesis.seek('local', %s, 't', shard_id := %s, sequence_number := %s)",
                                [stream, shard, put[c - 4][1]]).fetchone()[0] == 1
    want = Counter(str(i) for i in range(n)) + Counter(str(i) for i in range(c - 4, c + 1))
    _wait_values(db, want, timeout=120)
    wait_until(lambda: scalar(db, "SELECT seqnum FROM pipeline_kinesis.seqnums WHERE consumer_id = %s", [cid])
               == put[-1][1], timeout=30, what="the checkpoint at the last record")
    assert _values(db) == want


@pytest.mark.timeout(180)
def test_seek_to_a_time(fresh_db, stream_factory):
    """seek(start_time := t) of a stopped consumer moves every shard to the first record that
    arrived at or after t; consume_begin() resumes there: exactly the later records again. With a
    shard_id, only that shard moves."""
    db = fresh_db
    stream, shards = stream_factory(2)
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (v text)")
        kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2)
    early = kinesis_put_records(stream, [(f"k{i}", f"early{i}") for i in range(20)])
    _wait_clock_past(time.time())
    t = datetime.fromtimestamp(time.time(), tz=timezone.utc)
    _wait_clock_past(t.timestamp())
    late = kinesis_put_records(stream, [(f"k{i}", f"late{i}") for i in range(20)])
    assert {s for s, _ in early} == {s for s, _ in late} == set(shards)
    every = Counter(f"early{i}" for i in range(20)) + Counter(f"late{i}" for i in range(20))
    _wait_values(db, every)

    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kinesis.consume_end('local', %s, 't')", [stream])
    assert _seek(db, stream, start_time=t) == 2
    assert scalar(db, "SELECT pipeline_kinesis.consume_begin()") == 1
    again = every + Counter(f"late{i}" for i in range(20))
    _wait_values(db, again)

    # One shard only: its late records once more, the other shard's none.
    one = shards[1]
    late_of_one = Counter(f"late{i}" for i, (s, _) in enumerate(late) if s == one)
    assert 0 < sum(late_of_one.values()) < 20
    assert _seek(db, stream, shard_id=one, start_time=t) == 1
    kinesis_put_records(stream, [(f"k{i}", f"marker{i}") for i in range(20)])
    _wait_values(db, again + late_of_one + Counter(f"marker{i}" for i in range(20)))


@pytest.mark.timeout(120)
def test_seek_errors(fresh_db, roles, stream_factory):
    """42501 for a role that is not a member of the consumer's owner; 22023 both or neither of
    sequence_number and start_time, a sequence_number without its shard_id, a malformed one, one of
    another shard, an unknown shard, an infinite time; 22008 a time past 9999; 42704 no such
    consumer; 22004 a NULL stream. A refused seek moves nothing."""
    db = fresh_db
    outsider = roles("pi_seek_outsider")
    stream, shards = stream_factory(2)
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {outsider}")
        cid = kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2)
    put = kinesis_put_records(stream, [(f"k{i}", f"r{i}") for i in range(20)])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 20, timeout=60, what="20 rows")
    seq_of = {s: q for s, q in put}
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kinesis.consume_end('local', %s, 't')", [stream])
    before = (scalar(db, "SELECT generation FROM pipeline_kinesis.consumers WHERE id = %s", [cid]),
              query(db, "SELECT * FROM pipeline_kinesis.seqnums ORDER BY shard_id"))
    s0, s1 = shards
    for sql, args, state in [
        ("SELECT pipeline_kinesis.seek('local', %s, 't')", [stream], "22023"),
        ("SELECT pipeline_kinesis.seek('local', %s, 't', shard_id := %s, sequence_number := %s, start_time := now())",
         [stream, s0, seq_of[s0]], "22023"),
        ("SELECT pipeline_kinesis.seek('local', %s, 't', sequence_number := %s)", [stream, seq_of[s0]], "22023"),
        ("SELECT pipeline_kinesis.seek('local', %s, 't', shard_id := %s, sequence_number := '12a')", [stream, s0], "22023"),
        ("SELECT pipeline_kinesis.seek('local', %s, 't', shard_id := %s, sequence_number := %s)",
         [stream, s1, seq_of[s0]], "22023"),
        ("SELECT pipeline_kinesis.seek('local', %s, 't', shard_id := 'shardId-000000000099', start_time := now())",
         [stream], "22023"),
        ("SELECT pipeline_kinesis.seek('local', %s, 't', start_time := 'infinity')", [stream], "22023"),
        ("SELECT pipeline_kinesis.seek('local', %s, 't', start_time := '10000-01-01 00:00+00')", [stream], "22008"),
        ("SELECT pipeline_kinesis.seek('local', %s, 'no_such_table', start_time := now())", [stream], "42704"),
        ("SELECT pipeline_kinesis.seek('local', %s || 'x', 't', start_time := now())", [stream], "42704"),
        ("SELECT pipeline_kinesis.seek('local', NULL, 't', start_time := now()) WHERE %s::text IS NOT NULL",
         [stream], "22004"),
    ]:
        with pg_connect(db) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, args)
            assert e.value.sqlstate == state, (sql, e.value)
            assert "panicked" not in str(e.value) and "backtrace" not in str(e.value).lower(), e.value
    with pg_connect(db, user=outsider) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT pipeline_kinesis.seek('local', %s, 'public.t', start_time := now())", [stream])
        assert e.value.sqlstate == "42501", e.value
    assert (scalar(db, "SELECT generation FROM pipeline_kinesis.consumers WHERE id = %s", [cid]),
            query(db, "SELECT * FROM pipeline_kinesis.seqnums ORDER BY shard_id")) == before
    # The owner (here the superuser) may: one shard moved, its checkpoint replaced by the position.
    assert _seek(db, stream, shard_id=s1, sequence_number=seq_of[s1]) == 1
    assert query(db, "SELECT q.shard_id, q.seqnum, q.finished, k.sequence_number, k.start_time "
                     "FROM pipeline_kinesis.seqnums q JOIN pipeline_kinesis.seeks k USING (consumer_id, shard_id) "
                     "WHERE consumer_id = %s", [cid]) == [(s1, None, False, seq_of[s1], None)]
    # consume_begin with a start forgets the seek with the checkpoints
    with pg_connect(db) as conn:
        kinesis_consume_begin(conn, "local", stream, "t", start_offset=-1)
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.seeks") == 0
