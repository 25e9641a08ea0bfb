"""pipeline_kafka.seek: rewinding and skipping a consumer's partitions from SQL (one partition or
all; an offset, -1/-2, or a time), fenced against its running workers (no duplicate and no loss
around a seek during ingestion), and its errors with their SQLSTATEs.

Every wait is bounded (wait_until); each "not ingested" assertion follows a marker message
produced after it and seen ingested.
"""
from __future__ import annotations

import time
from collections import Counter

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, wait_until


def _setup(db: str, table: str = "t") -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute(f"CREATE TABLE {table} (v text)")


def _values(db: str, table: str = "t") -> Counter:
    return Counter(v for (v,) in query(db, f"SELECT v FROM {table}"))


def _wait_values(db: str, want: Counter, table: str = "t", timeout: float = 60.0) -> None:
    wait_until(lambda: _values(db, table) == want, timeout=timeout,
               what=f"rows {dict(want)} in {table} (have {dict(_values(db, table))})")


def _seek(db: str, topic: str, relation: str = "t", **kw) -> int:
    args = "".join(f', "{k}" := %s' for k in kw)
    return scalar(db, f"SELECT pipeline_kafka.seek(%s, %s{args})", [topic, relation, *kw.values()])


@pytest.mark.timeout(180)
def test_seek_offsets_and_times(fresh_db, topic_factory):
    """Rewind one partition to an offset (its messages from there are read again, the other
    partition's are not), skip all partitions to the end (-1), rewind all to the beginning (-2),
    and to a time (the first message stamped at or after it)."""
    db = fresh_db
    _setup(db)
    topic = topic_factory(2)
    produce(topic, ["p0-0", "p0-1", "p0-2"], partition=0)
    produce(topic, ["p1-0", "p1-1"], partition=1)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', start_offset := -2)", [topic])
    base = Counter(["p0-0", "p0-1", "p0-2", "p1-0", "p1-1"])
    _wait_values(db, base)

    assert _seek(db, topic, partition=0, offset=1) == 1
    base.update(["p0-1", "p0-2"])
    _wait_values(db, base)

    # -1: skip what is there now; only later messages arrive
    gen = scalar(db, "SELECT generation FROM pipeline_kafka.consumers")
    assert _seek(db, topic, offset=-1) == 2
    assert scalar(db, "SELECT generation FROM pipeline_kafka.consumers") == gen + 1
    produce(topic, ["p1-marker"], partition=1)
    base.update(["p1-marker"])
    _wait_values(db, base)

    # -2: everything again
    assert _seek(db, topic, offset=-2) == 2
    base.update(["p0-0", "p0-1", "p0-2", "p1-0", "p1-1", "p1-marker"])
    _wait_values(db, base)

    # a time: the first message stamped at or after it, per partition
    # a minute ahead: after every message above (the broker refuses more than an hour ahead)
    t0 = int(time.time() * 1000) + 60_000
    _produce_at(topic, [(0, "p0-late", t0 + 1000), (1, "p1-late", t0 + 2000)])
    base.update(["p0-late", "p1-late"])
    _wait_values(db, base)
    assert _seek(db, topic, start_time=_ts(t0 + 1500)) == 2
    base.update(["p1-late"])  # p0 has no message that recent: its end
    _wait_values(db, base)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])


def _produce_at(topic: str, items: list[tuple[int, str, int]]) -> None:
    """(partition, value, timestamp ms) each; every delivery must succeed."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "enable.idempotence": True})
    errors: list = []
    for part, value, ts in items:
        p.produce(topic, value=value.encode(), partition=part, timestamp=ts,
                  on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert p.flush(30) == 0 and not errors, errors


def _ts(ms: int):
    import datetime
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


@pytest.mark.timeout(180)
def test_seek_during_ingestion_is_fenced(fresh_db, topic_factory):
    """A seek while the worker is writing a batch: the batch that read from the old position does
    not commit (the consumer's generation and stored offset moved), the worker restarts at the new
    position. With the stored offset S locked by the test and the partition rewound to S - 5,
    every message is in the table exactly once, except S-5 .. S-1, exactly twice."""
    db = fresh_db
    _setup(db)
    topic = topic_factory(1)
    n = 600
    produce(topic, [str(i) for i in range(n)], partition=0)
    with pg_connect(db) as conn:
        # a slow trigger keeps the worker inside its batches (10 messages each, ~50 ms)
        conn.execute("""CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END $$""")
        conn.execute("CREATE TRIGGER slow BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION slow()")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', start_offset := -2, batchsize := 10)",
                           [topic]).fetchone()[0]
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") >= 100, timeout=60, what="100 rows")
    with pg_connect(db) as conn:
        with conn.transaction():
            # Holding the consumer row: no batch is half-way (each holds it FOR SHARE until it
            # commits), and the worker's next one, holding messages read from S on, waits for it.
            conn.execute("SELECT 1 FROM pipeline_kafka.consumers WHERE id = %s FOR UPDATE", [cid])
            s = conn.execute('SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', [cid]).fetchone()[0]
            assert s < n, "ingestion finished before the seek; the test needs it mid-way"
            wait_until(lambda: scalar(db, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                                          "WHERE NOT l.granted AND a.backend_type = 'pipeline_kafka consumer' "
                                          "AND a.datname = %s", [db]) > 0,
                       timeout=30, what="the worker's batch waiting for the consumer row")
            assert conn.execute("SELECT pipeline_kafka.seek(%s, 't', \"partition\" := 0, \"offset\" := %s)",
                                [topic, s - 5]).fetchone()[0] == 1
    want = Counter(str(i) for i in range(n))
    want.update(str(i) for i in range(s - 5, s))
    _wait_values(db, want, timeout=120)
    wait_until(lambda: scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', [cid]) == n,
               timeout=30, what="offset at the end")
    assert _values(db) == want
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])


@pytest.mark.timeout(120)
def test_seek_errors(pg_role, fresh_db, topic_factory):
    """42704 unknown consumer; 22023 partition out of range, both or neither of offset and
    start_time, offset < -2 or past the end, an infinite time; 22004 NULL topic; 42501 for a role
    that is not a member of the consumer's owner. A refused seek moves nothing."""
    outsider = pg_role()
    db = fresh_db
    _setup(db)
    topic = topic_factory(2)
    produce(topic, ["a"], partition=0)
    with pg_connect(db) as conn:
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', start_offset := -2)", [topic]).fetchone()[0]
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {outsider}")
    gen = scalar(db, "SELECT generation FROM pipeline_kafka.consumers")
    offsets = query(db, "SELECT * FROM pipeline_kafka.offsets ORDER BY 2")
    for sql, state in [
        ("SELECT pipeline_kafka.seek(%s, 'no_such_table', \"offset\" := 0)", "42704"),
        ("SELECT pipeline_kafka.seek(%s || 'x', 't', \"offset\" := 0)", "42704"),
        ("SELECT pipeline_kafka.seek(%s, 't', \"partition\" := 2, \"offset\" := 0)", "22023"),
        ("SELECT pipeline_kafka.seek(%s, 't', \"offset\" := 0, start_time := now())", "22023"),
        ("SELECT pipeline_kafka.seek(%s, 't')", "22023"),
        ("SELECT pipeline_kafka.seek(%s, 't', \"offset\" := -3)", "22023"),
        ("SELECT pipeline_kafka.seek(%s, 't', \"partition\" := 0, \"offset\" := 2)", "22023"),
        ("SELECT pipeline_kafka.seek(%s, 't', start_time := 'infinity')", "22023"),
        ("SELECT pipeline_kafka.seek(NULL, 't', \"offset\" := 0) WHERE %s::text IS NOT NULL", "22004"),
    ]:
        with pg_connect(db) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, [topic])
            assert e.value.sqlstate == state, (sql, e.value)
    with pg_connect(db) as conn:
        conn.execute(f"SET ROLE {outsider}")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT pipeline_kafka.seek(%s, 't', \"offset\" := 0)", [topic])
        assert e.value.sqlstate == "42501"
    assert scalar(db, "SELECT generation FROM pipeline_kafka.consumers") == gen
    assert query(db, "SELECT * FROM pipeline_kafka.offsets ORDER BY 2") == offsets
    # offset 1 of partition 0 (its end) is fine; a seek of a stopped consumer stores it for later
    assert _seek(db, topic, partition=0, offset=1) == 1
    assert scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s AND "partition" = 0', [cid]) == 1
