"""Where one Kafka consumer worker's time goes (issue 23): fills a topic with N messages, runs one
consumer with the fast path on or off, and prints the worker's CPU per message by thread (the
main thread inserts; `pi:kafka-reader` takes messages off librdkafka's queue and, on the fast path,
parses and converts them; `rdk:broker*` are librdkafka's), the rate from consume_begin and from the
first commit on (start-up left out), and the batches. With --perf it records the worker with
`perf record -g` (all threads from the start; `perf report -i FILE --sort comm,dso,sym`).
It also prints the whole machine's CPU per message over the same run, by who used it (the
worker, the Kafka broker's JVM, PostgreSQL's other processes, the rest): what two cores have to
give per message. Not a test and not make bench: a tool to see what a change does to a worker. Like bench/run.py it
needs the services and a superuser connection (scripts/env.sh), and leaves nothing behind.

  bench/profile_worker.py csv 2000000 [--fast-path off] [--perf /tmp/csv.data]
  bench/profile_worker.py avro 2000000    (the registry running: scripts/services.sh start registry)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import time

from common import (NARROW_AVRO_SCHEMA, NARROW_COLUMNS, WIDE_COLUMNS, narrow_avro, narrow_bad, narrow_csv, narrow_json,
                    ph, wide_csv)
from run import fill_topic

SHAPES = {
    "csv": (narrow_csv, "csv", NARROW_COLUMNS),
    "json": (narrow_json, "json", NARROW_COLUMNS),
    "bad": (lambda i: narrow_bad(i) if i % 100 == 99 else narrow_csv(i), "csv", NARROW_COLUMNS),
    "wide": (wide_csv, "csv", WIDE_COLUMNS),
    # the schema is registered under the topic's subject when the run starts (needs the registry)
    "avro": (None, "avro", NARROW_COLUMNS),
}


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of `pid`, summed by thread name."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                st = f.read()
        except FileNotFoundError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of every process on the machine (name, seconds), by pid."""
    out: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        fields = st[st.rindex(")") + 2:].split()
        out[int(d)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def machine_busy() -> float:
    """CPU seconds the machine has been busy (all cores; /proc/stat, idle and iowait left out)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def where_machine_cpu_went(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                           worker: int, busy: float, n: int) -> str:
    """The machine's CPU per message over the run, by who used it: the worker, the Kafka broker
    (java), PostgreSQL's other processes, the rest (this script, the kernel's threads...)."""
    groups: dict[str, float] = {"worker": 0.0, "kafka broker": 0.0, "other postgres": 0.0}
    for pid, (name, secs) in after.items():
        used = secs - before.get(pid, (name, 0.0))[1]
        key = "worker" if pid == worker else "kafka broker" if name == "java" else \
            "other postgres" if name == "postgres" else None
        if key:
            groups[key] += used
    groups["rest"] = max(busy - sum(groups.values()), 0.0)
    return f"machine CPU per message (us): {busy / n * 1e6:.2f} = " + ", ".join(
        f"{k} {v / n * 1e6:.2f}" for k, v in groups.items())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("messages", type=int)
    ap.add_argument("--fast-path", choices=["on", "off"], default="on")
    ap.add_argument("--perf", metavar="FILE", help="perf record -g the worker into FILE")
    args = ap.parse_args()
    line, fmt, columns = SHAPES[args.shape]
    n = args.messages
    db, topic = ph.unique_name("prof"), ph.unique_name("prof")
    ph.create_database(db, extension=True)
    admin = ph.pg_connect("postgres")
    try:
        c = ph.pg_connect(db)
        if fmt == "avro":
            line = narrow_avro(ph.register_schema(f"{topic}-value", NARROW_AVRO_SCHEMA))
            c.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (ph.SCHEMA_REGISTRY_URL,))
        fill_topic(topic, n, line, 4)
        c.execute(f"CREATE TABLE t ({columns})")
        admin.execute(f"ALTER SYSTEM SET pipeline_ingest.fast_path = {args.fast_path}")
        admin.execute("SELECT pg_catalog.pg_reload_conf()")
        time.sleep(0.5)
        c.execute("SELECT pipeline_kafka.add_broker(%s)", (ph.KAFKA_BOOTSTRAP,))
        t0 = time.perf_counter()
        procs0, busy0 = process_cpu(), machine_busy()
        cid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := %s, start_offset := -2)",
                        (topic, fmt)).fetchone()[0]
        pid = None
        while pid is None:
            row = c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pipeline_kafka consumer' "
                            "AND datname = current_database()").fetchone()
            pid = row and row[0]
            time.sleep(0.005)
        perf = subprocess.Popen(["perf", "record", "-F", "2000", "-g", "-o", args.perf, "-p", str(pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if args.perf else None
        first = None
        deadline = time.monotonic() + max(120.0, n / 20000)
        while True:
            done = int(c.execute('SELECT coalesce(sum("offset"), 0) FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                                 (cid,)).fetchone()[0])
            if done and first is None:
                first = (time.perf_counter() - t0, done)
            if done >= n:
                break
            assert time.monotonic() < deadline, f"{done:,} of {n:,} messages"
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        threads = thread_cpu(pid)
        machine = where_machine_cpu_went(procs0, process_cpu(), pid, machine_busy() - busy0, n)
        if perf:
            perf.send_signal(2)
            perf.wait()
        batches = c.execute("SELECT max(batches) FROM pipeline_kafka.consumer_status WHERE consumer_id = %s",
                            (cid,)).fetchone()[0]
        total = sum(threads.values())
        by_thread = ", ".join(f"{k} {v / n * 1e6:.2f}" for k, v in sorted(threads.items(), key=lambda x: -x[1]) if v)
        print(f"{args.shape}, fast_path {args.fast_path}: {n:,} messages in {seconds:.2f} s = {n / seconds:,.0f}/s; "
              f"first commit after {first[0]:.2f} s ({first[1]:,} messages), from there {(n - first[1]) / (seconds - first[0]):,.0f}/s; "
              f"at most {batches} batches")
        print(f"worker CPU per message (us): {total / n * 1e6:.2f} = {by_thread}")
        print(machine)
        c.execute("SELECT pipeline_kafka.consume_drop(%s, 't')", (topic,))
        c.close()
    finally:
        admin.execute("ALTER SYSTEM RESET pipeline_ingest.fast_path")
        admin.execute("SELECT pg_catalog.pg_reload_conf()")
        admin.close()
        ph.drop_database(db)
        ph.delete_topic(topic)


if __name__ == "__main__":
    main()
