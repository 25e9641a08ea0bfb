"""Kinesis shards, end to end: 4 shards read by 1 or 2 workers (parallelism), and a split then a
merge while records flow: every record exactly once, per partition key in the order it was put
(a child shard is read only after its parents were read to their end), parents shown finished.
"""
from __future__ import annotations

import threading

import pytest
from psycopg.types.json import Jsonb

from pihelpers import (kinesis_add_endpoint, kinesis_consume_begin, pipeline_diag, kinesis_merge_shards,
                       kinesis_put_records, kinesis_seqnums, kinesis_shards, kinesis_split_shard, kinesis_status,
                       pg_connect, query, scalar, shard_status_key, wait_table_rows, wait_until)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("parallelism", [1, 2])
def test_four_shards(stream_factory, fresh_db, log_mark, parallelism):
    """Every record of 4 shards arrives once; consumer_status has one row per shard, each with a
    worker pid: one pid for parallelism 1, two different pids for parallelism 2; the checkpoint of
    each shard is its last record."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, shards = stream_factory(4)
    n = 4000
    sent = kinesis_put_records(stream, [(f"key-{i % 101}", f"{i},key-{i % 101}") for i in range(n)])
    assert {s for s, _ in sent} == set(shards)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (i int, k text)")
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv", start_offset=-2, batchsize=500,
                                    parallelism=parallelism)
    wait_table_rows(db, "t", n, log_mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT i) FROM t") == n

    last: dict[str, str] = {}
    for shard, seq in sent:
        last[shard] = seq
    assert {s: v[0] for s, v in kinesis_seqnums(db, cid).items()} == last, pipeline_diag(db, log_mark)

    def status_complete():
        rows = kinesis_status(db, cid)
        # counters are published just after each commit: wait for them too
        ok = (sorted(r["shard_id"] for r in rows) == sorted(shards)
              and all(r["worker_pid"] and r["state"] == "running" and r["shard_state"] == "open" for r in rows)
              and sum(r["rows"] for r in rows) == n)
        return rows if ok else None

    rows = wait_until(status_complete, timeout=15, what="a running worker for every shard in consumer_status")
    pids = {r["worker_pid"] for r in rows}
    assert len(pids) == parallelism, rows
    assert sum(r["records"] for r in rows) == n, rows
    assert {r["shard_id"]: r["last_sequence_number"] for r in rows} == last, rows
    for r in rows:
        assert r["endpoint"] == "local" and r["stream"] == stream and r["relation"] == "t", r
        assert not r["parents"], r
        assert r["last_error"] is None, r
    assert all(shard_status_key(s) == i for i, s in enumerate(sorted(shards)))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_split_then_merge_while_flowing(stream_factory, fresh_db, log_mark):
    """Two shards; while a thread puts records with 20 partition keys, each with an increasing
    counter: split shard 0 at its midpoint, then merge the upper child with shard 1. Every record
    arrives exactly once, and per key the rows' insertion order (a bigserial) follows the counter."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, [s0, s1] = stream_factory(2)
    keys = [f"pk-{i:02d}" for i in range(20)]
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id bigserial, k text, n int)")
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv", columns=["k", "n"],
                                    start_offset=-2, batchsize=100, parallelism=2,
                                    config=Jsonb({"retry_max_ms": 2000}))

    counters = {k: 0 for k in keys}
    stop = threading.Event()
    errors: list[BaseException] = []
    put_total = [0]

    def producer():
        try:
            while not stop.is_set():
                batch = []
                for _ in range(5):
                    for k in keys:
                        batch.append((k, f"{k},{counters[k]}"))
                        counters[k] += 1
                kinesis_put_records(stream, batch)
                put_total[0] += len(batch)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def rows() -> int:
        return scalar(db, "SELECT count(*) FROM t")

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    try:
        wait_until(lambda: rows() >= 1000, timeout=60, what="1000 rows before the split")
        low, high = kinesis_split_shard(stream, s0)
        mark = rows()
        # records are flowing into the children before the merge
        wait_until(lambda: rows() >= mark + 1000, timeout=60, what="1000 more rows after the split")
        merged = kinesis_merge_shards(stream, high, s1)
        mark = rows()
        wait_until(lambda: rows() >= mark + 1000, timeout=60, what="1000 more rows after the merge")
    finally:
        stop.set()
        th.join(timeout=60)
    assert not th.is_alive(), "producer thread did not finish"
    assert not errors, errors
    total = put_total[0]
    assert total == sum(counters.values())

    wait_table_rows(db, "t", total, timeout=120, log_mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT (k, n)) FROM t") == total
    per_key = dict(query(db, "SELECT k, array_agg(n ORDER BY id) FROM t GROUP BY k"))
    assert sorted(per_key) == keys
    for k in keys:
        assert per_key[k] == list(range(counters[k])), f"key {k} out of order or incomplete"

    lineage = {s["shard_id"]: s for s in kinesis_shards(stream)}
    assert set(lineage) == {s0, s1, low, high, merged}
    # records went into every shard of the lineage (the test exercised all of them)
    per_shard = dict(query(db, "SELECT shard_id, seqnum FROM pipeline_kinesis.seqnums WHERE consumer_id = %s",
                           [cid]))
    assert set(per_shard) == set(lineage) and all(per_shard.values()), pipeline_diag(db, log_mark)

    def parents_finished():
        st = {r["shard_id"]: r for r in kinesis_status(db, cid)}
        if set(st) != set(lineage):
            return None
        if all(st[s]["shard_state"] == "finished" for s in (s0, s1, high)) and \
                all(st[s]["shard_state"] == "open" for s in (low, merged)):
            return st
        return None

    st = wait_until(parents_finished, timeout=30, what="parents finished, children open in consumer_status")
    assert sorted(st[merged]["parents"]) == sorted([high, s1]), st[merged]
    assert list(st[low]["parents"]) == [s0] and list(st[high]["parents"]) == [s0], st
    fin = dict(query(db, "SELECT shard_id, finished FROM pipeline_kinesis.seqnums WHERE consumer_id = %s", [cid]))
    assert fin == {s0: True, s1: True, high: True, low: False, merged: False}, fin
