"""What a user sees of running consumers: pipeline_kafka.consumer_status (one row per consumer and
partition, from shared memory) and topic_watermarks; and what happens when the broker goes away:
the consumer shows the outage, reconnects by itself, and loses or duplicates nothing."""
from __future__ import annotations

import time

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, create_topic, delete_topic, kafka_start, kafka_stop, log_since, log_size, server_setting,
                       pg_connect, produce, scalar, wait_until)


def _status(db: str) -> list[dict]:
    with pg_connect(db) as conn:
        cur = conn.execute("SELECT * FROM pipeline_kafka.consumer_status ORDER BY consumer_id, partition")
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


@pytest.mark.timeout(120)
def test_status_and_watermarks(fresh_db, topic_factory):
    topic = topic_factory(3)
    for p in range(3):
        produce(topic, [f"{p * 100 + i},x" for i in range(10 + p)], partition=p)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        marks = conn.execute("SELECT partition, low, high FROM pipeline_kafka.topic_watermarks(%s) ORDER BY 1",
                             (topic,)).fetchall()
        assert marks == [(0, 0, 10), (1, 0, 11), (2, 0, 12)]
        assert conn.execute("SELECT high FROM pipeline_kafka.topic_watermarks(%s, 1)", (topic,)).fetchall() == [(11,)]
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT * FROM pipeline_kafka.topic_watermarks(%s, 7)", (topic,))
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT * FROM pipeline_kafka.topic_watermarks('pi_no_such_topic')")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)",
                           (topic,)).fetchone()[0]
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 33, timeout=60, what="33 rows")
        rows = wait_until(lambda: (s := _status(fresh_db)) and all(r["lag"] == 0 and r["state"] == "running"
                                                                   for r in s) and len(s) == 3 and s,
                          timeout=30, what="lag 0 on every partition")
        for r, (p, _, high) in zip(rows, marks):
            assert (r["consumer_id"], r["topic"], r["partition"]) == (cid, topic, p)
            assert r["next_offset"] == high and r["high_watermark"] == high
            assert r["messages"] == high and r["rows"] == high and r["dead_letters"] == 0
            assert r["batches"] >= 1 and r["last_batch_at"] is not None and r["worker_pid"]
            assert r["last_error"] is None
        # more messages: lag shows them until they are ingested, then goes back to 0
        produce(topic, [f"{1000 + i},y" for i in range(5)], partition=0)
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 38, timeout=60, what="38 rows")
        wait_until(lambda: all(r["lag"] == 0 for r in _status(fresh_db)) and
                   _status(fresh_db)[0]["messages"] == 15, timeout=30, what="lag back to 0")
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", (topic,))
        wait_until(lambda: all(r["state"] == "stopped" and r["worker_pid"] is None for r in _status(fresh_db)),
                   timeout=10, what="stopped state")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_broker_outage_during_large_ingest(fresh_db, topic_factory):
    """The broker stops for 15 s (longer than librdkafka's 10 s reconnect backoff ceiling) in the
    middle of 500k messages: PostgreSQL keeps running, the status shows the outage, the consumer
    reconnects by itself, and every message arrives exactly once."""
    n = 500_000
    topic = topic_factory(4)
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1000000, "enable.idempotence": True})
    for i in range(n):
        while True:
            try:
                p.produce(topic, f"{i},payload-{i}".encode(), partition=i % 4)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id bigint, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2, "
                           "batchsize := 1000, maxbytes := 200000)", (topic,)).fetchone()[0]
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") >= n // 20, timeout=120,
                   what="ingestion under way")
        kafka_stop()
        down_at = time.monotonic()
        try:
            before = scalar(fresh_db, "SELECT count(*) FROM t")
            assert before < n, "ingestion finished before the outage: make n larger"
            err = wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                            (cid,)), timeout=60, what="the outage to show in last_error")
            # from the fetch path ("Kafka: ...") or the periodic metadata refresh, whichever came first
            assert "Kafka" in err or "metadata" in err, err
            states = {r["state"] for r in _status(fresh_db)}
            assert states == {"error"}, states
            assert scalar(fresh_db, "SELECT 1") == 1  # PostgreSQL itself is fine
            remaining = 15 - (time.monotonic() - down_at)
            if remaining > 0:
                # the outage must last 15 s; nothing to poll for while the broker is down
                time.sleep(remaining)
        finally:
            kafka_start()
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") >= n, timeout=300, what=f"{n} rows")
        assert scalar(fresh_db, "SELECT count(*) FROM t") == n
        assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM t") == n
        wait_until(lambda: all(r["lag"] == 0 and r["state"] == "running" and r["last_error"] is None
                               for r in _status(fresh_db)), timeout=60, what="lag 0 and the error cleared")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_worker_whose_source_keeps_failing_starts_again_with_a_new_client(fresh_db, topic_factory):
    """With the broker down for longer than pipeline_ingest.source_restart_after (default 90 s;
    6 s here) and no batch committed, the worker leaves (logging why) and the supervisor starts it
    again with a new librdkafka client: a client whose broker had restarted was seen to never
    connect again. The new worker waits out the outage, then every message arrives exactly once."""
    topic = topic_factory(1)
    produce(topic, [f"{i},before" for i in range(1000)])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id bigint, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)", (topic,))
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 1000, timeout=60, what="1,000 rows")
    first = scalar(fresh_db, "SELECT worker_pid FROM pipeline_kafka.consumer_status")
    since = log_size()
    with server_setting("pipeline_ingest.source_restart_after", "6s", "6s"):
        _leave_and_come_back(fresh_db, topic, first, since)
    produce(topic, [f"{i},after" for i in range(1000, 2000)])
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 2000, timeout=120, what="2,000 rows")
    assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM t") == 2000


def _leave_and_come_back(fresh_db, topic, first, since):
    stopped = time.monotonic()
    kafka_stop()
    try:
        wait_until(lambda: "leaving to start again with a new client" in log_since(since), timeout=120, interval=1,
                   what="the worker to leave")
        assert "its source has failed for 6 s" in log_since(since)
        assert time.monotonic() - stopped >= 6
        # The new worker waits for the broker in its connect loop (not in consumer_status yet).
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                            "'pipeline_kafka consumer' AND datname = current_database() AND pid <> %s",
                                  (first,)) == 1, timeout=60, what="a new worker")
    finally:
        kafka_start()


@pytest.mark.timeout(120)
def test_deleted_topic_shows_error_without_flooding_the_log(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ["1,a"])
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER SYSTEM SET pipeline_ingest.metadata_refresh = 1")
        conn.execute("SELECT pg_reload_conf()")
        try:
            conn.execute("CREATE TABLE t (id int, v text)")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)",
                               (topic,)).fetchone()[0]
            wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 1, timeout=60, what="the first row")
            delete_topic(topic)
            err = wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                            (cid,)), timeout=60, what="the error to show")
            assert topic in err or "Unknown topic" in err or "does not exist" in err, err
            # the worker keeps running and retrying
            assert scalar(fresh_db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                    "'pipeline_kafka consumer' AND datname = current_database()") == 1
            # once the topic exists again, a successful metadata refresh clears the error, even
            # though no message has arrived since
            create_topic(topic, 1)
            wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                      (cid,)) is None, timeout=60, what="the error to clear")
            assert scalar(fresh_db, "SELECT DISTINCT state FROM pipeline_kafka.consumer_status "
                                    "WHERE consumer_id = %s", (cid,)) == "running"
        finally:
            conn.execute("ALTER SYSTEM RESET pipeline_ingest.metadata_refresh")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("SELECT pipeline_kafka.consume_end()")
