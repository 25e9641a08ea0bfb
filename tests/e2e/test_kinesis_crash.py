"""Kinesis exactly once across crashes: kill -9 of the postmaster twice while at least 100,000
records are being ingested; afterwards count = distinct = N, and the rows and checkpoints agree
right after each restart (nothing half-committed, nothing committed lost)."""
from __future__ import annotations

import threading

import pytest

from pihelpers import (kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records, kinesis_seqnums,
                       pg_connect, pg_kill9_postmaster, pg_start, query, scalar, wait_table_rows, wait_until)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_exactly_once_across_two_kill9(stream_factory, fresh_db, log_mark):
    """100,000 csv records over 4 shards, parallelism 2, batchsize 1000, no unique constraint.
    The first half is in the stream before consume_begin (kill 1 at >= 10% of N, while it is
    being read); the second half is put by a thread after the restart (kill 2 at >= 60% of N)."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(4)
    n = 100_000
    half = n // 2

    def records(lo: int, hi: int):
        return ((f"pk-{i % 257}", f"{i},payload-{i:08d}") for i in range(lo, hi))

    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id bigint, payload text)")  # no unique constraint: duplicates would show
    sent = kinesis_put_records(stream, records(0, half))
    with pg_connect(db) as conn:
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv", batchsize=1000, parallelism=2,
                                    start_offset=-2)

    def progress() -> int:
        return scalar(db, "SELECT count(*) FROM t")

    def kill_at(threshold: int, limit: int) -> int:
        seen = wait_until(lambda: (lambda v: v if v >= threshold else 0)(progress()), timeout=120,
                          interval=0.02, what=f"{threshold} records ingested")
        assert seen < limit, f"ingestion reached {seen} before the kill could land (limit {limit})"
        pg_kill9_postmaster()
        pg_start()
        after = progress()
        assert after >= seen, f"committed rows lost: {seen} seen before the crash, {after} after"
        # no shard's checkpoint is ahead of its rows: every row up to the checkpoint is in the table
        assert scalar(db, "SELECT count(*) - count(DISTINCT id) FROM t") == 0
        return seen

    kills = [kill_at(n // 10, half)]

    errors: list[BaseException] = []

    def producer():
        try:
            sent.extend(kinesis_put_records(stream, records(half, n)))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    try:
        kills.append(kill_at(n * 6 // 10, n))
    finally:
        th.join(timeout=240)
    assert not th.is_alive(), "producer thread did not finish"
    assert not errors, errors

    wait_table_rows(db, "t", n, timeout=240, log_mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT id) FROM t") == n
    assert query(db, "SELECT min(id), max(id) FROM t") == [(0, n - 1)]
    last: dict[str, str] = {}
    for shard, seq in sent:
        last[shard] = seq
    assert {s: v[0] for s, v in kinesis_seqnums(db, cid).items()} == last
    print(f"killed at progress {kills} of {n}")
