"""pipeline_kafka.consumer_lag (pipeline_kafka's lag view): the next offset to read, the high
watermark and the lag per consumer and partition, for running consumers (watermarks from the
workers' shared memory) and stopped ones (from the brokers, within about a second: NULL when the
brokers are away); visible by the same rule as consumer_status.
"""
from __future__ import annotations

import time

from pihelpers import (KAFKA_BOOTSTRAP, kafka_start, kafka_stop, pg_connect, produce, query, scalar,
                       wait_until)

LAG = ('SELECT consumer_id, group_id, topic, "partition", "offset", high_watermark, lag '
       'FROM pipeline_kafka.consumer_lag ORDER BY "partition"')


def start(db: str, topic: str, owner: str | None = None, **kw) -> int:
    args = "".join(f", {n} := %s" for n in kw)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE t (x integer)")
        if owner:
            conn.execute(f'ALTER TABLE t OWNER TO "{owner}"')
        return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, 't'{args})",
                            [topic] + list(kw.values())).fetchone()[0]


def test_lag_of_running_and_stopped_consumers(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(partitions=3)
    cid = start(db, topic, group_id="lag_group")
    for p in range(3):
        produce(topic, [str(n) for n in range(10)], partition=p)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 30, timeout=60, what="30 rows")
    # running: the worker publishes the watermarks it sees
    wait_until(lambda: query(db, LAG) == [(cid, "lag_group", topic, p, 10, 10, 0) for p in range(3)],
               timeout=30, what="no lag while running")

    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
    produce(topic, [str(n) for n in range(5)], partition=0)
    # stopped: asked from the broker; the lag is what was produced meanwhile
    assert query(db, LAG) == [(cid, "lag_group", topic, 0, 10, 15, 5),
                              (cid, "lag_group", topic, 1, 10, 10, 0),
                              (cid, "lag_group", topic, 2, 10, 10, 0)]

    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't')", [topic])
    wait_until(lambda: scalar(db, "SELECT sum(lag) FROM pipeline_kafka.consumer_lag") == 0
               and scalar(db, 'SELECT sum("offset") FROM pipeline_kafka.consumer_lag') == 35,
               timeout=60, what="lag back to 0 after the restart")
    assert scalar(db, "SELECT count(*) FROM t") == 35


def test_lag_is_visible_to_the_owner_only(pg_role, fresh_db, topic_factory):
    owner, other = pg_role(), pg_role()
    db = fresh_db
    topic = topic_factory()
    start(db, topic, owner=owner)
    produce(topic, ["1", "2"])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 2, timeout=60, what="2 rows")
    with pg_connect(db) as conn:
        conn.execute(f'SET ROLE "{owner}"')
        assert conn.execute('SELECT "offset", lag FROM pipeline_kafka.consumer_lag').fetchall() == [(2, 0)]
        conn.execute(f'SET ROLE "{other}"')
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.consumer_lag").fetchone()[0] == 0
        # the function behind it shows the caller nothing of other roles' consumers either
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.consumer_watermarks()").fetchone()[0] == 0


def test_lag_without_broker_is_null_and_quick(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(partitions=2)
    start(db, topic)
    produce(topic, ["1", "2", "3"], partition=1)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 3, timeout=60, what="3 rows")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
    # positive marker: with the broker up, the stopped consumer's watermarks are known
    assert query(db, 'SELECT "partition", "offset", high_watermark FROM pipeline_kafka.consumer_lag '
                     'ORDER BY 1') == [(0, 0, 0), (1, 3, 3)]
    kafka_stop()
    try:
        began = time.monotonic()
        rows = query(db, 'SELECT "partition", "offset", high_watermark, lag FROM pipeline_kafka.consumer_lag '
                         'ORDER BY 1')
        took = time.monotonic() - began
        assert rows == [(0, 0, None, None), (1, 3, None, None)]
        assert took < 5, f"consumer_lag took {took:.1f}s with the broker away"
    finally:
        kafka_start()
