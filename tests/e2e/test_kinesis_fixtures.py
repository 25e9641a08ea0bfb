"""Self-tests of the Kinesis fixtures the other test_kinesis_* files rely on, independent of the
extension: the hand-written KPL aggregate builder, PutRecords with explicit keys, split and merge
with their lineage, and a private kinesalite that keeps its streams across a restart."""
from __future__ import annotations

import hashlib

import pytest

from pihelpers import (KPL_MAGIC, kinesis_client, kinesis_hash_key, kinesis_merge_shards, kinesis_put_records, kinesis_wait_active,
                       kinesis_read_shard, kinesis_shards, kinesis_split_shard, kpl_aggregate, unique_name)

# kpl_aggregate([("a", "one"), ("b", "two"), ("a", "")]), byte for byte. Checked against the
# extension's own de-aggregator (ingest_core::kinesis::kpl::deaggregate), which returns the three
# user records (sub 0 "a" "one", sub 1 "b" "two", sub 2 "a" ""), as its unit tests expect.
KNOWN_AGGREGATE = bytes.fromhex(
    "f3899ac2"                                  # magic
    "0a0161" "0a0162"                           # partition_key_table: "a", "b"
    "1a07" "0800" "1a036f6e65"                  # Record {pk 0, data "one"}
    "1a07" "0801" "1a0374776f"                  # Record {pk 1, data "two"}
    "1a04" "0800" "1a00"                        # Record {pk 0, data ""}
    "c7bd176fb07a2cc4c08b613acf6827db")         # MD5 of the protobuf bytes


def test_kpl_aggregate_known_answer():
    agg = kpl_aggregate([("a", "one"), ("b", "two"), ("a", b"")])
    assert agg == KNOWN_AGGREGATE
    body = agg[4:-16]
    assert agg[:4] == KPL_MAGIC and hashlib.md5(body).digest() == agg[-16:]


def test_kpl_aggregate_explicit_hash_keys_and_corrupt_digest():
    agg = kpl_aggregate([("k1", "low", 0), ("k2", "high", 2**128 - 1), ("k1", "md5")])
    # partition keys, then explicit hash keys, each once, in first-use order
    assert agg.startswith(KPL_MAGIC + b"\x0a\x02k1\x0a\x02k2\x12\x010\x12\x27" + str(2**128 - 1).encode())
    # Record {pk 0, ehk 0, "low"}, {pk 1, ehk 1, "high"}, {pk 0, "md5"} (no ehk field)
    assert b"\x1a\x09\x08\x00\x10\x00\x1a\x03low" in agg
    assert b"\x1a\x0a\x08\x01\x10\x01\x1a\x04high" in agg
    assert b"\x1a\x07\x08\x00\x1a\x03md5" in agg
    bad = kpl_aggregate([("k1", "low", 0), ("k2", "high", 2**128 - 1), ("k1", "md5")], corrupt_md5=True)
    assert bad[:-1] == agg[:-1] and bad[-1] != agg[-1]
    # large aggregates: multi-byte varints for lengths and indexes
    big = kpl_aggregate([(f"key{i}", "x" * 200) for i in range(300)])
    assert hashlib.md5(big[4:-16]).digest() == big[-16:]


def test_partition_key_hash_is_md5_big_endian():
    assert kinesis_hash_key("") == 0xd41d8cd98f00b204e9800998ecf8427e


@pytest.mark.timeout(60)
def test_put_records_routes_by_key_and_explicit_hash(stream_factory):
    name, shards = stream_factory(2)
    lineage = kinesis_shards(name)
    lo, hi = lineage[0], lineage[1]
    assert lo["end_hash"] + 1 == hi["start_hash"] and not lo["closed"] and not hi["closed"]
    sent = kinesis_put_records(name, [("a", "to-low", lo["start_hash"]), ("b", "to-high", hi["end_hash"]),
                                      ("c", b"by-key")] + [(f"k{i}", f"r{i}") for i in range(600)])
    assert len(sent) == 603
    assert sent[0][0] == lo["shard_id"] and sent[1][0] == hi["shard_id"]
    by_key = lo["shard_id"] if kinesis_hash_key("c") <= lo["end_hash"] else hi["shard_id"]
    assert sent[2][0] == by_key
    got = {s: [(r["PartitionKey"], r["Data"]) for r in kinesis_read_shard(name, s)] for s in shards}
    assert sum(len(v) for v in got.values()) == 603
    assert ("a", b"to-low") in got[lo["shard_id"]] and ("b", b"to-high") in got[hi["shard_id"]]
    # per shard, records come back in the order they were put
    for s in shards:
        put_order = [int(seq) for shard, seq in sent if shard == s]
        assert put_order == sorted(put_order)


@pytest.mark.timeout(60)
def test_split_then_merge_lineage(stream_factory):
    name, [only] = stream_factory(1)
    low, high = kinesis_split_shard(name, only)
    shards = {s["shard_id"]: s for s in kinesis_shards(name)}
    assert shards[only]["closed"]
    assert shards[low]["parent"] == only and shards[high]["parent"] == only
    assert shards[low]["end_hash"] + 1 == shards[high]["start_hash"]
    assert (shards[low]["start_hash"], shards[high]["end_hash"]) == (0, 2**128 - 1)
    merged = kinesis_merge_shards(name, low, high)
    shards = {s["shard_id"]: s for s in kinesis_shards(name)}
    assert shards[low]["closed"] and shards[high]["closed"] and not shards[merged]["closed"]
    assert {shards[merged]["parent"], shards[merged]["adjacent_parent"]} == {low, high}
    assert (shards[merged]["start_hash"], shards[merged]["end_hash"]) == (0, 2**128 - 1)
    kinesis_put_records(name, [("k", "after-merge")])
    assert [r["Data"] for r in kinesis_read_shard(name, merged)] == [b"after-merge"]


@pytest.mark.timeout(90)
def test_own_kinesalite_keeps_streams_across_restart(own_kinesalite):
    k = own_kinesalite.client()
    name = unique_name("pi_persist")
    k.create_stream(StreamName=name, ShardCount=1)
    # (its shards are listed once it is ACTIVE: under load, not yet right after the create)
    kinesis_wait_active(name, client=k)
    shard = k.list_shards(StreamName=name)["Shards"][0]["ShardId"]
    before = kinesis_put_records(name, [(f"k{i}", f"before-{i}") for i in range(50)], client=k)
    it = k.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                              StartingSequenceNumber=before[-1][1])["ShardIterator"]
    own_kinesalite.stop()
    with pytest.raises(Exception):
        k.list_streams()
    own_kinesalite.start()
    after = kinesis_put_records(name, [("k", "after")], client=k)
    assert int(after[0][1]) > int(before[-1][1])
    # an iterator taken before the restart still reads on
    assert [r["Data"] for r in k.get_records(ShardIterator=it)["Records"]] == [b"after"]
    it = k.get_shard_iterator(StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    data = [r["Data"] for r in k.get_records(ShardIterator=it, Limit=1000)["Records"]]
    assert data == [f"before-{i}".encode() for i in range(50)] + [b"after"]
    # the shared kinesalite does not see the private one's stream
    assert name not in kinesis_client().list_streams(Limit=1000)["StreamNames"]
