"""consume_begin(start_time := ...): every partition starts at its first message stamped at or
after the time (offsets_for_times), resolved when consume_begin runs and stored as offsets; a
time after the last message starts at the end; partitions created later start by the same time
(resolved by the worker); start_time with start_offset, or an infinite time, is refused.

Messages carry explicit timestamps (producer CreateTime). Every "not ingested" assertion follows a
marker message produced later and seen ingested.
"""
from __future__ import annotations

import datetime
import time

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, add_partitions, pg_connect, query, scalar, wait_until


def _ts(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def _produce(topic: str, items: list[tuple[int, str, int]]) -> None:
    """(partition, value, timestamp ms) each."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "enable.idempotence": True})
    errors: list = []
    for part, value, ts in items:
        p.produce(topic, value=value.encode(), partition=part, timestamp=ts,
                  on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert p.flush(30) == 0 and not errors, errors


def _setup(db: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE t (v text)")


def _values(db: str) -> list[str]:
    return sorted(v for (v,) in query(db, "SELECT v FROM t"))


@pytest.mark.timeout(120)
def test_start_time_existing_partitions(fresh_db, topic_factory):
    """Offsets stored by consume_begin are each partition's first offset at or after start_time
    (millisecond rounding up: a message stamped exactly then is included, one a millisecond
    earlier is not); only those messages and later ones are ingested."""
    db = fresh_db
    _setup(db)
    topic = topic_factory(2)
    t = int(time.time() * 1000) - 60_000
    _produce(topic, [
        (0, "p0-old", t - 2000), (0, "p0-just-before", t - 1), (0, "p0-at", t), (0, "p0-after", t + 10),
        (1, "p1-old", t - 5000), (1, "p1-after", t + 500),
    ])
    with pg_connect(db) as conn:
        with conn.transaction():
            cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', start_time := %s)", [topic, _ts(t)]).fetchone()[0]
            # stored before the workers start (they start at COMMIT)
            offsets = dict(conn.execute('SELECT "partition", "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                                        [cid]).fetchall())
            assert offsets == {0: 2, 1: 1}
            assert conn.execute("SELECT start_time FROM pipeline_kafka.consumers WHERE id = %s", [cid]).fetchone()[0] == _ts(t)
    _produce(topic, [(1, "marker", t + 1000)])
    wait_until(lambda: "marker" in _values(db), timeout=60, what="marker ingested")
    assert _values(db) == sorted(["p0-at", "p0-after", "p1-after", "marker"])
    # a time before 1970 is the beginning (not Kafka's special timestamps -1 "latest", -2 "earliest")
    with pg_connect(db) as conn:
        with conn.transaction():
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', start_time := '1969-12-31 23:59:59.999+00')", [topic])
            assert dict(conn.execute('SELECT "partition", "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                                     [cid]).fetchall()) == {0: 0, 1: 0}
            conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])


@pytest.mark.timeout(120)
def test_start_time_after_last_message_is_the_end(fresh_db, topic_factory):
    db = fresh_db
    _setup(db)
    topic = topic_factory(1)
    t = int(time.time() * 1000)
    _produce(topic, [(0, "old-1", t - 3000), (0, "old-2", t - 2000)])
    with pg_connect(db) as conn:
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', start_time := %s)",
                           [topic, _ts(t + 3_600_000)]).fetchone()[0]
    assert dict(query(db, 'SELECT "partition", "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', [cid])) == {0: 2}
    _produce(topic, [(0, "new", t)])  # stamped before start_time, but past the stored end offset
    wait_until(lambda: _values(db) == ["new"], timeout=60, what="the new message ingested")


@pytest.mark.timeout(180)
def test_start_time_new_partition(fresh_db, topic_factory):
    """A partition added after consume_begin has no stored offset: the worker starts it at the
    first message stamped at or after the consumer's start_time (not at its beginning). The
    consumer is stopped while the partition is added and written, so that its worker meets the
    partition with both messages in it, then restarted (consume_begin() keeps start_time)."""
    db = fresh_db
    _setup(db)
    topic = topic_factory(1)
    t = int(time.time() * 1000)
    with pg_connect(db) as conn:
        conn.execute("ALTER SYSTEM SET pipeline_ingest.metadata_refresh = 1")
        conn.execute("SELECT pg_reload_conf()")
    try:
        with pg_connect(db) as conn:
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', start_time := %s)", [topic, _ts(t)])
            conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
        add_partitions(topic, 2)
        _produce(topic, [(1, "p1-old", t - 10_000), (1, "p1-new", t + 1000), (0, "p0-new", t + 1000)])
        with pg_connect(db) as conn:
            assert conn.execute("SELECT pipeline_kafka.consume_begin()").fetchone()[0] == 1
        wait_until(lambda: "p1-new" in _values(db) and "p0-new" in _values(db), timeout=90,
                   what="the new partition's recent message ingested")
        assert _values(db) == ["p0-new", "p1-new"]
    finally:
        with pg_connect(db) as conn:
            conn.execute("ALTER SYSTEM RESET pipeline_ingest.metadata_refresh")
            conn.execute("SELECT pg_reload_conf()")


@pytest.mark.timeout(60)
def test_start_time_errors(fresh_db, topic_factory):
    db = fresh_db
    _setup(db)
    topic = topic_factory(1)
    for sql, state in [
        ("SELECT pipeline_kafka.consume_begin(%s, 't', start_offset := -2, start_time := now())", "22023"),
        ("SELECT pipeline_kafka.consume_begin(%s, 't', start_time := 'infinity')", "22023"),
        ("SELECT pipeline_kafka.consume_begin(%s, 't', start_time := '-infinity')", "22023"),
    ]:
        with pg_connect(db) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, [topic])
            assert e.value.sqlstate == state, sql
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
