"""`make bench`: every ingestion and producing path of pipeline_ingest held against raw COPY FROM a
file of the same rows, measured side by side in one process and one run (issue 10). Not a test:
it prints one table of rows/s and ratios and writes it, with the machine description, into
BENCHMARKS.md between the bench markers (a rerun replaces it). BENCHMARKS.md ("Method") says what
each case measures and how.

Cases (--only takes a comma-separated list of these names):
  copy         COPY FROM a server-side file of the narrow rows (the ceiling; always measured when
               a ratio needs it)
  csv, json    pipeline_kafka, one worker, the narrow rows as csv / json messages
  avro         the same with the narrow rows as Avro (long, decimal, double) through the schema
               registry (scripts/services.sh's registry must be running)
  csv2         csv, two workers on the 4 partitions
  wide         csv, one worker, the wider row (20 columns, ~300 bytes; against COPY of the same)
  seed-insert  the seed's approach: a Python confluent-kafka consumer, batches of 50,000 messages,
               each one parameterized INSERT ... SELECT FROM unnest(...) and a commit
  seed-copy    the same consumer, each batch one COPY FROM STDIN through psycopg and a commit
  deadletters  csv with 1% bad messages, against the clean csv run (same settings)
  produce      produce_message x100k in one transaction: SQL time, COMMIT -> all in the topic
  outbox       produce_message x1M in one transaction: the producer worker's memory while it
               drains a 1M-row outbox
  emit         emit_tuple: one INSERT of 100k rows into a table with the trigger, same clocks
  latency      a 1k msg/s stream with default consumer settings: produce -> row visible, p50/p99
  rss          consumer worker peak RSS while it drains a backlog of 10M messages (defaults)
  kinesis      pipeline_kinesis from kinesalite, one shard, defaults (bench/kinesis_vs_copy.py)

Usage (services running, extension installed; `make bench` does both first):
  bench/run.py [--only csv,json] [--scale 0.1] [--repeat 3] [--tables plain,pk] [--batchsize B]
               [--no-write | --write] [--output BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import math
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

from common import (BEGIN, NARROW_COLUMNS, NARROW_KEY, ROOT, WIDE_COLUMNS, WIDE_KEY, backend_pids,  # noqa: E402
                    cpu_seconds, machine, median, narrow_avro, narrow_bad, narrow_csv, narrow_json, now_utc, peak_rss_kb, ph,
                    private_rss_kb, rate,
                    replace_block, spread, wait_no_backends, wide_csv, write_rows_file)
import kinesis_vs_copy  # noqa: E402

CONSUMER = "pipeline_kafka consumer"
PRODUCER = "pipeline_kafka producer"
SEED_BATCH = 50_000
# The same consumers with `pipeline_ingest.fast_path = off` (the text path: the worker's main thread
# parses every field, as before issue 23): the before/after of the fast path in one run.
TEXT_CASES = ["csv-text", "json-text", "deadletters-text", "wide-text"]
CASES = ["copy", "csv", "json", "avro", "csv2", "wide", "seed-insert", "seed-copy", "deadletters", "produce", "emit",
         "outbox", "latency", "rss", "kinesis"] + TEXT_CASES
# Cases measured on both table definitions (--tables); the others on the plain table only.
TABLE_CASES = {"copy", "csv", "json", "avro", "csv2", "wide", "seed-insert", "seed-copy", "deadletters"} | set(TEXT_CASES)
# Cases whose ratio is taken against COPY of the narrow rows (measured in every run they are in).
NEED_COPY = (TABLE_CASES - {"wide", "wide-text"}) | {"rss", "kinesis"}
LABELS = {
    "copy": "raw COPY FROM file",
    "copy-wide": "raw COPY FROM file, wide row",
    "csv": "csv, 1 worker",
    "csv-text": "csv, 1 worker, text path (fast_path off)",
    "json-text": "json, 1 worker, text path (fast_path off)",
    "deadletters-text": "csv, 1% bad messages, text path (fast_path off)",
    "wide-text": "wide row csv, 1 worker, text path (fast_path off)",
    "json": "json, 1 worker",
    "avro": "avro (schema registry), 1 worker",
    "csv2": "csv, 2 workers (4 partitions)",
    "wide": "wide row (20 columns, ~300 B) csv, 1 worker",
    "seed-insert": "seed: Python consumer, INSERT per 50k",
    "seed-copy": "seed: Python consumer, COPY per 50k",
    "deadletters": "csv, 1% bad messages",
    "produce": "produce_message, one transaction",
    "emit": "emit_tuple, one INSERT",
    "outbox": "produce_message, a 1M-row outbox",
    "latency": "latency at {rate} msg/s, defaults",
    "rss": "csv draining a backlog, defaults",
    "kinesis": "Kinesis (kinesalite), 1 shard, defaults",
}


def scaled(n: int, scale: float, minimum: int) -> int:
    return max(minimum, int(round(n * scale)))


def fill_topic(topic: str, n: int, line: Callable[[int], Any], partitions: int) -> float:
    """Create `topic` and produce rows 0..n-1 into it, message i to partition i mod partitions;
    returns the seconds it took (not part of any measurement)."""
    from confluent_kafka import Producer
    ph.create_topic(topic, partitions)
    t0 = time.perf_counter()
    p = Producer({"bootstrap.servers": ph.KAFKA_BOOTSTRAP, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1000000, "enable.idempotence": True})
    failed: list[Any] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err)

    for i in range(n):
        value = line(i)
        value = value if isinstance(value, bytes) else value.encode()
        while True:
            try:
                p.produce(topic, value, partition=i % partitions, on_delivery=report)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(max(120.0, n / 20000))
    assert left == 0 and not failed, f"{topic}: {left} messages unsent, {len(failed)} failed ({failed[:3]})"
    return time.perf_counter() - t0


class Bench:
    def __init__(self, args: argparse.Namespace, conn: Any):
        self.args = args
        self.conn = conn
        s = args.scale
        self.n = scaled(args.rows, s, 1000)
        self.n_backlog = scaled(args.backlog, s, 10_000)
        self.n_produce = scaled(args.produce_messages, s, 1000)
        self.n_outbox = scaled(args.outbox_messages, s, 1000)
        self.n_kinesis = scaled(args.kinesis_records, s, 1000)
        self.latency_s = max(3.0, args.latency_seconds * s)
        self.only = set(args.only)
        self.results: dict[tuple[str, str], list[dict]] = {}
        self.errors: dict[tuple[str, str], str] = {}
        self.topics: list[str] = []
        self.files: dict[str, Path] = {}
        self.stream: Optional[str] = None
        self.seq = 0

    # ----------------------------------------------------------------------- bookkeeping

    def want(self, case: str) -> bool:
        return case in self.only

    def name(self, case: str, variant: str) -> str:
        self.seq += 1
        return f"b{self.seq}_{case.replace('-', '_')}_{variant}"

    def table(self, case: str, variant: str, columns: str, key: str) -> str:
        t = self.name(case, variant)
        pk = f", PRIMARY KEY ({key})" if variant == "pk" else ""
        self.conn.execute(f"CREATE TABLE {t} ({columns}{pk})")
        return t

    def record(self, case: str, variant: str, fn: Callable[[], dict]) -> None:
        """Run one measurement; a failure is reported (and the table shows it) but does not stop
        the other cases."""
        print(f"  {case:<12} {variant:<5} ...", end=" ", flush=True)
        try:
            r = fn()
        except Exception as exc:  # noqa: BLE001 - reported in the table and the exit status
            traceback.print_exc()
            self.errors[(case, variant)] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            return
        self.results.setdefault((case, variant), []).append(r)
        print(", ".join(f"{k} {v:,.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()), flush=True)

    def new_topic(self, prefix: str) -> str:
        t = ph.unique_name(prefix)
        self.topics.append(t)
        return t

    def consumer_settings(self) -> dict:
        return {"batchsize": self.args.batchsize} if self.args.batchsize else {}

    # ----------------------------------------------------------------------- data, prepared once

    def prepare(self) -> None:
        n, parts = self.n, self.args.partitions
        need_narrow = self.only & {"csv", "csv2", "seed-insert", "seed-copy", "deadletters", "csv-text", "deadletters-text"}
        if self.only & NEED_COPY:
            self.files["narrow"] = write_rows_file("narrow", n, narrow_csv)
        if need_narrow:
            self.topic_csv = self.new_topic("bench_csv")
            print(f"producing {n:,} csv messages ({parts} partitions) ...", flush=True)
            fill_topic(self.topic_csv, n, narrow_csv, parts)
        if self.want("json") or self.want("json-text"):
            self.topic_json = self.new_topic("bench_json")
            print(f"producing {n:,} json messages ...", flush=True)
            fill_topic(self.topic_json, n, narrow_json, parts)
        if self.want("avro"):
            from common import NARROW_AVRO_SCHEMA
            self.topic_avro = self.new_topic("bench_avro")
            sid = ph.register_schema(f"{self.topic_avro}-value", NARROW_AVRO_SCHEMA)
            self.conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (ph.SCHEMA_REGISTRY_URL,))
            print(f"producing {n:,} avro messages ...", flush=True)
            fill_topic(self.topic_avro, n, narrow_avro(sid), parts)
        if self.want("wide") or self.want("wide-text"):
            self.files["wide"] = write_rows_file("wide", n, wide_csv)
            self.topic_wide = self.new_topic("bench_wide")
            print(f"producing {n:,} wide csv messages ...", flush=True)
            fill_topic(self.topic_wide, n, wide_csv, parts)
        if self.want("deadletters") or self.want("deadletters-text"):
            self.topic_bad = self.new_topic("bench_bad")
            self.n_bad = sum(1 for i in range(n) if i % 100 == 99)
            print(f"producing {n:,} csv messages, {self.n_bad:,} of them bad ...", flush=True)
            fill_topic(self.topic_bad, n, lambda i: narrow_bad(i) if i % 100 == 99 else narrow_csv(i), parts)
        if self.want("rss"):
            self.topic_backlog = self.new_topic("bench_backlog")
            print(f"producing a backlog of {self.n_backlog:,} csv messages ...", flush=True)
            fill_topic(self.topic_backlog, self.n_backlog, narrow_csv, parts)
        if self.want("kinesis"):
            self.stream = ph.unique_name("bench")
            print(f"putting {self.n_kinesis:,} records into kinesalite ...", flush=True)
            put_s = kinesis_vs_copy.fill_stream(self.stream, self.n_kinesis, narrow_csv, 1)
            print(f"  ({self.n_kinesis / put_s:,.0f} records/s into kinesalite)")
            self.conn.execute("SELECT pipeline_kinesis.add_endpoint('bench', %s, NULL, %s)",
                              (ph.AWS_REGION, ph.KINESIS_ENDPOINT))
        # (Producing needs no supervisor up front: a database holds one only while it has work, and
        # each producing case waits for its warm-up message, delivered by the producer worker the
        # outbox row wakes.)
        self.conn.execute("SELECT pipeline_kafka.add_broker(%s)", (ph.KAFKA_BOOTSTRAP,))

    def cleanup(self) -> None:
        for t in self.topics:
            try:
                ph.delete_topic(t)
            except Exception as exc:  # noqa: BLE001 - cleanup continues
                print(f"warning: could not delete topic {t}: {exc!r}")
        if self.stream:
            ph.kinesis_delete_stream(self.stream)
        for p in self.files.values():
            p.unlink(missing_ok=True)

    # ----------------------------------------------------------------------- measurements

    def copy(self, variant: str, shape: str) -> dict:
        columns, key = (NARROW_COLUMNS, NARROW_KEY) if shape == "narrow" else (WIDE_COLUMNS, WIDE_KEY)
        t = self.table("copy", variant, columns, key)
        t0 = time.perf_counter()
        self.conn.execute(f"COPY {t} FROM '{self.files[shape]}' (FORMAT csv)")
        seconds = time.perf_counter() - t0
        self.conn.execute(f"DROP TABLE {t}")
        return dict(seconds=seconds, rate=self.n / seconds)

    def kafka(self, case: str, variant: str, topic: str, n: int, fmt: str, columns: str, key: str,
              parallelism: int = 1, dead: int = 0) -> dict:
        """pipeline_kafka from consume_begin(start_offset := -2) until the committed offsets cover
        all n messages (worker start-up included); then exactly n - dead rows, all distinct, and
        `dead` dead letters."""
        conn = self.conn
        t = self.table(case, variant, columns, key)
        settings = self.consumer_settings()
        args = "".join(f", {k} := %s" for k in settings)
        rss = 0
        private = 0
        pids: list[int] = []
        first: Optional[float] = None
        cpu: dict[int, float] = {}
        try:
            t0 = time.perf_counter()
            cid = conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s, format := %s, start_offset := -2, "
                               f"parallelism := %s{args})", [topic, t, fmt, parallelism, *settings.values()]
                               ).fetchone()[0]
            deadline = time.monotonic() + max(300.0, n / 1000)
            next_check = time.monotonic() + 1
            while True:
                # The committed offsets count every message (row or dead letter); reading them is
                # cheap, unlike count(*) over the growing table.
                got = conn.execute('SELECT coalesce(sum("offset"), 0) FROM pipeline_kafka.offsets '
                                   "WHERE consumer_id = %s", (cid,)).fetchone()[0]
                pids = backend_pids(conn, CONSUMER) or pids
                rss = max(rss, peak_rss_kb(pids))
                private = max(private, private_rss_kb(pids))
                for pid in pids:
                    cpu[pid] = max(cpu.get(pid, 0.0), cpu_seconds(pid))
                if got and first is None:
                    first = time.perf_counter() - t0
                if got >= n:
                    break
                if time.monotonic() > next_check:
                    enabled, err = conn.execute("SELECT enabled, last_error FROM pipeline_kafka.consumers "
                                                "WHERE id = %s", (cid,)).fetchone()
                    if not enabled or time.monotonic() > deadline:
                        raise AssertionError(f"{got:,} of {n:,} messages after {time.perf_counter() - t0:.0f}s "
                                             f"(enabled {enabled}, last_error {err!r})")
                    next_check = time.monotonic() + 1
                time.sleep(0.02)
            seconds = time.perf_counter() - t0
            # A batch counts once in each partition it touched: the busiest partition per worker.
            batches = conn.execute("SELECT coalesce(sum(b), 0) FROM (SELECT max(batches) AS b FROM "
                                   "pipeline_kafka.consumer_status WHERE consumer_id = %s GROUP BY worker_pid) w",
                                   (cid,)).fetchone()[0]
            rows, distinct = conn.execute(f"SELECT count(*), count(DISTINCT {key}) FROM {t}").fetchone()
            dl = conn.execute("SELECT count(*) FROM pipeline_kafka.dead_letters WHERE consumer_id = %s",
                              (cid,)).fetchone()[0]
            assert (rows, distinct, dl) == (n - dead, n - dead, dead), \
                f"{rows:,} rows ({distinct:,} distinct) and {dl:,} dead letters for {n:,} messages ({dead:,} bad)"
        finally:
            conn.execute("SELECT pipeline_kafka.consume_drop(%s, %s) FROM pipeline_kafka.consumers "
                         "WHERE topic = %s AND relation = %s::regclass", (topic, t, topic, t))
            wait_no_backends(conn, CONSUMER)
            conn.execute(f"DROP TABLE {t}")
        return dict(seconds=seconds, rate=n / seconds, startup_s=first or seconds, rss_mib=rss / 1024,
                    private_mib=private / 1024, workers_cpu=sum(cpu.values()) / seconds, cpu_us=1e6 * sum(cpu.values()) / n,
                    batch_avg=n / max(batches, 1))

    def seed(self, variant: str, method: str) -> dict:
        """The seed's consumer loop (neo4j-kafka-1M-updates) ported to PostgreSQL: poll one message
        at a time, split the csv value, and write every 50,000 messages in one transaction, as one
        parameterized INSERT (the seed's UNWIND of a list parameter) or one COPY FROM STDIN."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        case = f"seed-{method}"
        n, topic = self.n, self.topic_csv
        t = self.table(case, variant, NARROW_COLUMNS, NARROW_KEY)
        insert = (f"INSERT INTO {t} (user_id, amount, ts) SELECT u::bigint, a::numeric, s::float8 "
                  "FROM unnest(%s::text[], %s::text[], %s::text[]) AS m(u, a, s)")
        try:
            with ph.pg_connect(self.conn.info.dbname, application_name="pi_bench_seed") as db:
                t0 = time.perf_counter()
                # No group offsets are committed (the seed auto-commits them, outside the data's
                # transaction, which is no part of what is compared here).
                c = Consumer({"bootstrap.servers": ph.KAFKA_BOOTSTRAP, "group.id": ph.unique_name("pi_bench_seed"),
                              "enable.auto.commit": False})
                try:
                    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(self.args.partitions)])
                    done = 0
                    deadline = time.monotonic() + max(300.0, n / 1000)
                    while done < n:
                        batch: list[Any] = []
                        while len(batch) < SEED_BATCH and done + len(batch) < n:
                            m = c.poll(1.0)
                            if m is None:
                                assert time.monotonic() < deadline, f"{done + len(batch):,} of {n:,} messages"
                                continue
                            if m.error():
                                raise AssertionError(f"consume error: {m.error()}")
                            batch.append(m.value().decode().split(",") if method == "insert" else m.value())
                        with db.transaction():
                            if method == "insert":
                                db.execute(insert, [list(col) for col in zip(*batch)])
                            else:
                                with db.cursor().copy(f"COPY {t} FROM STDIN (FORMAT csv)") as cp:
                                    cp.write(b"\n".join(batch) + b"\n")
                        done += len(batch)
                    seconds = time.perf_counter() - t0
                finally:
                    c.close()
            rows, distinct = self.conn.execute(f"SELECT count(*), count(DISTINCT user_id) FROM {t}").fetchone()
            assert rows == n and distinct == n, f"{rows:,} rows ({distinct:,} distinct) for {n:,} messages"
        finally:
            self.conn.execute(f"DROP TABLE {t}")
        return dict(seconds=seconds, rate=n / seconds)

    def produce(self, how: str, n: Optional[int] = None) -> dict:
        """n messages from one backend in one transaction: the transaction's own time (SQL), and
        from COMMIT until all are in the topic (delivery: the producer worker drains the outbox).
        One message is produced and delivered first, so the producer worker is running."""
        conn, n = self.conn, n or self.n_produce
        topic = self.new_topic("bench_produce")
        ph.create_topic(topic, self.args.produce_partitions)
        t = self.name(how, "plain")
        try:
            if how == "emit":
                conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v text, n numeric)")
                conn.execute(f"CREATE TRIGGER to_kafka AFTER INSERT ON {t} FOR EACH ROW "
                             f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{topic}', '-1', 'id')")
                conn.execute(f"INSERT INTO {t} VALUES (0, 'warm-up', 0)")
            else:
                conn.execute("SELECT pipeline_kafka.produce_message(%s, 'warm-up')", (topic,))
            ph.wait_topic_count(topic, 1, timeout=180, interval=0.02)
            t0 = time.perf_counter()
            if how == "emit":
                conn.execute(f"INSERT INTO {t} SELECT i, 'row ' || i, i / 7.0 FROM generate_series(1, %s) i", (n,))
            else:
                with conn.transaction():
                    conn.execute("SELECT count(pipeline_kafka.produce_message(%s, convert_to('msg-' || i, 'UTF8'))) "
                                 "FROM generate_series(1, %s) i", (topic, n))
            sql_s = time.perf_counter() - t0
            # Until all are in the topic: the watermarks and the producer worker's private memory
            # (RssAnon: without the shared buffers it touched), every 20 ms.
            pids = backend_pids(conn, PRODUCER)
            private = 0
            counter = ph.watermark_consumer()
            try:
                def delivered() -> bool:
                    nonlocal private, pids
                    pids = backend_pids(conn, PRODUCER) or pids
                    private = max(private, private_rss_kb(pids))
                    return ph.topic_message_count(topic, counter) >= n + 1
                ph.wait_until(delivered, timeout=max(300.0, n / 500), interval=0.02,
                              what=f"{n + 1:,} messages in topic {topic}")
            finally:
                counter.close()
            all_s = time.perf_counter() - t0
            ph.wait_until(lambda: conn.execute("SELECT count(*) FROM pipeline_kafka.outbox WHERE topic = %s",
                                               (topic,)).fetchone()[0] == 0,
                          timeout=120, what=f"outbox of {topic} drained")
            # Delivered once each: the outbox is empty and the topic (written without Kafka
            # transactions, so its watermarks count messages exactly) holds n + 1.
            got = ph.topic_message_count(topic)
            assert got == n + 1, f"{got:,} messages in {topic} for {n + 1:,} produced"
            rss = peak_rss_kb(backend_pids(conn, PRODUCER))
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {t}")
            ph.delete_topic(topic)
            self.topics.remove(topic)
        return dict(seconds=all_s, rate=n / all_s, sql_s=sql_s, sql_rate=n / sql_s, delivery_s=all_s - sql_s,
                    producer_rss_mib=rss / 1024, producer_private_mib=private / 1024)

    def latency(self) -> dict:
        """A stream of `latency_rate` messages/s (one partition, consumer with default settings):
        each message carries the wall-clock time it was handed to the producer; the harness polls
        the table every 5 ms through the primary key (rows newer than the last seen), and a row's
        latency is the poll's start time minus its producer time. A row is visible only once
        its transaction has committed, so this is produce -> committed, overstated by at most one
        polling period and the producer's own send."""
        from confluent_kafka import Producer
        conn, rate_s = self.conn, self.args.latency_rate
        topic = self.new_topic("bench_latency")
        ph.create_topic(topic, 1)
        t = self.name("latency", "plain")
        conn.execute(f"CREATE TABLE {t} (seq bigint PRIMARY KEY, produced_at double precision)")
        p = Producer({"bootstrap.servers": ph.KAFKA_BOOTSTRAP, "linger.ms": 0, "enable.idempotence": True})
        try:
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv')", (topic, t))
            # Positive marker: a warm-up row is visible, so the worker runs and reads the topic.
            p.produce(topic, f"-1,{time.time():.6f}".encode())
            p.flush(30)
            ph.wait_until(lambda: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == 1, timeout=180,
                          interval=0.02, what="the warm-up row")
            total = int(self.latency_s * rate_s)
            seen = -1
            lat: list[float] = []
            start = time.perf_counter()
            sent = 0
            next_poll = start
            deadline = start + self.latency_s + 120
            while seen < total - 1:
                now = time.perf_counter()
                due = min(total, int((now - start) * rate_s) + 1)
                while sent < due:
                    p.produce(topic, f"{sent},{time.time():.6f}".encode())
                    sent += 1
                p.poll(0)
                if now >= next_poll:
                    polled_at = time.time()
                    for seq, produced_at in conn.execute(f"SELECT seq, produced_at FROM {t} WHERE seq > %s "
                                                         "ORDER BY seq", (seen,)):
                        assert seq == seen + 1, f"row {seq} visible before row {seen + 1}"
                        seen = seq
                        lat.append(polled_at - produced_at)
                    next_poll = now + 0.005
                assert time.perf_counter() < deadline, f"{seen + 1:,} of {total:,} rows visible"
                wake = min(next_poll, start + sent / rate_s if sent < total else next_poll)
                time.sleep(max(0.0, wake - time.perf_counter()))
            assert conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] == total + 1
        finally:
            p.flush(30)
            conn.execute("SELECT pipeline_kafka.consume_drop(%s, %s) FROM pipeline_kafka.consumers "
                         "WHERE topic = %s AND relation = %s::regclass", (topic, t, topic, t))
            wait_no_backends(conn, CONSUMER)
            conn.execute(f"DROP TABLE {t}")
            ph.delete_topic(topic)
            self.topics.remove(topic)
        lat.sort()

        def q(f: float) -> float:
            return lat[max(0, math.ceil(f * len(lat)) - 1)] * 1000

        return dict(messages=total, p50_ms=q(0.5), p99_ms=q(0.99), max_ms=lat[-1] * 1000)

    def kinesis(self) -> dict:
        t = self.table("kinesis", "plain", NARROW_COLUMNS, NARROW_KEY)
        try:
            r = kinesis_vs_copy.ingest(self.conn, "bench", self.stream, t, self.n_kinesis, NARROW_KEY)
        finally:
            self.conn.execute(f"DROP TABLE {t}")
        s = r["seconds"]
        return dict(seconds=s, rate=self.n_kinesis / s, rss_mib=r["rss_kb"] / 1024,
                    kinesalite_cpu=r["kinesalite_cpu"] / s, workers_cpu=r["workers_cpu"] / s,
                    cpu_us=1e6 * r["workers_cpu"] / self.n_kinesis)

    # ----------------------------------------------------------------------- the run

    def run(self) -> None:
        for rep in range(self.args.repeat):
            print(f"run {rep + 1} of {self.args.repeat}", flush=True)
            for v in self.args.tables:
                n = self.n
                if self.only & NEED_COPY:
                    self.record("copy", v, lambda: self.copy(v, "narrow"))
                if self.want("csv"):
                    self.record("csv", v, lambda: self.kafka("csv", v, self.topic_csv, n, "csv", NARROW_COLUMNS,
                                                             NARROW_KEY))
                if self.want("json"):
                    self.record("json", v, lambda: self.kafka("json", v, self.topic_json, n, "json",
                                                              NARROW_COLUMNS, NARROW_KEY))
                if self.want("avro"):
                    self.record("avro", v, lambda: self.kafka("avro", v, self.topic_avro, n, "avro",
                                                              NARROW_COLUMNS, NARROW_KEY))
                if self.want("csv2"):
                    self.record("csv2", v, lambda: self.kafka("csv2", v, self.topic_csv, n, "csv", NARROW_COLUMNS,
                                                              NARROW_KEY, parallelism=2))
                if self.want("deadletters"):
                    if not self.want("csv"):   # the clean reference, same settings
                        self.record("csv", v, lambda: self.kafka("csv", v, self.topic_csv, n, "csv",
                                                                 NARROW_COLUMNS, NARROW_KEY))
                    self.record("deadletters", v, lambda: self.kafka("deadletters", v, self.topic_bad, n, "csv",
                                                                     NARROW_COLUMNS, NARROW_KEY, dead=self.n_bad))
                if self.want("seed-insert"):
                    self.record("seed-insert", v, lambda: self.seed(v, "insert"))
                if self.want("seed-copy"):
                    self.record("seed-copy", v, lambda: self.seed(v, "copy"))
                if self.want("wide"):
                    self.record("copy-wide", v, lambda: self.copy(v, "wide"))
                    self.record("wide", v, lambda: self.kafka("wide", v, self.topic_wide, n, "csv", WIDE_COLUMNS,
                                                              WIDE_KEY))
                if self.only & set(TEXT_CASES):
                    self.text_path_cases(v, n)
            if self.want("produce"):
                self.record("produce", "plain", lambda: self.produce("produce"))
            if self.want("emit"):
                self.record("emit", "plain", lambda: self.produce("emit"))
            if self.want("outbox"):
                self.record("outbox", "plain", lambda: self.produce("outbox", self.n_outbox))
            if self.want("latency"):
                self.record("latency", "plain", self.latency)
            if self.want("rss"):
                self.record("rss", "plain", lambda: self.kafka("rss", "plain", self.topic_backlog, self.n_backlog,
                                                               "csv", NARROW_COLUMNS, NARROW_KEY))
            if self.want("kinesis"):
                self.record("kinesis", "plain", self.kinesis)

    def set_fast_path(self, on: bool) -> None:
        """pipeline_ingest.fast_path for the workers started from now on (a SIGHUP setting)."""
        if on:
            self.conn.execute("ALTER SYSTEM RESET pipeline_ingest.fast_path")
        else:
            self.conn.execute("ALTER SYSTEM SET pipeline_ingest.fast_path = off")
        self.conn.execute("SELECT pg_catalog.pg_reload_conf()")
        want = "on" if on else "off"
        # the postmaster reads the file on SIGHUP; a worker forked after that has the setting
        ph.wait_until(lambda: self.conn.execute("SELECT current_setting('pipeline_ingest.fast_path')").fetchone()[0]
                      == want, timeout=10, interval=0.05, what=f"pipeline_ingest.fast_path = {want}")
        time.sleep(0.2)

    def text_path_cases(self, v: str, n: int) -> None:
        """The text-path twins of csv, json, deadletters and wide, with fast_path off meanwhile."""
        self.set_fast_path(False)
        try:
            if self.want("csv-text") or self.want("deadletters-text"):
                self.record("csv-text", v, lambda: self.kafka("csv-text", v, self.topic_csv, n, "csv", NARROW_COLUMNS,
                                                              NARROW_KEY))
            if self.want("json-text"):
                self.record("json-text", v, lambda: self.kafka("json-text", v, self.topic_json, n, "json",
                                                               NARROW_COLUMNS, NARROW_KEY))
            if self.want("deadletters-text"):
                self.record("deadletters-text", v, lambda: self.kafka("deadletters-text", v, self.topic_bad, n, "csv",
                                                                      NARROW_COLUMNS, NARROW_KEY, dead=self.n_bad))
            if self.want("wide-text"):
                if ("copy-wide", v) not in self.results or not self.want("wide"):
                    self.record("copy-wide", v, lambda: self.copy(v, "wide"))
                self.record("wide-text", v, lambda: self.kafka("wide-text", v, self.topic_wide, n, "csv", WIDE_COLUMNS,
                                                               WIDE_KEY))
        finally:
            self.set_fast_path(True)

    # ----------------------------------------------------------------------- the table

    def table_rows(self) -> list[list[str]]:
        out: list[list[str]] = []
        order = ["copy", "csv", "csv-text", "json", "json-text", "avro", "csv2", "deadletters", "deadletters-text",
                 "seed-insert", "seed-copy", "copy-wide", "wide", "wide-text", "rss", "kinesis", "produce", "emit", "outbox", "latency"]
        variants = list(self.args.tables) + (["plain"] if "plain" not in self.args.tables else [])
        sizes = {"rss": self.n_backlog, "kinesis": self.n_kinesis, "produce": self.n_produce,
                 "emit": self.n_produce, "outbox": self.n_outbox, "latency": int(self.latency_s * self.args.latency_rate)}
        for case in order:
            for v in variants:
                key = (case, v)
                if key not in self.results and key not in self.errors:
                    continue
                label = LABELS[case].format(rate=f"{self.args.latency_rate:,}")
                tbl = {"produce": "—", "outbox": "—", "emit": "primary key", "latency": "primary key"}.get(
                    case, "primary key" if v == "pk" else "no index")
                n = f"{sizes.get(case, self.n):,}"
                if key in self.errors and key not in self.results:
                    out.append([label, tbl, n, "failed", "", "", self.errors[key]])
                    continue
                runs = self.results[key]
                note = [] if key not in self.errors else [f"a run failed: {self.errors[key]}"]
                if case == "latency":
                    p50 = [r["p50_ms"] for r in runs]
                    p99 = [r["p99_ms"] for r in runs]
                    out.append([label, tbl, n, "—", "", "",
                                f"produce → row committed: p50 {median(p50):.0f} ms, p99 {median(p99):.0f} ms "
                                f"(p99 {spread(p99, lambda x: f'{x:.0f}')}), max "
                                f"{max(r['max_ms'] for r in runs):.0f} ms"] + note)
                    continue
                rates = [r["rate"] for r in runs]
                med = median(rates)
                ratio = ""
                ref = ("copy-wide" if case in ("wide", "wide-text") else "copy", v if case in TABLE_CASES else "plain")
                if case in TABLE_CASES | {"rss", "kinesis"} and not case.startswith("copy") and ref in self.results:
                    x = med / median([r["rate"] for r in self.results[ref]])
                    ratio = f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"
                if case.startswith("copy"):
                    ratio = "1"
                if "startup_s" in runs[0]:
                    note.append(f"first batch committed after {median([r['startup_s'] for r in runs]):.2f} s")
                if "workers_cpu" in runs[0] and case != "kinesis":
                    note.append(f"workers used {100 * median([r['workers_cpu'] for r in runs]):.0f}% of a core")
                if "cpu_us" in runs[0]:
                    note.append(f"{median([r['cpu_us'] for r in runs]):.2f} µs of worker CPU per message")
                if "batch_avg" in runs[0]:
                    note.append(f"{median([r['batch_avg'] for r in runs]):,.0f} messages per batch")
                if "rss_mib" in runs[0]:
                    note.append(f"worker peak RSS {max(r['rss_mib'] for r in runs):.0f} MiB")
                if "private_mib" in runs[0]:
                    note.append(f"of it private (RssAnon, sampled every 20 ms) at most "
                                f"{max(r['private_mib'] for r in runs):.0f} MiB")
                clean_case = "csv-text" if case == "deadletters-text" else "csv"
                if case in ("deadletters", "deadletters-text") and (clean_case, v) in self.results:
                    clean = median([r["rate"] for r in self.results[(clean_case, v)]])
                    note.insert(0, f"{med / clean:.2f} of clean {clean_case} (cost {100 * (1 - med / clean):.0f}%), "
                                   f"{self.n_bad:,} dead letters")
                if case in ("produce", "emit", "outbox"):
                    note.insert(0, f"SQL {median([r['sql_s'] for r in runs]):.2f} s = "
                                   f"{rate(median([r['sql_rate'] for r in runs]))} msg/s; COMMIT → all in topic "
                                   f"{median([r['delivery_s'] for r in runs]):.2f} s; producer worker peak RSS "
                                   f"{max(r['producer_rss_mib'] for r in runs):.0f} MiB, of it private (RssAnon, "
                                   f"sampled every 20 ms while delivering) at most "
                                   f"{max(r['producer_private_mib'] for r in runs):.0f} MiB")
                if case == "kinesis":
                    note.insert(0, f"CPU: kinesalite {100 * median([r['kinesalite_cpu'] for r in runs]):.0f}% of a "
                                   f"core, workers {100 * median([r['workers_cpu'] for r in runs]):.0f}%")
                out.append([label, tbl, n, rate(med), spread(rates, rate), ratio, "; ".join(note)])
        return out

    def markdown(self) -> str:
        head = ["case", "table", "messages", "rows/s (median)", "spread (min–max)", "vs COPY", "notes"]
        lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---|---:|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.table_rows()]
        return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", type=lambda s: [c.strip() for c in s.split(",") if c.strip()], default=CASES,
                    help="comma-separated cases (default: all)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every case's size (e.g. 0.01 for a quick run)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the table shows the median and the spread")
    ap.add_argument("--tables", type=lambda s: [t.strip() for t in s.split(",") if t.strip()], default=["plain", "pk"],
                    help="table definitions: plain (no index), pk (primary key); default both")
    ap.add_argument("--rows", type=int, default=1_000_000, help="messages per throughput case (before --scale)")
    ap.add_argument("--backlog", type=int, default=10_000_000, help="messages of the rss case (before --scale)")
    ap.add_argument("--produce-messages", type=int, default=100_000, help="produce / emit (before --scale)")
    ap.add_argument("--outbox-messages", type=int, default=1_000_000, help="outbox case (before --scale)")
    ap.add_argument("--kinesis-records", type=int, default=100_000, help="kinesis case (before --scale)")
    ap.add_argument("--latency-seconds", type=float, default=30.0, help="latency stream length (before --scale; >= 3)")
    ap.add_argument("--latency-rate", type=int, default=1000, help="latency stream, messages per second")
    ap.add_argument("--partitions", type=int, default=4, help="partitions of the consumed topics")
    ap.add_argument("--produce-partitions", type=int, default=3, help="partitions of the produce / emit topics")
    ap.add_argument("--batchsize", type=int, default=None,
                    help="batchsize of every pipeline_kafka consumer (default: consume_begin's default)")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    w = ap.add_mutually_exclusive_group()
    w.add_argument("--write", action="store_true", help="write the table into --output even for a partial run")
    w.add_argument("--no-write", action="store_true", help="only print the table")
    args = ap.parse_args()
    unknown = [c for c in args.only if c not in CASES]
    if unknown or not set(args.tables) <= {"plain", "pk"} or not args.tables or args.repeat < 1:
        ap.error(f"unknown cases {unknown} (known: {', '.join(CASES)}) or bad --tables/--repeat")
    full = set(args.only) == set(CASES) and args.scale == 1.0
    write = args.write or (full and not args.no_write)

    with ph.fresh_db(ph.unique_name("pi_bench")) as db, ph.pg_connect(db, application_name="pi_bench") as conn:
        desc = machine(conn)
        print("\n".join(f"{k:>15}: {v}" for k, v in desc.items()), flush=True)
        if "replaced" in desc["build"]:
            raise SystemExit("the running PostgreSQL has an older pipeline_ingest.so mapped than the one "
                             "installed: restart it (scripts/services.sh restart pg) and run again")
        bench = Bench(args, conn)
        try:
            bench.prepare()
            bench.run()
        finally:
            bench.cleanup()
    table = bench.markdown()
    settings = "defaults except `start_offset := -2`" + (f" and `batchsize := {args.batchsize}`"
                                                         if args.batchsize else "")
    block = "\n".join([
        f"Measured {now_utc()} with `{' '.join(['bench/run.py'] + _argv())}` (what `make bench` runs), "
        f"{args.repeat} run{'s' if args.repeat > 1 else ''} per case, topics of {args.partitions} partitions, "
        f"pipeline_kafka consumers with {settings}.",
        "",
        *[f"- {k}: {v}" for k, v in desc.items()],
        "",
        table,
    ])
    print()
    print(table)
    if write:
        replace_block(args.output, block)
        print(f"\nwritten to {args.output} (between {BEGIN} and its end marker)")
    else:
        print(f"\n(not written to {args.output}: a partial run; --write writes it anyway)")
    if bench.errors:
        raise SystemExit(f"{len(bench.errors)} case(s) failed: {', '.join(f'{c}/{v}' for c, v in bench.errors)}")


def _argv() -> list[str]:
    import sys
    return sys.argv[1:]


if __name__ == "__main__":
    main()
