"""Ingestion throughput against raw COPY, side by side (not a test: prints figures).

For the same N rows it measures
  1. COPY FROM a server-side file of the rows (the ceiling), into table copy_target;
  2. pipeline_kafka ingesting the same rows, one Kafka message per row, from the beginning of a
     topic already filled (so only ingestion is timed), into table kafka_target;
and prints rows/s for both, their ratio, and the peak resident memory of the consumer workers.

Usage (services running, extension installed; see `make bench`):
  bench/consume_vs_copy.py [--rows N] [--batchsize B] [--parallelism P] [--partitions K]
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


def row(i: int) -> str:
    return f"{i},user{i % 1000},{(i * 37) % 100000 / 100:.2f},2026-01-01 00:00:{i % 60:02d}+00"


def peak_rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batchsize", type=int, default=1000)
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--bad-percent", type=float, default=0.0,
                    help="make this share of the Kafka messages unparsable (they go to the dead letters)")
    args = ap.parse_args()
    n = args.rows
    ddl = "(id bigint, name text, amount numeric(10,2), at timestamptz)"

    topic = ph.unique_name("bench")
    ph.create_topic(topic, args.partitions)
    print(f"producing {n} messages to {topic} ({args.partitions} partition(s)) ...", flush=True)
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": ph.KAFKA_BOOTSTRAP, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1000000, "enable.idempotence": True})
    bad_every = int(round(100 / args.bad_percent)) if args.bad_percent > 0 else 0
    n_bad = 0
    for i in range(n):
        value = row(i)
        if bad_every and i % bad_every == bad_every - 1:
            value = f"{i},not-a-number-row"
            n_bad += 1
        while True:
            try:
                p.produce(topic, value.encode(), partition=i % args.partitions)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0, "messages left unsent"

    fd, path = tempfile.mkstemp(prefix="pi_bench_", suffix=".csv", dir="/tmp")
    with os.fdopen(fd, "w") as f:
        for i in range(n):
            f.write(row(i) + "\n")
    os.chmod(path, 0o644)

    try:
        with ph.fresh_db() as db, ph.pg_connect(db) as conn:
            conn.execute(f"CREATE TABLE copy_target {ddl}")
            conn.execute(f"CREATE TABLE kafka_target {ddl}")
            t0 = time.perf_counter()
            conn.execute(f"COPY copy_target FROM '{path}' (FORMAT csv)")
            copy_s = time.perf_counter() - t0

            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (ph.KAFKA_BOOTSTRAP,))
            t0 = time.perf_counter()
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'kafka_target', format := 'csv', "
                         "start_offset := -2, batchsize := %s, parallelism := %s)",
                         (topic, args.batchsize, args.parallelism))
            pids: list[int] = []
            rss = 0
            deadline = time.monotonic() + 1800
            while True:
                # committed offsets count every message (row or dead letter); polling them costs
                # nothing, unlike count(*) over the growing table
                got = conn.execute("SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets").fetchone()[0]
                pids = [r[0] for r in conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pipeline_kafka consumer' "
                    "AND datname = current_database()").fetchall()] or pids
                rss = max(rss, peak_rss_kb(pids))
                if got >= n or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            ingest_s = time.perf_counter() - t0
            got = conn.execute("SELECT (SELECT count(*) FROM kafka_target) + "
                               "(SELECT count(*) FROM pipeline_kafka.dead_letters)").fetchone()[0]
            distinct = conn.execute("SELECT count(DISTINCT id) FROM kafka_target").fetchone()[0]
            dead = conn.execute("SELECT count(*) FROM pipeline_kafka.dead_letters").fetchone()[0]
            conn.execute("SELECT pipeline_kafka.consume_end()")
    finally:
        os.unlink(path)
        ph.delete_topic(topic)

    print(f"rows={n} batchsize={args.batchsize} parallelism={args.parallelism} partitions={args.partitions} "
          f"bad={n_bad} ({args.bad_percent}%)")
    print(f"COPY FROM file : {copy_s:8.2f} s  {n / copy_s:12,.0f} rows/s")
    print(f"pipeline_kafka : {ingest_s:8.2f} s  {n / ingest_s:12,.0f} rows/s  (rows {got - dead}, distinct {distinct}, dead letters {dead})")
    print(f"ratio          : {copy_s / ingest_s:8.3f} of COPY speed")
    print(f"worker peak RSS: {rss / 1024:8.1f} MiB (sum over workers)")


if __name__ == "__main__":
    main()
