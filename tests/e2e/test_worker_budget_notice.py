"""consume_begin says when the worker budget runs out (issue 24.4): with
pipeline_ingest.max_workers_per_database = 3 (two consumer workers, one kept for the producer), the
consume_begin whose consumer would find no worker raises a NOTICE naming the setting and the
numbers; the ones before it raise none. The consumer is created all the same, and waits."""
from __future__ import annotations

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, pg_connect, scalar,
                       server_setting, wait_until)


def _begin(db: str, topic: str, table: str, **kw) -> list:
    """consume_begin of topic into a new table; the notices it raised (severity, message, hint)."""
    args = "".join(f", {n} := %s" for n in kw)
    notices: list = []
    with pg_connect(db) as conn:
        conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary, d.message_hint)))
        conn.execute(f"CREATE TABLE {table} (x int)")
        conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, '{table}'{args})", [topic] + list(kw.values()))
    return notices


def test_the_consume_begin_that_overflows_the_budget_says_so(fresh_db, topic_factory, stream_factory):
    db = fresh_db
    t1, t2, t3 = topic_factory(1), topic_factory(2), topic_factory(1)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
    with server_setting("pipeline_ingest.max_workers_per_database", 3, "3"):
        assert _begin(db, t1, "a") == []
        # Two partitions but parallelism 1: still one worker (two in all, the limit).
        assert _begin(db, t2, "b") == []
        notices = _begin(db, t3, "c")
        assert len(notices) == 1, notices
        severity, message, hint = notices[0]
        assert severity == "NOTICE"
        assert "pipeline_ingest.max_workers_per_database = 3" in message, message
        assert "need 3 in all, more than the 2" in message, message
        assert "waiting" in message and "ALTER SYSTEM SET pipeline_ingest.max_workers_per_database = 4" in hint, hint
        # The consumer exists and waits for a worker, as the NOTICE said.
        wait_until(lambda: scalar(db, "SELECT state FROM pipeline_kafka.consumer_status WHERE relation = 'c'::regclass")
                   == "waiting", timeout=30, what="consumer c waiting")
        # A Kinesis consumer counts against the same budget.
        stream, _ = stream_factory()
        kinesis_add_endpoint(db)
        notices = []
        with pg_connect(db) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            conn.execute("CREATE TABLE k (x int)")
            kinesis_consume_begin(conn, "local", stream, "k")
        assert any("max_workers_per_database" in n for n in notices), notices
        # Stopping two leaves room: a consume_begin again says nothing.
        with pg_connect(db) as conn:
            conn.execute("SELECT pipeline_kafka.consume_end(%s, 'a')", [t1])
            conn.execute("SELECT pipeline_kinesis.consume_end('local', %s, 'k')", [stream])
        notices = []
        with pg_connect(db) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'c')", [t3])
        assert notices == [], notices


def test_parallelism_counts_the_partitions_it_spreads(fresh_db, topic_factory):
    """parallelism 3 over 3 partitions: three workers, more than a budget of 3 gives consumers."""
    db = fresh_db
    topic = topic_factory(3)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
    with server_setting("pipeline_ingest.max_workers_per_database", 3, "3"):
        notices = _begin(db, topic, "p", parallelism=3)
    assert len(notices) == 1 and "consumer 1 needs 3 worker processes" in notices[0][1], notices


def test_consume_begin_of_every_stopped_consumer_says_so_too(fresh_db, topic_factory, stream_factory):
    """consume_begin() (no arguments: every stopped consumer the caller may manage) raises the same
    NOTICE when the consumers it starts overflow the budget (before 0.8.0 it said nothing), for
    both systems, and none when they fit."""
    db = fresh_db
    t1, t2, t3 = topic_factory(1), topic_factory(1), topic_factory(1)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
    with server_setting("pipeline_ingest.max_workers_per_database", 3, "3"):
        for t, table in [(t1, "a"), (t2, "b"), (t3, "c")]:
            _begin(db, t, table)
        with pg_connect(db) as conn:
            conn.execute("SELECT pipeline_kafka.consume_end()")
        for fn, started in [("pipeline_kafka.consume_begin()", 3), ("pipeline_kinesis.consume_begin()", 0)]:
            notices: list = []
            with pg_connect(db) as conn:
                conn.add_notice_handler(lambda d: notices.append(d.message_primary))
                assert conn.execute(f"SELECT {fn}").fetchone()[0] == started
            if started:
                assert len(notices) == 1 and notices[0].startswith("3 consumers started; this database's enabled "
                                                                   "consumers need 3 in all, more than the 2"), notices
            else:
                assert notices == [], notices
        # Kinesis: its consume_begin() counts the Kafka consumers' workers too.
        stream, _ = stream_factory()
        kinesis_add_endpoint(db)
        with pg_connect(db) as conn:
            conn.execute("SELECT pipeline_kafka.consume_end(%s, 'c')", [t3])
            conn.execute("CREATE TABLE k (x int)")
            kinesis_consume_begin(conn, "local", stream, "k")
            conn.execute("SELECT pipeline_kinesis.consume_end()")
        notices = []
        with pg_connect(db) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            assert conn.execute("SELECT pipeline_kinesis.consume_begin()").fetchone()[0] == 1
        assert len(notices) == 1 and notices[0].startswith("1 consumer started; "), notices
        # room again: nothing said
        with pg_connect(db) as conn:
            conn.execute("SELECT pipeline_kafka.consume_end()")
            conn.execute("SELECT pipeline_kinesis.consume_end()")
        notices = []
        with pg_connect(db) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            assert conn.execute("SELECT pipeline_kinesis.consume_begin()").fetchone()[0] == 1
        assert notices == [], notices
