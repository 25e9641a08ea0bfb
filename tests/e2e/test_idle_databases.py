"""A database in which the extension is installed but nothing runs holds no background worker
(issue 20, section 4): worker slots are shared with parallel query (`max_worker_processes`), so
ten idle databases must not take them. Its supervisor leaves once it finds no enabled consumer
and no outbox row; consume_begin, a committed outbox row or a server restart starts what is
needed at once."""
from __future__ import annotations

import time

import pytest

from pihelpers import (KAFKA_BOOTSTRAP, consume_all, fresh_db, launcher_naptime, log_since, log_size, pg_connect,
                       pg_restart, produce, query, scalar, unique_name, wait_until)

SUPERVISOR = "pipeline_ingest supervisor"


def _workers(dbs: list[str]) -> list[tuple]:
    """(database, backend_type) of every pipeline_ingest worker connected to one of `dbs`."""
    return query("postgres", "SELECT datname::text, backend_type FROM pg_stat_activity WHERE datname = ANY(%s) "
                             "AND (backend_type LIKE 'pipeline%%')", (dbs,))


def _left(since: int, db: str) -> bool:
    return f'supervisor for database "{db}" leaves: nothing to do' in log_since(since)


def _stays_empty(dbs: list[str], seconds: float) -> None:
    """Over `seconds` (sampled every 50 ms) no worker of `dbs` stays: a supervisor started by a
    wake or a probe that was still pending may show for a moment, but must be gone within a second
    (an idle database's supervisor used to stay for good); none is left at the end."""
    end = time.monotonic() + seconds
    first_seen: dict[int, float] = {}
    while time.monotonic() < end:
        now = time.monotonic()
        for pid in query("postgres", "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s) "
                                     "AND backend_type LIKE 'pipeline%%'", (dbs,)):
            first_seen.setdefault(pid[0], now)
            assert now - first_seen[pid[0]] < 1.0, f"worker {pid[0]} stayed in an idle database: {_workers(dbs)}"
        time.sleep(0.05)
    wait_until(lambda: _workers(dbs) == [], timeout=2, what="no worker in the idle databases")


@pytest.mark.timeout(240)
def test_idle_databases_hold_no_worker_and_wake_on_work(topic_factory):
    topic, out = topic_factory(1), topic_factory(1)
    produce(topic, [f"{i},x" for i in range(10)])
    since = log_size()
    with launcher_naptime(1), fresh_db() as a, fresh_db() as b, fresh_db() as c:
        dbs = [a, b, c]
        # Each database's supervisor starts (woken by a consume_begin() that starts nothing; the
        # launcher's own probe may have come before CREATE EXTENSION committed), finds nothing to
        # do and leaves.
        for d in dbs:
            with pg_connect(d) as conn:
                assert conn.execute("SELECT pipeline_kafka.consume_begin()").fetchone()[0] == 0
        wait_until(lambda: all(_left(since, d) for d in dbs), timeout=60, what="every idle supervisor to leave")
        _stays_empty(dbs, 3.0)

        # consume_begin starts the supervisor and the worker at once (woken at COMMIT).
        with pg_connect(a) as conn:
            conn.execute("CREATE TABLE t (id int, v text)")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)", (topic,))
        t0 = time.monotonic()
        wait_until(lambda: scalar(a, "SELECT count(*) FROM t") == 10, timeout=30, what="the rows in a")
        print(f"consume_begin in an idle database -> 10 rows in {time.monotonic() - t0:.2f}s")

        # A committed outbox row starts the supervisor and the producer; the message is delivered.
        marker = unique_name("m")
        with pg_connect(b) as conn:
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            conn.execute("SELECT pipeline_kafka.produce_message(%s, %s::bytea)", (out, marker.encode()))
        assert [m["value"] for m in consume_all(out, timeout=30, min_messages=1)] == [marker.encode()]
        wait_until(lambda: scalar(b, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=30,
                   what="the outbox of b to drain")
        # c never had anything to do.
        assert _workers([c]) == []

        # With its consumer stopped, a's supervisor leaves again; b's once its producer is idle.
        since = log_size()
        with pg_connect(a) as conn:
            conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", (topic,))
        wait_until(lambda: _left(since, a), timeout=60, what="a's supervisor to leave after consume_end")
        wait_until(lambda: _workers([a]) == [], timeout=30, what="a's workers gone")
        wait_until(lambda: _workers([b]) == [], timeout=120, what="b's producer and supervisor gone")

        # After a restart the launcher probes every database: a consumer enabled resumes (its
        # consumer_begin() counts as work), idle databases are left alone again.
        with pg_connect(a) as conn:
            conn.execute("SELECT pipeline_kafka.consume_begin()")
        produce(topic, [f"{i},y" for i in range(10, 20)])
        wait_until(lambda: scalar(a, "SELECT count(*) FROM t") == 20, timeout=30, what="20 rows in a")
        since = log_size()
        pg_restart()
        produce(topic, [f"{i},z" for i in range(20, 30)])
        wait_until(lambda: scalar(a, "SELECT count(*) FROM t") == 30, timeout=60, what="30 rows in a after the restart")
        wait_until(lambda: _left(since, b) and _left(since, c), timeout=60, what="b and c idle after the restart")
        assert {r[1] for r in _workers([a])} == {SUPERVISOR, "pipeline_kafka consumer"}
        assert scalar(a, "SELECT count(DISTINCT id) FROM t") == 30


def _next_xid() -> int:
    """The cluster's next transaction id (the xmax of a fresh snapshot)."""
    return int(scalar("postgres", "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"))


@pytest.mark.timeout(180)
def test_running_idle_consumers_assign_no_transaction_ids(fresh_db, topic_factory, stream_factory):
    """Running consumers with nothing to read, and their supervisor, read the catalog every second
    (the supervisor its consumers, a Kinesis worker its shards' lineage): reads must not assign
    transaction ids. Before 0.8.0 each pass assigned at least one (pgrx's Spi::run / get_one run
    every statement as a write), so every database with the extension burned an xid and a WAL
    flush per second, bringing anti-wraparound vacuums closer for the whole cluster."""
    from pihelpers import kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records, server_setting
    db = fresh_db
    topic = topic_factory()
    stream, _ = stream_factory()
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("CREATE TABLE k (v text)")
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't')", [topic])
        kinesis_consume_begin(conn, "local", stream, "k", start_offset=-2)
    produce(topic, ["a"])
    kinesis_put_records(stream, [("p", "b")])
    wait_until(lambda: scalar(db, "SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM k)") == 2, timeout=60,
               what="a row from each source")
    # (autovacuum would ANALYZE the new database's catalogs meanwhile, which takes xids)
    with server_setting("autovacuum", "off", "off"):
        before = _next_xid()
        time.sleep(6)
        used = _next_xid() - before
    assert used <= 1, f"{used} transaction ids assigned in 6 s by idle consumers and their supervisor"
    # and they still work
    produce(topic, ["c"])
    kinesis_put_records(stream, [("p", "d")])
    wait_until(lambda: scalar(db, "SELECT (SELECT count(*) FROM t) + (SELECT count(*) FROM k)") == 4, timeout=60,
               what="the next rows")
