"""Producing in bulk (issue 10): the producer worker sends a transaction's 100k messages in passes
of up to 50k (all queued before their delivery reports are awaited) and deletes the delivered
rows by id ranges. These tests check what that must not change: every committed message arrives,
once unless the worker died between the broker's acknowledgement and the delete (then it arrives
again after the restart), only committed ones, and in outbox order per partition.
"""
from __future__ import annotations

import collections
import os
import signal
import time

import pytest

from pihelpers import (KAFKA_BOOTSTRAP, consume_all, kafka_start, kafka_stop, launcher_naptime, pg_connect,
                       producer_pids, query, scalar, topic_message_count, wait_until, watermark_consumer)


@pytest.fixture(scope="module", autouse=True)
def fast_launcher():
    """launcher_naptime = 1 s for this module, so the supervisor (and so the producer after the
    crash restart) starts within a second or two."""
    with launcher_naptime(1):
        yield


def prepare(db: str) -> None:
    """add_broker (the supervisor and the producer start when the first outbox row commits)."""
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))


def outbox_count(db: str, topic: str) -> int:
    return scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox WHERE topic = %s", (topic,))


def first_copies_in_order(msgs: list[dict]) -> None:
    """Per partition, the first copy of each message comes in production order (the value is the
    message's number); a later second copy (a re-send) is not an order violation."""
    by_partition: dict[int, list[int]] = collections.defaultdict(list)
    seen: set[bytes] = set()
    for m in msgs:  # sorted by (partition, offset)
        if m["value"] not in seen:
            seen.add(m["value"])
            by_partition[m["partition"]].append(int(m["value"]))
    for p, numbers in by_partition.items():
        assert numbers == sorted(numbers), f"partition {p}: messages out of order"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_producer_worker_while_sending_100k(fresh_db, topic_factory):
    """kill -9 of the producer worker while it delivers one transaction's 100k messages (the
    postmaster then restarts every process, and a new producer sends what is left): every message
    arrives; one arrives twice only if its first copy was sent by the killed worker (its
    CreateTime, stamped when the worker queued it, is before the kill), the copy after the restart;
    per partition the first copies keep the production order."""
    db = fresh_db
    topic = topic_factory(3)
    prepare(db)
    n = 100_000
    counter = watermark_consumer()
    try:
        topic_message_count(topic, counter)  # connected before the commit, so the first poll is quick
        with pg_connect(db) as conn:
            with conn.transaction():
                conn.execute("SELECT count(pipeline_kafka.produce_message(%s, convert_to(i::text, 'UTF8'), "
                             "key := convert_to((i %% 10)::text, 'UTF8'))) FROM generate_series(1, %s::int) i", (topic, n))
        worker = wait_until(lambda: producer_pids(db), timeout=60, interval=0.005, what="the producer worker")[0]
        seen = wait_until(lambda: topic_message_count(topic, counter), timeout=60, interval=0.005,
                          what=f"first message in {topic}")
        os.kill(worker, signal.SIGKILL)
        killed_at_ms = time.time() * 1000
    finally:
        counter.close()
    print(f"kill -9 of the producer worker when the topic held >= {seen} of {n} messages")
    # The postmaster reinitializes after a child's SIGKILL; then the rows not deleted are sent again.
    wait_until(lambda: outbox_count(db, topic) == 0, timeout=200, interval=0.2, what="outbox drained after the kill")
    msgs = consume_all(topic, timeout=120, min_messages=n)
    counts = collections.Counter(m["value"] for m in msgs)
    dups = {v for v, c in counts.items() if c > 1}
    print(f"after the restart: {len(msgs)} messages, {len(counts)} distinct, {len(dups)} sent twice")
    assert set(counts) == {str(i).encode() for i in range(1, n + 1)}
    assert max(counts.values()) <= 2, "a message was sent more than twice"
    copies: dict[bytes, list[int]] = collections.defaultdict(list)
    for m in msgs:
        if m["value"] in dups:
            copies[m["value"]].append(m["timestamp"])
    for v, stamps in copies.items():
        first, second = sorted(stamps)
        assert first <= killed_at_ms < second, f"message {v!r} sent twice but not across the kill: {stamps}"
    # The key decides the partition: a key's messages are all in one partition.
    partitions_of_key = collections.defaultdict(set)
    for m in msgs:
        partitions_of_key[m["key"]].add(m["partition"])
    assert all(len(p) == 1 for p in partitions_of_key.values()), partitions_of_key
    first_copies_in_order(msgs)


@pytest.mark.timeout(240)
def test_bulk_transactions_interleaved_topics_savepoints(fresh_db, topic_factory):
    """Three transactions on two one-partition topics, one of them with a rolled-back savepoint of
    20k messages and an emit_tuple INSERT of 20k rows: everything committed arrives exactly once,
    nothing rolled back arrives, and each topic's messages come in outbox-id order (the worker's
    passes span transactions and topics; its deletes by id range must not take other rows)."""
    db = fresh_db
    a, b = topic_factory(1), topic_factory(1)
    prepare(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute(f"CREATE TRIGGER to_kafka AFTER INSERT ON t FOR EACH ROW "
                     f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{b}')")
        other = pg_connect(db)
        try:
            # Two transactions open at once, so their outbox ids interleave.
            conn.execute("BEGIN")
            other.execute("BEGIN")
            for k in range(4):
                conn.execute("SELECT count(pipeline_kafka.produce_message(%s, convert_to('a' || i, 'UTF8'))) "
                             "FROM generate_series(%s::int, %s::int) i", (a, k * 10_000 + 1, (k + 1) * 10_000))
                other.execute("SELECT count(pipeline_kafka.produce_message(%s, convert_to('b' || i, 'UTF8'))) "
                              "FROM generate_series(%s::int, %s::int) i", (b, k * 5_000 + 1, (k + 1) * 5_000))
            conn.execute("SAVEPOINT s")
            conn.execute("SELECT count(pipeline_kafka.produce_message(%s, 'dropped')) FROM generate_series(1, 20000)",
                         (a,))
            # Rolled-back rows are visible in their transaction until the rollback.
            assert scalar_in(conn, "SELECT count(*) FROM pipeline_kafka.outbox WHERE topic = %s", (a,)) == 60_000
            conn.execute("ROLLBACK TO SAVEPOINT s")
            conn.execute("INSERT INTO t SELECT i, 'row' || i FROM generate_series(1, 20000) i")
            other.execute("COMMIT")
            conn.execute("COMMIT")
        finally:
            other.close()
        # A third transaction after the first two have committed.
        conn.execute("SELECT count(pipeline_kafka.produce_message(%s, convert_to('a' || i, 'UTF8'))) "
                     "FROM generate_series(40001, 50000) i", (a,))
    wait_until(lambda: outbox_count(db, a) == 0 and outbox_count(db, b) == 0, timeout=180, interval=0.2,
               what="outbox drained")
    msgs_a = consume_all(a, timeout=90, min_messages=50_000)
    msgs_b = consume_all(b, timeout=90, min_messages=40_000)
    assert [m["value"] for m in msgs_a] == [f"a{i}".encode() for i in range(1, 50_001)]
    values_b = [m["value"] for m in msgs_b]
    assert values_b[:20_000] == [f"b{i}".encode() for i in range(1, 20_001)]
    # The emit_tuple rows of the first transaction (committed after the second) come after.
    assert values_b[20_000:] == [f'{{"id":{i},"v":"row{i}"}}'.encode() for i in range(1, 20_001)]
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.producer_errors") == 0


@pytest.mark.timeout(300)
def test_outage_longer_than_message_timeout_keeps_order(fresh_db, topic_factory):
    """Issue 20.4: a topic's messages are queued in librdkafka over a broker outage longer than a
    message timeout (a producer queue of 1000 messages spreads the queueing of 6000 over time, as a
    slow, loaded broker does by chance). The old 10 s message.timeout.ms let librdkafka fail the
    first queued messages (1..1000 at ~10 s, 1001..2000 at ~20 s) while it still held later ones,
    which it delivered once the broker was back; the worker then sent the failed ones again, after
    them (2001.. before 1). Now librdkafka never times a message out: the outage shows in
    outbox_status.last_error while the broker is down, and once it is back every message arrives
    exactly once, in outbox order, and the error is cleared."""
    db = fresh_db
    topic = topic_factory(1)
    n, outage = 6000, 15.0
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s, %s::jsonb)",
                     (KAFKA_BOOTSTRAP, '{"queue.buffering.max.messages": "1000"}'))
    kafka_stop()
    try:
        with pg_connect(db) as conn:
            conn.execute("SELECT count(pipeline_kafka.produce_message(%s, convert_to(i::text, 'UTF8'))) "
                         "FROM generate_series(1, %s::int) i", (topic, n))
        # The broker stays down for `outage` seconds (longer than the old message timeout), and
        # the status is watched meanwhile.
        t_down = time.monotonic()
        shown = None
        while time.monotonic() - t_down < outage:
            shown = shown or scalar(db, "SELECT last_error FROM pipeline_kafka.outbox_status WHERE topic = %s",
                                    (topic,))
            time.sleep(0.5)
        assert outbox_count(db, topic) == n
    finally:
        kafka_start()
    wait_until(lambda: outbox_count(db, topic) == 0, timeout=150, interval=0.2, what="outbox drained")
    msgs = consume_all(topic, timeout=90, min_messages=n)
    values = [m["value"] for m in msgs]
    first_copies_in_order(msgs)
    assert values == [str(i).encode() for i in range(1, n + 1)], f"{len(values)} messages, first {values[:3]}"
    print(f"last_error while the broker was down: {shown!r}")
    assert shown, "the outage did not show in outbox_status.last_error"
    wait_until(lambda: not query(db, "SELECT 1 FROM pipeline_kafka.outbox_status WHERE topic = %s", (topic,)),
               timeout=60, what="outbox_status row gone (error cleared)")


def scalar_in(conn, sql: str, params=None):
    return conn.execute(sql, params).fetchone()[0]
