"""group_id: offsets committed to PostgreSQL are also committed to Kafka's group coordinator
(asynchronously, after the PostgreSQL commit), so Kafka's lag tools see the consumer; they are
never read back: PostgreSQL's offsets win on restart. Checked with confluent-kafka's AdminClient
(list_consumer_group_offsets), as kafka-consumer-groups would.
"""
from __future__ import annotations

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition

from pihelpers import (KAFKA_BOOTSTRAP, admin_client, pg_connect, produce, query, scalar, unique_name,
                       wait_until)


def group_offsets(group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets per partition (-1001 when it has none)."""
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    res = admin_client().list_consumer_group_offsets([req], request_timeout=10)[group].result(timeout=15)
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def pg_offsets(db: str) -> dict[int, int]:
    return dict(query(db, 'SELECT "partition", "offset" FROM pipeline_kafka.offsets'))


def setup(db: str, topic: str, **kw) -> int:
    args = "".join(f", {n} := %s" for n in kw)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE t (x integer PRIMARY KEY)")
        return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, 't'{args})",
                            [topic] + list(kw.values())).fetchone()[0]


def test_group_offsets_follow_postgres_and_postgres_wins_on_restart(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(partitions=2)
    group = unique_name("pi_group")
    setup(db, topic, group_id=group, parallelism=2)
    # both partitions get messages: a partition no batch has touched has no group offset yet
    produce(topic, [str(n) for n in range(25)], partition=0)
    produce(topic, [str(n) for n in range(25, 50)], partition=1)
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 50, timeout=60, what="50 rows")
    # the group shows exactly what PostgreSQL committed (next offsets to read)
    wait_until(lambda: group_offsets(group, topic, 2) == pg_offsets(db), timeout=30,
               what=f"group offsets == {pg_offsets(db)}")
    assert sum(pg_offsets(db).values()) == 50

    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
    # someone rewinds the group to 0 while the consumer is stopped
    c = Consumer({"bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p, 0) for p in range(2)], asynchronous=False)
    finally:
        c.close()
    assert set(group_offsets(group, topic, 2).values()) == {0}

    produce(topic, [str(n) for n in range(50, 60)], partition=0)
    produce(topic, [str(n) for n in range(60, 70)], partition=1)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', group_id := %s, parallelism := 2)", [topic, group])
    # positive marker: the group caught up with PostgreSQL's offsets again, past all 70 messages
    wait_until(lambda: sum(pg_offsets(db).values()) == 70 and group_offsets(group, topic, 2) == pg_offsets(db),
               timeout=60, what="PostgreSQL and the group at 70 messages")
    # read from PostgreSQL's offsets, not the group's 0: nothing twice (x is the primary key, and
    # a duplicate would be a dead letter)
    assert scalar(db, "SELECT count(*) FROM t") == 70
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
    assert query(db, "SELECT min(x), max(x) FROM t") == [(0, 69)]


def test_no_group_commits_without_group_id(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory()
    setup(db, topic)
    produce(topic, [str(n) for n in range(10)])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 10, timeout=60, what="10 rows")
    # the worker's client uses the group id "pipeline_ingest" internally; it commits nothing
    assert group_offsets("pipeline_ingest", topic, 1)[0] < 0
