"""When a batch commits (README "Batches"): as soon as nothing more is at hand
(pipeline_ingest.flush_when_caught_up, on by default), not after `timeout`; a backlog in batches of
many messages, never more than `batchsize`; with the setting off, a lone message waits for
`timeout` (pipeline_kafka's way). Observed through rows, the status view's batch counts and the
server setting, not through speed."""
from __future__ import annotations

import time

import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, server_setting, wait_until


@pytest.mark.timeout(120)
def test_a_caught_up_batch_commits_without_waiting_for_its_timeout(fresh_db, topic_factory):
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        # A 10-minute timeout: only "nothing more at hand" can commit these within the test.
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2, "
                     "timeout := 600000)", (topic,))
        produce(topic, ["1,a"])
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 1, timeout=60, what="the first row")
        produce(topic, [f"{i},b" for i in range(2, 6)])
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 5, timeout=60, what="five rows")
    assert query(fresh_db, "SELECT id FROM t ORDER BY id") == [(i,) for i in range(1, 6)]
    assert scalar(fresh_db, "SELECT batchsize FROM pipeline_kafka.consumers") == 100000


@pytest.mark.timeout(180)
def test_a_backlog_goes_in_large_batches_bounded_by_batchsize(fresh_db, topic_factory):
    topic = topic_factory(1)
    n, batchsize = 30_000, 4_000
    produce(topic, [f"{i},x" for i in range(n)])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2, "
                     "batchsize := %s)", (topic, batchsize))
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == n, timeout=120, what=f"{n} rows")
        batches = wait_until(lambda: scalar(fresh_db, "SELECT batches FROM pipeline_kafka.consumer_status "
                                                      "WHERE messages = %s", (n,)), timeout=10, what="the status")
    # Never more than batchsize per batch (so at least n / batchsize batches), and not a batch per
    # message: a backlog is taken as it is at hand.
    assert n // batchsize <= batches <= n // 50, batches
    assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM t") == n


@pytest.mark.timeout(120)
def test_with_the_setting_off_a_lone_message_waits_for_the_timeout(fresh_db, topic_factory):
    topic = topic_factory(1)
    with server_setting("pipeline_ingest.flush_when_caught_up", "off", "off"):
        with pg_connect(fresh_db) as conn:
            conn.execute("CREATE TABLE t (id int, v text)")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2, "
                         "timeout := 4000)", (topic,))
            # The worker is running (and has read the setting) once the status shows it.
            wait_until(lambda: scalar(fresh_db, "SELECT worker_pid FROM pipeline_kafka.consumer_status"),
                       timeout=60, what="the worker")
            produced = time.monotonic()
            produce(topic, ["1,a"])
            wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 1, timeout=60, what="the row")
            # The batch of one message waited for its 4 s timeout (counted from when the worker
            # took the message, which is after it was produced).
            assert time.monotonic() - produced >= 3.5
