"""Kinesis ingestion throughput against raw COPY, side by side (not a test: prints figures).

For the same N rows (the seed's `userId,amount,timestamp`, bench/common.py) it measures
  1. COPY FROM a server-side file of the rows (the ceiling), into table copy_target;
  2. pipeline_kinesis ingesting the same rows, one Kinesis record per row, from TRIM_HORIZON of a
     stream already filled (so only ingestion is timed), into table kinesis_target;
and prints rows/s for both, their ratio, the time spent putting the records into kinesalite
(what kinesalite itself manages), the peak resident memory of the consumer workers, and the CPU
time kinesalite and the workers used while ingesting (which of them is the limit).

`make bench` (bench/run.py, case `kinesis`) uses fill_stream() and ingest() from here; this
script runs the same measurement alone with more knobs.

Usage (services running, extension installed; see `make bench-kinesis`):
  bench/kinesis_vs_copy.py [--rows N] [--shards S] [--batchsize B] [--parallelism P] [--poll-interval MS]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from common import (NARROW_COLUMNS, backend_pids, cpu_seconds, narrow_csv, peak_rss_kb, ph,  # noqa: E402
                    wait_no_backends, write_rows_file)

WORKER = "pipeline_kinesis consumer"


def kinesalite_pid() -> int:
    try:
        return int((ph.PI_RUN / "kinesis" / "kinesalite.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def fill_stream(stream: str, n: int, line: Callable[[int], str], shards: int = 1) -> float:
    """Create `stream` and put rows 0..n-1 into it, one record each (PutRecords, 500 per call,
    refused records retried); returns the seconds the puts took."""
    ph.kinesis_create_stream(stream, shards)
    k = ph.kinesis_client()
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        recs = [{"Data": line(i).encode(), "PartitionKey": f"k{i % 97}"} for i in range(start, min(n, start + 500))]
        while recs:
            out = k.put_records(StreamName=stream, Records=recs)
            recs = [r for r, res in zip(recs, out["Records"]) if "ErrorCode" in res]
    return time.perf_counter() - t0


def ingest(conn: Any, endpoint: str, stream: str, table: str, n: int, key: str, **consume: Any) -> dict:
    """Time pipeline_kinesis from consume_begin(start_offset := -2, **consume) until its status
    counts all n records (worker start-up included), then check the table holds exactly n rows, all
    distinct in `key`; the consumer is dropped afterwards. Returns seconds, rss_kb (peak, summed
    over the workers), kinesalite_cpu and workers_cpu (seconds of CPU while ingesting)."""
    args = "".join(f", {k} := %s" for k in consume)
    kpid = kinesalite_pid()
    k_cpu0 = cpu_seconds(kpid)
    worker_cpu: dict[int, float] = {}
    pids: list[int] = []
    rss = 0
    t0 = time.perf_counter()
    cid = conn.execute(f"SELECT pipeline_kinesis.consume_begin(%s, %s, %s, format := 'csv', start_offset := -2{args})",
                       [endpoint, stream, table, *consume.values()]).fetchone()[0]
    deadline = time.monotonic() + max(300.0, n / 500)
    while True:
        got = conn.execute("SELECT coalesce(sum(records), 0) FROM pipeline_kinesis.consumer_status "
                           "WHERE consumer_id = %s", (cid,)).fetchone()[0]
        pids = backend_pids(conn, WORKER) or pids
        rss = max(rss, peak_rss_kb(pids))
        for pid in pids:
            worker_cpu[pid] = max(worker_cpu.get(pid, 0.0), cpu_seconds(pid))
        if got >= n:
            break
        if time.monotonic() > deadline:
            err = conn.execute("SELECT last_error FROM pipeline_kinesis.consumers WHERE id = %s", (cid,)).fetchone()
            raise AssertionError(f"kinesis: {got} of {n} records after {time.perf_counter() - t0:.0f}s "
                                 f"(last_error {err[0] if err else None!r})")
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    k_cpu = cpu_seconds(kpid) - k_cpu0
    rows, distinct = conn.execute(f"SELECT count(*), count(DISTINCT {key}) FROM {table}").fetchone()
    conn.execute("SELECT pipeline_kinesis.consume_drop(%s, %s, %s)", (endpoint, stream, table))
    wait_no_backends(conn, WORKER)
    assert rows == n and distinct == n, f"kinesis: {rows} rows, {distinct} distinct, for {n} records"
    return dict(seconds=seconds, rss_kb=rss, kinesalite_cpu=k_cpu, workers_cpu=sum(worker_cpu.values()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--batchsize", type=int, default=1000)
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--poll-interval", type=int, default=200)
    args = ap.parse_args()
    n = args.rows

    stream = ph.unique_name("bench")
    print(f"putting {n} records into {stream} ({args.shards} shard(s)) ...", flush=True)
    path: Path | None = None
    try:
        put_s = fill_stream(stream, n, narrow_csv, args.shards)
        path = write_rows_file("kinesis", n, narrow_csv)
        with ph.fresh_db() as db, ph.pg_connect(db) as conn:
            conn.execute(f"CREATE TABLE copy_target ({NARROW_COLUMNS})")
            conn.execute(f"CREATE TABLE kinesis_target ({NARROW_COLUMNS})")
            t0 = time.perf_counter()
            conn.execute(f"COPY copy_target FROM '{path}' (FORMAT csv)")
            copy_s = time.perf_counter() - t0
            conn.execute("SELECT pipeline_kinesis.add_endpoint('bench', %s, NULL, %s)",
                         (ph.AWS_REGION, ph.KINESIS_ENDPOINT))
            r = ingest(conn, "bench", stream, "kinesis_target", n, "user_id", batchsize=args.batchsize,
                       parallelism=args.parallelism, poll_interval=args.poll_interval)
    finally:
        if path is not None:
            path.unlink(missing_ok=True)
        ph.kinesis_delete_stream(stream)

    s = r["seconds"]
    print(f"rows={n} shards={args.shards} batchsize={args.batchsize} parallelism={args.parallelism} "
          f"poll_interval={args.poll_interval}")
    print(f"put into kinesalite: {put_s:8.2f} s  {n / put_s:12,.0f} records/s (PutRecords, 500 per call)")
    print(f"COPY FROM file     : {copy_s:8.2f} s  {n / copy_s:12,.0f} rows/s")
    print(f"pipeline_kinesis   : {s:8.2f} s  {n / s:12,.0f} rows/s  (exactly {n} rows, all distinct)")
    print(f"ratio              : {copy_s / s:8.3f} of COPY speed")
    print(f"worker peak RSS    : {r['rss_kb'] / 1024:8.1f} MiB (sum over workers)")
    print(f"CPU while ingesting: kinesalite {r['kinesalite_cpu']:.1f} s ({100 * r['kinesalite_cpu'] / s:.0f}% of one "
          f"core), consumer workers {r['workers_cpu']:.2f} s ({100 * r['workers_cpu'] / s:.0f}%)")
    print(f"CPU per record     : workers {1e6 * r['workers_cpu'] / n:.2f} µs, kinesalite "
          f"{1e6 * r['kinesalite_cpu'] / n:.2f} µs")


if __name__ == "__main__":
    main()
