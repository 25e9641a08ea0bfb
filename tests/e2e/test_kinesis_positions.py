"""Kinesis start positions and resuming, end to end.

start_offset -2 = TRIM_HORIZON (every earlier record), -1 and NULL for a new consumer = LATEST as
of consume_begin (only records put after it), start_time = AT_TIMESTAMP; NULL for an existing
consumer continues from its checkpoints: after consume_end + consume_begin, and across a
PostgreSQL restart while records flow (no duplicates, no loss).

Every wait is bounded. A "nothing more" assertion comes after a positive marker: records put
after the ones that must not arrive are in, and a shard is read in order.
"""
from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from pihelpers import (kinesis_add_endpoint, kinesis_consume_begin, pipeline_diag, kinesis_put_records,
                       kinesis_seqnums, kinesis_status, pg_connect, pg_start, pg_stop, query, scalar,
                       wait_table_rows, wait_until)


def _keys(n: int) -> list[str]:
    return [f"key-{i}" for i in range(n)]


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _wait_clock_past(t: float, margin: float = 0.01) -> None:
    """Wait (bounded) until the wall clock is `margin` seconds past t, so that records put from now
    on carry a later arrival time (kinesalite stamps them in milliseconds) than t."""
    wait_until(lambda: time.time() > t + margin, timeout=2, interval=0.002, what="the clock to move on")


@pytest.mark.timeout(120)
def test_start_offsets_new_consumers(stream_factory, fresh_db, log_mark):
    """-2 reads the records put before consume_begin; -1 and NULL (new consumer) only those put
    after. consume_begin writes start_time (NULL for -2, now() for -1 and a new consumer) and
    leaves no checkpoints."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, shards = stream_factory(2)
    cases = {"s_trim": -2, "s_latest": -1, "s_default": None}
    with pg_connect(db) as conn:
        for t in cases:
            conn.execute(f"CREATE TABLE {t} (phase text, i int)")
    pre = kinesis_put_records(stream, [(k, f"pre,{i}") for i, k in enumerate(_keys(40))])
    assert {s for s, _ in pre} == set(shards)  # both shards hold earlier records
    _wait_clock_past(time.time())

    ids = {}
    with pg_connect(db) as conn:
        for t, start in cases.items():
            with conn.transaction():
                kw = {} if start is None else {"start_offset": start}
                ids[t] = kinesis_consume_begin(conn, "local", stream, t, format="csv", **kw)
                st, now = conn.execute("SELECT start_time, now() FROM pipeline_kinesis.consumers WHERE id = %s",
                                       [ids[t]]).fetchone()
                assert st == (None if start == -2 else now), (t, st, now)
                assert conn.execute("SELECT count(*) FROM pipeline_kinesis.seqnums WHERE consumer_id = %s",
                                    [ids[t]]).fetchone()[0] == 0
            begun = time.time()
    _wait_clock_past(begun)
    post = kinesis_put_records(stream, [(k, f"post,{i}") for i, k in enumerate(_keys(40), start=100)])
    assert {s for s, _ in post} == set(shards)

    # In each shard the post records follow the pre ones: once every post record is in, any pre
    # record that was going to be read has been read.
    wait_table_rows(db, "s_trim", 80, log_mark=log_mark)
    wait_table_rows(db, "s_latest", 40, log_mark=log_mark)
    wait_table_rows(db, "s_default", 40, log_mark=log_mark)
    assert query(db, "SELECT phase, count(*) FROM s_trim GROUP BY 1 ORDER BY 1") == [("post", 40), ("pre", 40)]
    for t in ("s_latest", "s_default"):
        assert query(db, f"SELECT phase, count(*), count(DISTINCT i) FROM {t} GROUP BY 1") == [("post", 40, 40)], t
    last = {}
    for shard, seq in post:
        last[shard] = seq
    for t, cid in ids.items():
        assert {s: v[0] for s, v in kinesis_seqnums(db, cid).items()} == last, (t, pipeline_diag(db))


@pytest.mark.timeout(120)
def test_start_time(stream_factory, fresh_db, log_mark):
    """start_time = AT_TIMESTAMP: the records that arrived from that time on, none before."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(2)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (phase text, i int)")
    kinesis_put_records(stream, [(k, f"old,{i}") for i, k in enumerate(_keys(30))])
    _wait_clock_past(time.time(), margin=0.05)
    cut = time.time()
    _wait_clock_past(cut, margin=0.05)
    kinesis_put_records(stream, [(k, f"new,{i}") for i, k in enumerate(_keys(30), start=100)])
    with pg_connect(db) as conn:
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv",
                                    start_time=_ts(cut))
        assert conn.execute("SELECT start_time FROM pipeline_kinesis.consumers WHERE id = %s",
                            [cid]).fetchone()[0] == _ts(cut)
    # Records put after consume_begin come after the "new" ones in every shard: the marker.
    kinesis_put_records(stream, [(k, f"later,{i}") for i, k in enumerate(_keys(30), start=200)])
    wait_table_rows(db, "t", 60, log_mark=log_mark)
    assert query(db, "SELECT phase, count(*), count(DISTINCT i) FROM t GROUP BY 1 ORDER BY 1") == [
        ("later", 30, 30), ("new", 30, 30)]


@pytest.mark.timeout(150)
def test_consume_end_then_begin_continues(stream_factory, fresh_db, log_mark):
    """consume_end stops the workers with the checkpoints kept; records put meanwhile arrive,
    exactly once, after consume_begin with start_offset NULL (the 3-argument form), then again
    after consume_end() / consume_begin() for the whole database."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(2)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (i int, k text)")
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv", start_offset=-2, batchsize=50)
    n = 0

    def put(count: int) -> list[tuple[str, str]]:
        nonlocal n
        sent = kinesis_put_records(stream, [(f"k{i % 13}", f"{i},k{i % 13}") for i in range(n, n + count)])
        n += count
        return sent

    put(300)
    wait_table_rows(db, "t", 300, log_mark=log_mark)

    for round_ in range(2):
        with pg_connect(db) as conn:
            if round_ == 0:
                conn.execute("SELECT pipeline_kinesis.consume_end('local', %s, 't')", [stream])
            else:
                assert conn.execute("SELECT pipeline_kinesis.consume_end()").fetchone()[0] == 1
        assert scalar(db, "SELECT enabled FROM pipeline_kinesis.consumers WHERE id = %s", [cid]) is False
        # consumer_status hides the pids of a disabled consumer at once: ask pg_stat_activity
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                      "AND backend_type = 'pipeline_kinesis consumer'", [db]) == 0,
                   timeout=10, what="the workers to exit after consume_end")
        assert all(r["worker_pid"] is None and r["state"] == "stopped" for r in kinesis_status(db, cid))
        kept = kinesis_seqnums(db, cid)
        assert kept and all(v[0] is not None for v in kept.values()), kept
        before = scalar(db, "SELECT count(*) FROM t")
        put(200)  # while stopped: no worker exists (checked above), nothing can be ingested
        assert scalar(db, "SELECT count(*) FROM t") == before
        with pg_connect(db) as conn:
            if round_ == 0:
                assert kinesis_consume_begin(conn, "local", stream, "t", format="csv", batchsize=50) == cid
            else:
                assert conn.execute("SELECT pipeline_kinesis.consume_begin()").fetchone()[0] == 1
        wait_table_rows(db, "t", n, log_mark=log_mark)
        assert scalar(db, "SELECT count(DISTINCT i) FROM t") == n
    assert query(db, "SELECT min(i), max(i) FROM t") == [(0, n - 1)]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_restart_while_flowing_continues_exactly(stream_factory, fresh_db, log_mark):
    """pg_ctl stop -m fast and start while records are being put and consumed, then consume_begin
    with start_offset NULL: afterwards every record is in the table exactly once."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(4)
    first, chunks, chunk = 3000, 10, 500
    total = first + chunks * chunk
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (i int, k text)")
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv", start_offset=-2, batchsize=100,
                                    parallelism=2)
    kinesis_put_records(stream, [(f"k{i % 31}", f"{i},first") for i in range(first)])

    errors: list[BaseException] = []

    def producer():
        try:
            for c in range(chunks):
                base = first + c * chunk
                kinesis_put_records(stream, [(f"k{i % 31}", f"{i},later") for i in range(base, base + chunk)])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") > 0, timeout=30, interval=0.05,
               what="ingestion to start")
    th = threading.Thread(target=producer, daemon=True)
    th.start()
    before = scalar(db, "SELECT count(*) FROM t")
    pg_stop("fast")
    pg_start()
    # consume_begin with start_offset NULL for the existing consumer, while records flow: it
    # restarts the workers from the checkpoints (neither LATEST nor TRIM_HORIZON)
    with pg_connect(db) as conn:
        assert kinesis_consume_begin(conn, "local", stream, "t", format="csv", batchsize=100, parallelism=2) == cid
    th.join(timeout=120)
    assert not th.is_alive(), "producer thread did not finish"
    assert not errors, errors
    wait_table_rows(db, "t", total, timeout=120, log_mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT i) FROM t") == total
    assert before < total
    print(f"restarted with {before}/{total} rows ingested")
