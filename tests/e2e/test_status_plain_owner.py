"""consumer_status as a consumer's owner sees it, when that owner is a plain role (no superuser,
no pg_read_all_stats): pg_stat_activity hides the backend_type of other roles' backends (the
workers run as the bootstrap superuser), and before 0.8.0 both status views joined on it, so a
plain owner's running consumer showed state 'starting' and no worker_pid forever."""
from __future__ import annotations

import pytest

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records,
                       pg_connect, produce, scalar, wait_until)


def owner_sees(db: str, owner: str, sql: str) -> list[tuple]:
    with pg_connect(db, user=owner) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.timeout(120)
def test_a_plain_owner_sees_its_kafka_consumer_running(fresh_db, roles, topic_factory):
    db = fresh_db
    owner = roles("pi_status_owner")
    topic = topic_factory(partitions=2)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    with pg_connect(db, user=owner) as conn:
        conn.execute("CREATE TABLE t (v text)")
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't')", [topic])
    for p in range(2):
        produce(topic, ["a", "b"], partition=p)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 4, timeout=60, what="4 rows")
    status = 'SELECT "partition", state, worker_pid IS NOT NULL, lag FROM pipeline_kafka.consumer_status ORDER BY 1'
    # the superuser's view and the plain owner's agree
    wait_until(lambda: owner_sees(db, owner, status) == [(0, "running", True, 0), (1, "running", True, 0)],
               timeout=30, what=f"running with a worker and lag 0 for the owner (has {owner_sees(db, owner, status)})")
    with pg_connect(db) as conn:
        assert conn.execute(status).fetchall() == [(0, "running", True, 0), (1, "running", True, 0)]
    with pg_connect(db, user=owner) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
    assert owner_sees(db, owner, status) == [(0, "stopped", False, None), (1, "stopped", False, None)]


@pytest.mark.timeout(120)
def test_a_plain_owner_sees_its_kinesis_consumer_running(fresh_db, roles, stream_factory):
    db = fresh_db
    owner = roles("pi_status_owner")
    stream, shards = stream_factory(1)
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    with pg_connect(db, user=owner) as conn:
        conn.execute("CREATE TABLE t (v text)")
        kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2)
    kinesis_put_records(stream, [("k", "r1"), ("k", "r2")])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 2, timeout=60, what="2 rows")
    status = ("SELECT shard_id, state, worker_pid IS NOT NULL, millis_behind_latest IS NOT NULL "
              "FROM pipeline_kinesis.consumer_status")
    wait_until(lambda: owner_sees(db, owner, status) == [(shards[0], "running", True, True)], timeout=30,
               what=f"running with a worker for the owner (has {owner_sees(db, owner, status)})")
