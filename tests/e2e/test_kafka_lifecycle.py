"""Consumers across databases, restarts, DROP EXTENSION and pg_dump: the catalog is the desired
state and workers follow it in every database, and only in their own."""
from __future__ import annotations

import subprocess

import pytest

from pihelpers import (KAFKA_BOOTSTRAP, PG_BIN, PGHOST, PGPORT, create_database, drop_database, fresh_db,
                       pg_connect, pg_start, pg_stop, produce, query, scalar, unique_name, wait_until)


def _workers(db: str) -> int:
    return scalar("postgres", "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pipeline_kafka consumer' "
                              "AND datname = %s", (db,))


def _start(db: str, topic: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)", (topic,))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_databases_stop_and_resume_independently(topic_factory):
    topic = topic_factory(2)
    produce(topic, [f"{i},a" for i in range(100)])
    with fresh_db() as a, fresh_db() as b:
        _start(a, topic)
        _start(b, topic)
        for db in (a, b):
            wait_until(lambda db=db: scalar(db, "SELECT count(*) FROM t") == 100, timeout=60, what=f"100 rows in {db}")
        # consume_end() stops the consumers of its own database only
        assert scalar(a, "SELECT pipeline_kafka.consume_end()") == 1
        wait_until(lambda: _workers(a) == 0, timeout=10, what="a's worker to stop")
        assert _workers(b) == 1
        produce(topic, [f"{i},b" for i in range(100, 150)])
        wait_until(lambda: scalar(b, "SELECT count(*) FROM t") == 150, timeout=60, what="150 rows in b")
        assert scalar(a, "SELECT count(*) FROM t") == 100
        # after a restart, b's consumer resumes by itself and a's stays stopped
        pg_stop("fast")
        pg_start()
        produce(topic, [f"{i},c" for i in range(150, 170)])
        wait_until(lambda: scalar(b, "SELECT count(*) FROM t") == 170, timeout=90, what="170 rows in b after restart")
        assert _workers(a) == 0 and scalar(a, "SELECT count(*) FROM t") == 100
        assert scalar(a, "SELECT pipeline_kafka.consume_begin()") == 1
        wait_until(lambda: scalar(a, "SELECT count(*) FROM t") == 170, timeout=60, what="a to catch up")
        for db in (a, b):
            assert scalar(db, "SELECT count(DISTINCT id) FROM t") == 170


@pytest.mark.timeout(120)
def test_drop_extension_stops_workers(topic_factory):
    topic = topic_factory(1)
    name = unique_name("pidb")
    create_database(name)
    try:
        _start(name, topic)
        wait_until(lambda: _workers(name) == 1, timeout=30, what="the worker")
        with pg_connect(name) as conn:
            conn.execute("DROP EXTENSION pipeline_ingest")
        wait_until(lambda: scalar("postgres", "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                              "AND backend_type LIKE 'pipeline%%'", (name,)) == 0,
                   timeout=15, what="every pipeline process of the database to leave")
        # the database can now be dropped without FORCE
        with pg_connect("postgres") as conn:
            conn.execute(f'DROP DATABASE "{name}"')
    finally:
        drop_database(name)


@pytest.mark.timeout(120)
def test_workers_lock_the_catalog_in_the_order_drop_extension_does(fresh_db, topic_factory):
    """DROP EXTENSION locks the extension's tables in the order they were created (brokers, then
    consumers, ...). A worker starting meanwhile read its consumers row, then the brokers: it held
    consumers and waited for brokers while DROP EXTENSION held brokers and waited for consumers, and
    the DROP failed with "deadlock detected" (seen in a full test run). Made deterministic with explicit locks in
    DROP EXTENSION's order while a worker starts: the worker must wait holding nothing of ours."""
    topic = topic_factory(1)
    _start(fresh_db, topic)
    wait_until(lambda: _workers(fresh_db) == 1, timeout=30, what="the worker")
    old = scalar(fresh_db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pipeline_kafka consumer'")
    with pg_connect(fresh_db) as conn:
        conn.execute("SET lock_timeout = '20s'")
        conn.execute("BEGIN")
        conn.execute("LOCK pipeline_kafka.brokers IN ACCESS EXCLUSIVE MODE")
        # The supervisor starts the worker again (5 s later); it blocks on the brokers.
        conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        wait_until(lambda: _new_worker_waits_on_brokers(fresh_db, old), timeout=60,
                   what="the new worker waiting for the brokers table")
        # What the worker holds of ours meanwhile: nothing (before: its consumers row's table).
        held = query(fresh_db, "SELECT l.relation::regclass::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                               "WHERE a.backend_type = 'pipeline_kafka consumer' AND l.granted "
                               "AND l.relation::regclass::text LIKE 'pipeline_%%'")
        assert held == [], held
        # DROP EXTENSION's next lock: granted (before: deadlock detected, 40P01).
        conn.execute("LOCK pipeline_kafka.consumers IN ACCESS EXCLUSIVE MODE")
        conn.execute("ROLLBACK")
    produce(topic, ["1,after"])
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 1, timeout=60, what="the row after the locks")


def _new_worker_waits_on_brokers(db: str, old: int) -> bool:
    return scalar(db, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                      "WHERE a.backend_type = 'pipeline_kafka consumer' AND a.pid <> %s AND NOT l.granted "
                      "AND l.relation = 'pipeline_kafka.brokers'::regclass", (old,)) == 1


@pytest.mark.timeout(180)
def test_pg_dump_keeps_the_catalog(topic_factory, tmp_path):
    topic = topic_factory(1)
    produce(topic, [f"{i},x" for i in range(30)])
    restored = unique_name("pidb")
    with fresh_db() as src:
        _start(src, topic)
        wait_until(lambda: scalar(src, "SELECT count(*) FROM t") == 30, timeout=60, what="30 rows")
        with pg_connect(src) as conn:
            conn.execute("SELECT pipeline_kafka.consume_end()")
        dump = tmp_path / "dump.sql"
        subprocess.run([f"{PG_BIN}/pg_dump", "-h", PGHOST, "-p", str(PGPORT), "-U", "postgres", "-f", str(dump), src],
                       check=True)
        create_database(restored, extension=False)
        try:
            subprocess.run([f"{PG_BIN}/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", PGHOST, "-p", str(PGPORT),
                            "-U", "postgres", "-d", restored, "-f", str(dump)], check=True, stdout=subprocess.DEVNULL)
            assert query(restored, "SELECT host FROM pipeline_kafka.brokers") == [(KAFKA_BOOTSTRAP,)]
            assert query(restored, "SELECT topic, relation::text, enabled FROM pipeline_kafka.consumers") == \
                [(topic, "t", False)]
            assert query(restored, "SELECT \"partition\", \"offset\" FROM pipeline_kafka.offsets") == [(0, 30)]
            # the restored consumer continues from its stored offset
            assert scalar(restored, "SELECT pipeline_kafka.consume_begin()") == 1
            produce(topic, [f"{i},y" for i in range(30, 40)])
            wait_until(lambda: scalar(restored, "SELECT count(*) FROM t") == 40, timeout=60, what="40 rows")
            assert scalar(restored, "SELECT count(DISTINCT id) FROM t") == 40
        finally:
            drop_database(restored)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_worker_killed_mid_ingest_resumes_exactly_once(topic_factory):
    """kill -9 of a consumer worker (not the postmaster): PostgreSQL resets every process, the
    launcher starts again by itself, and the consumer finishes with every message exactly once."""
    import os
    import signal
    n = 100_000
    topic = topic_factory(2)
    produce(topic, [f"{i},p" for i in range(n)])
    with fresh_db() as db:
        with pg_connect(db) as conn:
            conn.execute("CREATE TABLE t (id int, v text)")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2, "
                         "batchsize := 500, parallelism := 2)", (topic,))
        wait_until(lambda: scalar(db, "SELECT count(*) FROM t") >= n // 10, timeout=60, what="ingestion under way")
        pid = scalar("postgres", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pipeline_kafka consumer' "
                                 "AND datname = %s LIMIT 1", (db,))
        assert pid, "no worker to kill"
        os.kill(pid, signal.SIGKILL)
        # the postmaster reinitialises (every connection is dropped); wait for it and the workers to come back
        wait_until(lambda: _ready_count(db) >= n, timeout=180, what=f"{n} rows after the crash")
        assert scalar(db, "SELECT count(*) FROM t") == n
        assert scalar(db, "SELECT count(DISTINCT id) FROM t") == n


def _ready_count(db: str) -> int:
    try:
        return scalar(db, "SELECT count(*) FROM t")
    except Exception:  # noqa: BLE001 - the server is restarting after the crash
        return -1
