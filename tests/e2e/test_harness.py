"""Self-tests of the e2e harness (pihelpers + scripts/services.sh) that do not depend on
the extension's SQL API: outages keep Kafka data, crashes restart cleanly, helpers are bounded."""
from __future__ import annotations

import time

import pytest

from pihelpers import (WaitTimeout, add_partitions, consume_all, create_topic, delete_topic, fresh_db,
                       kafka_start, kafka_stop, pg_connect, pg_is_ready, pg_kill9_postmaster, pg_start,
                       pg_stop, postmaster_pid, produce, scalar, topic_partitions, unique_name, wait_until)


def test_wait_until_is_bounded():
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match="never-true thing"):
        wait_until(lambda: False, timeout=0.5, interval=0.1, what="never-true thing")
    assert time.monotonic() - t0 < 2
    assert wait_until(lambda: 42, timeout=1) == 42


def test_unique_name():
    a, b = unique_name("x"), unique_name("x")
    assert a != b and a.startswith("x_") and a == a.lower()


@pytest.mark.timeout(120)
def test_topic_admin_helpers():
    t = unique_name("pi_admin")
    create_topic(t, 2)
    try:
        assert topic_partitions(t) == 2
        produce(t, ["a", "b", "c"], partition=0)
        add_partitions(t, 5)
        assert topic_partitions(t) == 5
        produce(t, ["d"], partition=4)
        msgs = consume_all(t, timeout=30, min_messages=4)
        assert [(m["partition"], m["value"]) for m in msgs] == [(0, b"a"), (0, b"b"), (0, b"c"), (4, b"d")]
        assert [m["offset"] for m in msgs] == [0, 1, 2, 0]
    finally:
        delete_topic(t)
    assert topic_partitions(t) == 0


@pytest.mark.timeout(180)
def test_kafka_outage_keeps_data():
    t = unique_name("pi_outage")
    create_topic(t, 1)
    try:
        produce(t, ["before"])
        kafka_stop()
        kafka_start()
        produce(t, ["after"])
        assert [m["value"] for m in consume_all(t, timeout=60, min_messages=2)] == [b"before", b"after"]
    finally:
        delete_topic(t)


@pytest.mark.timeout(180)
def test_pg_stop_start_and_kill9():
    with fresh_db(extension=False) as db:
        with pg_connect(db) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.execute("INSERT INTO t VALUES (1)")
        pg_stop("fast")
        assert not pg_is_ready()
        pg_start()
        assert scalar(db, "SELECT count(*) FROM t") == 1

        with pg_connect(db) as conn:
            conn.execute("INSERT INTO t VALUES (2)")  # committed (fsync on) before the crash
        old = postmaster_pid()
        assert pg_kill9_postmaster() == old
        assert not pg_is_ready()
        pg_start()
        assert postmaster_pid() != old
        assert scalar(db, "SELECT count(*) FROM t") == 2
