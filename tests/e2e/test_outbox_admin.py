"""The outbox for its administrator (issue 24.7): a message to a topic that does not exist says so
in outbox_status within about a second (it said nothing for 10 s, then a stall, and failed after
30 s); pipeline_kafka.outbox_discard(topic) drops a topic's pending messages (superusers, or roles
granted it; logged); outbox_status lists only topics with messages pending; the outbox tables
call a message's value `value`, as pipeline_kafka.dead_letters does.
"""
from __future__ import annotations

import time

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, consume_all, create_topic, delete_topic, launcher_naptime, log_since,
                       log_size, pg_connect, query, scalar, unique_name, wait_until)


@pytest.fixture(scope="module", autouse=True)
def fast_launcher():
    """launcher_naptime = 1 s: a new database's supervisor and producer start within a second."""
    with launcher_naptime(1):
        yield


def error_of(conn: psycopg.Connection, sql: str, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as ei:
        conn.execute(sql, params)
    return ei.value


def status(db: str) -> dict:
    return {r[0]: (r[1], r[2]) for r in query(db, "SELECT topic, pending, last_error FROM pipeline_kafka.outbox_status")}


@pytest.mark.timeout(120)
def test_a_missing_topic_says_unknown_topic_within_seconds_and_is_forgotten_once_delivered(fresh_db):
    db = fresh_db
    topic = unique_name("pi_missing")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        t0 = time.monotonic()
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'first'::bytea)", (topic,))
    err = wait_until(lambda: status(db).get(topic, (0, None))[1], timeout=30, interval=0.05,
                     what="the missing topic's error")
    took = time.monotonic() - t0
    print(f"UnknownTopic shown {took:.2f}s after the commit: {err}")
    assert err.startswith("UnknownTopic: "), err
    assert f'topic "{topic}" does not exist' in err and f"outbox_discard('{topic}')" in err, err
    assert took < 5.0, took   # before: nothing for 10 s, UnknownTopicOrPartition after 30 s
    assert status(db)[topic][0] == 1
    # Once the topic exists the message goes out, and the topic leaves outbox_status.
    create_topic(topic, 1)
    try:
        wait_until(lambda: topic not in status(db), timeout=60, what="the topic to leave outbox_status")
        assert [m["value"] for m in consume_all(topic, timeout=30, min_messages=1)] == [b"first"]
    finally:
        delete_topic(topic)


@pytest.mark.timeout(120)
def test_outbox_discard_drops_a_topics_pending_messages_logged(pg_role, fresh_db, topic_factory):
    db = fresh_db
    good = topic_factory(1)
    missing = unique_name("pi_missing")
    granted, plain = pg_role(), pg_role()
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.produce_message(%s, convert_to('m' || i, 'UTF8')) "
                     "FROM generate_series(1, 5) i", (missing,))
        wait_until(lambda: (status(db).get(missing) or (0, None))[1], timeout=30, what="the missing topic's error")
        # Superusers only by default (EXECUTE revoked from PUBLIC).
        conn.execute(f'SET ROLE "{plain}"')
        e = error_of(conn, "SELECT pipeline_kafka.outbox_discard(%s)", (missing,))
        conn.execute("RESET ROLE")
        assert e.sqlstate == "42501", e
        e = error_of(conn, "SELECT pipeline_kafka.outbox_discard(NULL)")
        assert e.sqlstate == "22004", e
        assert scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox WHERE topic = %s", (missing,)) == 5

        # A role granted it may (it needs no rights on the outbox); the LOG line names it.
        conn.execute(f'GRANT EXECUTE ON FUNCTION pipeline_kafka.outbox_discard(text) TO "{granted}"')
        mark = log_size()
        conn.execute(f'SET ROLE "{granted}"')
        assert conn.execute("SELECT pipeline_kafka.outbox_discard(%s)", (missing,)).fetchone()[0] == 5
        assert conn.execute("SELECT pipeline_kafka.outbox_discard(%s)", (missing,)).fetchone()[0] == 0
        conn.execute("RESET ROLE")
        assert scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0
        # Not kept as dead letters; the topic and its error are gone from outbox_status.
        assert scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox_dead_letters") == 0
        assert missing not in status(db)
        assert scalar(db, "SELECT count(*) FROM pipeline_kafka.producer_errors WHERE topic = %s", (missing,)) == 0
        wait_until(lambda: f'pipeline_kafka.outbox_discard: role "{granted}" discarded 5 pending message(s) of '
                           f'topic "{missing}"' in log_since(mark), timeout=10, what="the LOG line")

        # Other topics are untouched and still delivered.
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'after'::bytea)", (good,))
    assert [m["value"] for m in consume_all(good, timeout=30, min_messages=1)] == [b"after"]


@pytest.mark.timeout(120)
def test_outbox_status_forgets_a_topic_with_nothing_pending(fresh_db):
    """A topic whose error was recorded and whose rows then went away (deleted by hand here) is no
    longer listed: before 0.7.0 it stayed, with pending 0 and its old error, until a delivery."""
    db = fresh_db
    missing = unique_name("pi_missing")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'x'::bytea)", (missing,))
        wait_until(lambda: (status(db).get(missing) or (0, None))[1], timeout=30, what="the missing topic's error")
        conn.execute("DELETE FROM pipeline_kafka.outbox WHERE topic = %s", (missing,))
        assert scalar(db, "SELECT count(*) FROM pipeline_kafka.producer_errors WHERE topic = %s", (missing,)) == 1
        assert missing not in status(db), status(db)


def test_the_outbox_tables_call_a_messages_value_value(fresh_db):
    """One word for one meaning: `value` in the outbox, its dead letters and the consumers' dead
    letters (Kinesis keeps `data`, its own name for a record's payload)."""
    cols = {(t, c) for t, c in query(fresh_db, "SELECT table_schema || '.' || table_name, column_name "
                                              "FROM information_schema.columns WHERE table_schema LIKE 'pipeline_%%' "
                                              "AND table_name IN ('outbox', 'outbox_dead_letters', 'dead_letters') "
                                              "AND column_name IN ('message', 'value', 'data')")}
    assert cols == {("pipeline_kafka.outbox", "value"), ("pipeline_kafka.outbox_dead_letters", "value"),
                    ("pipeline_kafka.dead_letters", "value"), ("pipeline_kinesis.dead_letters", "data")}, cols
