"""Kinesis ingestion throughput against raw COPY, side by side (not a test: prints figures).

For the same N rows it measures
  1. COPY FROM a server-side file of the rows (the ceiling), into table copy_target;
  2. pipeline_kinesis ingesting the same rows, one Kinesis record per row, from TRIM_HORIZON of a
     stream already filled (so only ingestion is timed), into table kinesis_target;
and prints rows/s for both, their ratio, the time spent putting the records into kinesalite
(what kinesalite itself manages), the peak resident memory of the consumer workers, and the CPU
time kinesalite and the workers used while ingesting (which of them is the limit).

Usage (services running, extension installed; see `make bench-kinesis`):
  bench/kinesis_vs_copy.py [--rows N] [--shards S] [--batchsize B] [--parallelism P] [--poll-interval MS]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import pihelpers as ph  # noqa: E402
from consume_vs_copy import peak_rss_kb, row  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, IndexError, ValueError):
        return 0.0


def kinesalite_pid() -> int:
    try:
        return int((ph.PI_RUN / "kinesis" / "kinesalite.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--batchsize", type=int, default=1000)
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--poll-interval", type=int, default=200)
    args = ap.parse_args()
    n = args.rows
    ddl = "(id bigint, name text, amount numeric(10,2), at timestamptz)"

    stream = ph.unique_name("bench")
    ph.kinesis_create_stream(stream, args.shards)
    k = ph.kinesis_client()
    print(f"putting {n} records into {stream} ({args.shards} shard(s)) ...", flush=True)
    t0 = time.perf_counter()
    for start in range(0, n, 500):
        recs = [{"Data": row(i).encode(), "PartitionKey": f"k{i % 97}"} for i in range(start, min(n, start + 500))]
        while recs:
            out = k.put_records(StreamName=stream, Records=recs)
            recs = [r for r, res in zip(recs, out["Records"]) if "ErrorCode" in res]
    put_s = time.perf_counter() - t0

    fd, path = tempfile.mkstemp(prefix="pi_bench_", suffix=".csv", dir="/tmp")
    with os.fdopen(fd, "w") as f:
        for i in range(n):
            f.write(row(i) + "\n")
    os.chmod(path, 0o644)

    try:
        with ph.fresh_db() as db, ph.pg_connect(db) as conn:
            conn.execute(f"CREATE TABLE copy_target {ddl}")
            conn.execute(f"CREATE TABLE kinesis_target {ddl}")
            t0 = time.perf_counter()
            conn.execute(f"COPY copy_target FROM '{path}' (FORMAT csv)")
            copy_s = time.perf_counter() - t0

            conn.execute("SELECT pipeline_kinesis.add_endpoint('bench', %s, NULL, %s)", (ph.AWS_REGION, ph.KINESIS_ENDPOINT))
            kpid = kinesalite_pid()
            k_cpu0 = cpu_seconds(kpid)
            worker_cpu: dict[int, float] = {}
            t0 = time.perf_counter()
            conn.execute("SELECT pipeline_kinesis.consume_begin('bench', %s, 'kinesis_target', format := 'csv', "
                         "start_offset := -2, batchsize := %s, parallelism := %s, poll_interval := %s)",
                         (stream, args.batchsize, args.parallelism, args.poll_interval))
            pids: list[int] = []
            rss = 0
            deadline = time.monotonic() + 1800
            while True:
                got = conn.execute("SELECT coalesce(sum(records), 0) FROM pipeline_kinesis.consumer_status").fetchone()[0]
                pids = [r[0] for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pipeline_kinesis consumer' "
                    "AND datname = current_database()").fetchall()] or pids
                rss = max(rss, peak_rss_kb(pids))
                for pid in pids:
                    worker_cpu[pid] = max(worker_cpu.get(pid, 0.0), cpu_seconds(pid))
                if got >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            ingest_s = time.perf_counter() - t0
            k_cpu = cpu_seconds(kpid) - k_cpu0
            w_cpu = sum(worker_cpu.values())
            got = conn.execute("SELECT count(*), count(DISTINCT id) FROM kinesis_target").fetchone()
            conn.execute("SELECT pipeline_kinesis.consume_end()")
    finally:
        os.unlink(path)
        ph.kinesis_delete_stream(stream)

    print(f"rows={n} shards={args.shards} batchsize={args.batchsize} parallelism={args.parallelism} "
          f"poll_interval={args.poll_interval}")
    print(f"put into kinesalite: {put_s:8.2f} s  {n / put_s:12,.0f} records/s (PutRecords, 500 per call)")
    print(f"COPY FROM file     : {copy_s:8.2f} s  {n / copy_s:12,.0f} rows/s")
    print(f"pipeline_kinesis   : {ingest_s:8.2f} s  {n / ingest_s:12,.0f} rows/s  (rows {got[0]}, distinct {got[1]})")
    print(f"ratio              : {copy_s / ingest_s:8.3f} of COPY speed")
    print(f"worker peak RSS    : {rss / 1024:8.1f} MiB (sum over workers)")
    print(f"CPU while ingesting: kinesalite {k_cpu:.1f} s ({100 * k_cpu / ingest_s:.0f}% of one core), "
          f"consumer workers {w_cpu:.1f} s ({100 * w_cpu / ingest_s:.0f}%)")


if __name__ == "__main__":
    main()
