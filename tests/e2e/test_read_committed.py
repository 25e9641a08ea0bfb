"""Kafka consumers read with isolation.level = read_committed (librdkafka's default, which the
extension keeps): messages of aborted producer transactions are never ingested, those of
committed ones exactly once, and the consumer never reads past the last stable offset (an open
transaction holds back every later message of its partition until it ends). `config` may
override it (isolation.level is a client setting any owner may give).

A transactional producer (confluent-kafka, transactional.id) writes the messages. Every "not
ingested" assertion follows a marker seen ingested.
"""
from __future__ import annotations

from collections import Counter

import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, unique_name, wait_until


def _tx_producer():
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "transactional.id": unique_name("pi_tx"),
                  "transaction.timeout.ms": 60000})
    p.init_transactions(30)
    return p


def _in_tx(p, topic: str, values: list[str], partition: int = 0, commit: bool = True) -> None:
    p.begin_transaction()
    for v in values:
        p.produce(topic, value=v.encode(), partition=partition)
    if commit:
        p.commit_transaction(30)
    else:
        p.flush(30)  # written to the log, then aborted: the messages exist with an abort marker
        p.abort_transaction(30)


def _values(db: str, table: str) -> Counter:
    return Counter(v for (v,) in query(db, f"SELECT v FROM {table}"))


@pytest.mark.timeout(180)
def test_committed_only_and_last_stable_offset(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(2)
    p = _tx_producer()
    _in_tx(p, topic, ["c1", "c2"])
    _in_tx(p, topic, ["a1", "a2", "a3"], commit=False)
    _in_tx(p, topic, ["c3"])
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE rc (v text)")
        conn.execute("CREATE TABLE ru (v text)")
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'rc', start_offset := -2)", [topic])
        # the override: read_uncommitted also delivers the aborted messages
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'ru', start_offset := -2, "
                     "config := '{\"isolation.level\": \"read_uncommitted\"}')", [topic])
    wait_until(lambda: _values(db, "rc") == Counter(["c1", "c2", "c3"]), timeout=60, what="committed messages in rc")
    wait_until(lambda: _values(db, "ru") == Counter(["c1", "c2", "a1", "a2", "a3", "c3"]), timeout=60,
               what="all messages in ru (read_uncommitted)")

    # An open transaction in partition 0 holds back a later plain message of that partition.
    p.begin_transaction()
    p.produce(topic, value=b"open", partition=0)
    p.flush(30)
    produce(topic, ["after-open"], partition=0)
    produce(topic, ["marker"], partition=1)
    wait_until(lambda: _values(db, "rc")["marker"] == 1, timeout=60, what="marker in rc")
    # read_uncommitted sees both at once; read_committed has read partition 1 but not past the LSO
    wait_until(lambda: _values(db, "ru")["after-open"] == 1, timeout=60, what="after-open in ru")
    assert _values(db, "rc") == Counter(["c1", "c2", "c3", "marker"])
    p.commit_transaction(30)
    wait_until(lambda: _values(db, "rc") == Counter(["c1", "c2", "c3", "marker", "open", "after-open"]),
               timeout=60, what="held-back messages after the commit")
    # exactly once: the marker below proves nothing more came
    produce(topic, ["marker2"], partition=0)
    wait_until(lambda: _values(db, "rc")["marker2"] == 1, timeout=60, what="marker2 in rc")
    assert _values(db, "rc") == Counter(["c1", "c2", "c3", "marker", "open", "after-open", "marker2"])
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end()")
