"""Foundation tier: the extension loads, the launcher runs, and the local Kafka and Kinesis
services behave as the later tiers expect."""
from __future__ import annotations

import pytest

from pihelpers import (consume_all, fresh_db, kinesis_client, kinesis_read_shard, pg_connect, produce,
                       query, scalar, wait_until)


@pytest.mark.timeout(60)
def test_extension_preloaded_and_creatable():
    spl = scalar("postgres", "SHOW shared_preload_libraries")
    assert "pipeline_ingest" in [s.strip() for s in spl.split(",")], spl
    with fresh_db() as db:
        schemas = {r[0] for r in query(db, "SELECT nspname FROM pg_namespace")}
        assert {"pipeline_kafka", "pipeline_kinesis"} <= schemas, schemas
        ext = query(db, "SELECT extname, extversion FROM pg_extension WHERE extname = 'pipeline_ingest'")
        assert len(ext) == 1, ext


@pytest.mark.timeout(60)
def test_launcher_running():
    def launcher():
        return query("postgres", "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pipeline_ingest launcher'")

    rows = wait_until(launcher, timeout=30, what="a 'pipeline_ingest launcher' row in pg_stat_activity")
    assert len(rows) == 1, rows


@pytest.mark.timeout(90)
def test_kafka_topic_partitions_roundtrip(topic_factory):
    topic = topic_factory(4)
    for p in range(4):
        produce(topic, [f"message-for-{p}"], key=f"k{p}", partition=p)
    msgs = consume_all(topic, timeout=30, min_messages=4)
    got = sorted((m["partition"], m["value"].decode()) for m in msgs)
    assert got == [(p, f"message-for-{p}") for p in range(4)]


@pytest.mark.timeout(90)
def test_kinesis_two_shards_roundtrip(stream_factory):
    stream, shards = stream_factory(2)
    assert len(shards) == 2
    k = kinesis_client()
    # Explicit hash keys pin records to each half of the hash-key space (shard 0 / shard 1);
    # the partition keys still differ per record.
    sent = {}
    for i, ehk in enumerate(["1", str(2**127 + 1)] * 3):
        pk = f"pk-{i}"
        r = k.put_record(StreamName=stream, Data=f"rec-{i}".encode(), PartitionKey=pk, ExplicitHashKey=ehk)
        sent[r["SequenceNumber"]] = (r["ShardId"], pk, f"rec-{i}")
    assert {v[0] for v in sent.values()} == set(shards)

    def read_both():
        got = {}
        for shard in shards:
            for rec in kinesis_read_shard(stream, shard):
                got[rec["SequenceNumber"]] = (shard, rec["PartitionKey"], rec["Data"].decode())
        return got if len(got) == len(sent) else None

    got = wait_until(read_both, timeout=20, what="all Kinesis records readable from TRIM_HORIZON")
    assert got == sent


@pytest.mark.timeout(60)
def test_broker_and_endpoint_registration():
    with fresh_db() as db, pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker('127.0.0.1:29092')")
        brokers = conn.execute("SELECT * FROM pipeline_kafka.brokers").fetchall()
        assert any("127.0.0.1:29092" in [str(c) for c in row] for row in brokers), brokers

        conn.execute("SELECT pipeline_kinesis.add_endpoint('local', 'us-east-1', NULL, 'http://127.0.0.1:24567')")
        cur = conn.execute("SELECT * FROM pipeline_kinesis.endpoints")
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        assert any(r["name"] == "local" for r in rows), rows
        local = next(r for r in rows if r["name"] == "local")
        assert "http://127.0.0.1:24567" in [str(v) for v in local.values()], local
        assert "us-east-1" in [str(v) for v in local.values()], local
