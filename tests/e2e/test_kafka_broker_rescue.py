"""The Kafka stall after a broker restart (issue 20.3), made deterministic.

A Kafka 4 KRaft broker that is stopped gracefully answers Metadata, for a few milliseconds after
the controller fenced it, with no broker listed but with its topics. librdkafka >= 2.10 then drops
every broker it knows (confluentinc/librdkafka#5301), and in CMake builds of 2.11.1..2.14.x (ours:
2.12.1) the re-bootstrap that should follow never happens (#5282): the client stays with no
socket open and never fetches again. A proxy in front of the test broker (kafka_proxy.py) answers
Metadata with no broker for a few seconds; the worker must notice that its client knows no broker
and add the bootstrap servers again, long before `pipeline_ingest.source_restart_after` (set to
10 min here, so the watchdog's restart with a new client is not what saves it)."""
from __future__ import annotations

import json
import time

import pytest

from kafka_proxy import KafkaProxy
from pihelpers import (KAFKA_BOOTSTRAP, consume_all, log_since, log_size, pg_connect, produce, scalar, server_setting,
                       wait_until)

RESCUED = "adding the bootstrap servers"


def _without_brokers_for_3s(proxy: KafkaProxy) -> None:
    """Metadata answers list no broker for 3 s. One reaches the worker's client, which then drops
    its brokers and closes every connection (the SQL side's short-lived clients are gone)."""
    proxy.zero_brokers = True
    window = time.monotonic()
    try:
        wait_until(lambda: proxy.zeroed_responses >= 1, timeout=20, what="a Metadata response without brokers")
        wait_until(lambda: proxy.open_connections == 0, timeout=20, what="the client to drop every connection")
        # The window lasts 3 s in all (a stimulus, not a wait for something): longer than the 2 s
        # after which the worker re-adds the bootstrap servers, whose first client may thus be
        # dropped again.
        time.sleep(max(0.0, 3.0 - (time.monotonic() - window)))
    finally:
        proxy.zero_brokers = False


@pytest.mark.timeout(180)
def test_consumer_recovers_after_a_metadata_response_without_brokers(fresh_db, topic_factory):
    topic = topic_factory(4)
    for p in range(4):
        produce(topic, [f"{p * 1000 + i},before" for i in range(25)], partition=p)
    with KafkaProxy(KAFKA_BOOTSTRAP) as proxy, \
            server_setting("pipeline_ingest.source_restart_after", "600s", "10min"):
        since = log_size()
        with pg_connect(fresh_db) as conn:
            conn.execute("CREATE TABLE t (id int, v text)")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (proxy.address,))
            # frequent metadata refreshes, so that some fall in the window without brokers
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2, "
                         "config := %s)", (topic, json.dumps({"topic.metadata.refresh.interval.ms": 300})))
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 100, timeout=60, what="the first 100 rows")
        assert proxy.metadata_responses > 0, "the consumer does not talk through the proxy"

        _without_brokers_for_3s(proxy)

        produce(topic, [f"{p * 1000 + i},after" for p in range(4) for i in range(25, 50)])
        # No sleep: every partition resumes within seconds, or never (without the rescue).
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") >= 200, timeout=30, interval=0.5,
                   what="the 100 rows produced after the window without brokers")
        assert scalar(fresh_db, "SELECT count(*) FROM t") == 200
        assert proxy.errors == []
        assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM t") == 200
        assert scalar(fresh_db, "SELECT count(*) FROM t WHERE v = 'after'") == 100
        log = log_since(since)
        assert log.count(RESCUED) == 1, log[-3000:]
        assert "leaving to start again with a new client" not in log
        # the same worker, not a new one
        assert scalar(fresh_db, "SELECT count(DISTINCT worker_pid) FROM pipeline_kafka.consumer_status") == 1
        with pg_connect(fresh_db) as conn:
            conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", (topic,))


@pytest.mark.timeout(180)
def test_producer_recovers_after_a_metadata_response_without_brokers(fresh_db, topic_factory):
    """The producer worker's client is watched the same way: without it, messages committed after
    the window stayed in librdkafka (which never times a message out) and never went out."""
    topic = topic_factory(1)
    with KafkaProxy(KAFKA_BOOTSTRAP) as proxy:
        since = log_size()
        with pg_connect(fresh_db) as conn:
            conn.execute("SELECT pipeline_kafka.add_broker(%s, %s)",
                         (proxy.address, json.dumps({"topic.metadata.refresh.interval.ms": 300})))
            conn.execute("SELECT pipeline_kafka.produce_message(%s, convert_to('m' || i, 'UTF8')) "
                         "FROM generate_series(1, 10) i", (topic,))
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=60,
                   what="the first 10 messages delivered")
        assert proxy.metadata_responses > 0, "the producer does not talk through the proxy"

        _without_brokers_for_3s(proxy)

        with pg_connect(fresh_db) as conn:
            conn.execute("SELECT pipeline_kafka.produce_message(%s, convert_to('m' || i, 'UTF8')) "
                         "FROM generate_series(11, 20) i", (topic,))
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=30, interval=0.5,
                   what="the 10 messages committed after the window delivered")
        msgs = consume_all(topic, timeout=30, min_messages=20)
        assert [m["value"] for m in msgs] == [f"m{i}".encode() for i in range(1, 21)]
        assert proxy.errors == []
        assert RESCUED in log_since(since)
