"""Helpers for the pipeline_ingest end-to-end tests.

Every wait here is bounded and polls (wait_until); nothing sleeps blindly.
Connection settings come from the environment exported by scripts/env.sh, with the
same defaults, so the helpers also work when pytest is started by hand.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import psycopg

PI_ROOT = Path(os.environ.get("PI_ROOT") or Path(__file__).resolve().parents[2])
PI_RUN = Path(os.environ.get("PI_RUN") or PI_ROOT / ".run")
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
PGHOST = os.environ.get("PGHOST", "127.0.0.1")
PGPORT = int(os.environ.get("PGPORT", "28815"))
PGUSER = "postgres"
PIPELINE_PGDATA = Path(os.environ.get("PIPELINE_PGDATA") or PI_RUN / "pg" / "data")
KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:29092")
KINESIS_ENDPOINT = os.environ.get("KINESIS_ENDPOINT", "http://127.0.0.1:24567")
KAFKA_SASL_BOOTSTRAP = os.environ.get("KAFKA_SASL_BOOTSTRAP", "127.0.0.1:29094")
KAFKA_SASL_USER = os.environ.get("KAFKA_SASL_USER", "pipeline")
KAFKA_SASL_PASSWORD = os.environ.get("KAFKA_SASL_PASSWORD", "pipeline-secret")
AWS_REGION = os.environ.get("AWS_REGION", "us-east-1")
SERVICES = PI_ROOT / "scripts" / "services.sh"

os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_REGION", AWS_REGION)
os.environ.setdefault("AWS_DEFAULT_REGION", AWS_REGION)


class WaitTimeout(AssertionError):
    pass


# --------------------------------------------------------------------------- generic


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2,
               what: str = "condition") -> Any:
    """Poll predicate() until it returns a truthy value, which is returned.

    Exceptions raised by the predicate count as "not yet"; the last one is reported if
    the deadline passes. Raises WaitTimeout (an AssertionError) on timeout.
    """
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    last_val: Any = None
    while True:
        try:
            last_val = predicate()
            if last_val:
                return last_val
            last_exc = None
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc!r}" if last_exc else f"last value: {last_val!r}"
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {what} ({detail})")
        time.sleep(interval)


def unique_name(prefix: str = "t") -> str:
    """A fresh lowercase name usable as a PG identifier, Kafka topic or Kinesis stream."""
    return f"{prefix}_{int(time.time() * 1000) % 10**9:09d}_{uuid.uuid4().hex[:6]}".lower()


def run_services(action: str, target: str = "all", check: bool = True) -> subprocess.CompletedProcess:
    """Run scripts/services.sh ACTION TARGET, streaming its output to the test log."""
    proc = subprocess.run(["bash", str(SERVICES), action, target], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    if check and proc.returncode != 0:
        raise AssertionError(f"services.sh {action} {target} failed ({proc.returncode}):\n{proc.stdout}")
    return proc


# --------------------------------------------------------------------------- PostgreSQL


def pg_connect(dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection:
    """An autocommit psycopg connection to the test cluster as postgres."""
    params = dict(host=PGHOST, port=PGPORT, user=PGUSER, dbname=dbname, autocommit=True,
                  connect_timeout=10, application_name="pi_e2e")
    params.update(kwargs)
    return psycopg.connect(**params)


def query(dbname: str, sql: str, params: Optional[Iterable[Any]] = None) -> list[tuple]:
    """Run one statement in its own connection; return all rows ([] if none)."""
    with pg_connect(dbname) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def scalar(dbname: str, sql: str, params: Optional[Iterable[Any]] = None) -> Any:
    rows = query(dbname, sql, params)
    return rows[0][0] if rows else None


def create_database(name: str, extension: bool = True) -> None:
    with pg_connect("postgres") as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    if extension:
        with pg_connect(name) as conn:
            conn.execute("CREATE EXTENSION pipeline_ingest")


def drop_database(name: str) -> None:
    with pg_connect("postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_db(name: Optional[str] = None, extension: bool = True) -> Iterator[str]:
    """Create a new database (with CREATE EXTENSION pipeline_ingest); drop it WITH (FORCE) after."""
    name = name or unique_name("pidb")
    create_database(name, extension=extension)
    try:
        yield name
    finally:
        try:
            if pg_is_ready():
                drop_database(name)
        except Exception as exc:  # noqa: BLE001 - do not mask the test's own failure
            print(f"warning: could not drop database {name}: {exc!r}")


def pg_is_ready() -> bool:
    return subprocess.run([f"{PG_BIN}/pg_isready", "-q", "-h", PGHOST, "-p", str(PGPORT), "-U", PGUSER],
                          stdin=subprocess.DEVNULL).returncode == 0


def postmaster_pid() -> Optional[int]:
    try:
        return int((PIPELINE_PGDATA / "postmaster.pid").read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _as_postgres(cmd: list[str]) -> list[str]:
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def pg_stop(mode: str = "fast", timeout: int = 60) -> None:
    """pg_ctl stop -m MODE (smart|fast|immediate) and wait for it."""
    assert mode in ("smart", "fast", "immediate"), mode
    proc = subprocess.run(_as_postgres([f"{PG_BIN}/pg_ctl", "-D", str(PIPELINE_PGDATA), "-m", mode, "-w",
                                        "-t", str(timeout), "stop"]),
                          cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout + 30)
    if proc.returncode != 0:
        raise AssertionError(f"pg_ctl stop -m {mode} failed:\n{proc.stdout}")


def pg_start() -> None:
    """Start the cluster (scripts/services.sh start pg) and wait until it accepts connections."""
    run_services("start", "pg")


def pg_restart(mode: str = "fast") -> None:
    pg_stop(mode)
    pg_start()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill 0; treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], stdout=subprocess.PIPE, text=True).stdout
    return [int(x) for x in out.split()]


def pg_kill9_postmaster(wait_children: float = 30.0) -> int:
    """kill -9 the postmaster (pid from postmaster.pid), simulating a crash.

    Waits until the postmaster and all of its former children (backends, background
    workers) have exited, so that pg_start() can reuse the data directory. Children that
    ignore postmaster death for wait_children seconds are SIGKILLed and reported as an
    assertion error (a worker must notice postmaster death). Returns the killed pid.
    """
    pid = postmaster_pid()
    assert pid and _pid_alive(pid), "postmaster is not running"
    children = _children(pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _pid_alive(pid), timeout=10, what=f"postmaster {pid} to die")
    try:
        wait_until(lambda: not any(_pid_alive(c) for c in children), timeout=wait_children,
                   what="postmaster children to exit after postmaster death")
    except WaitTimeout:
        survivors = [c for c in children if _pid_alive(c)]
        desc = {}
        for c in survivors:
            try:
                desc[c] = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except FileNotFoundError:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.kill(c, signal.SIGKILL)
        raise AssertionError(f"processes survived postmaster death for {wait_children}s: {desc}")
    return pid


def pg_log_path() -> Path:
    return PI_RUN / "pg" / "postgres.log"


# --------------------------------------------------------------------------- Kafka


def log_size() -> int:
    """The server log's size now: pass it to log_since() to read what is logged after this."""
    return pg_log_path().stat().st_size


def log_since(offset: int) -> str:
    """The server log from `offset` (a log_size() value) on."""
    with open(pg_log_path(), "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def kafka_stop() -> None:
    run_services("stop", "kafka")


def kafka_start() -> None:
    run_services("start", "kafka")


_ADMIN = None


def admin_client():
    """A shared AdminClient (it must outlive the futures it returns, so it is cached)."""
    global _ADMIN
    if _ADMIN is None:
        from confluent_kafka.admin import AdminClient
        _ADMIN = AdminClient({"bootstrap.servers": KAFKA_BOOTSTRAP, "socket.timeout.ms": 10000,
                              "reconnect.backoff.max.ms": 1000})
    return _ADMIN


def topic_partitions(name: str) -> int:
    md = admin_client().list_topics(topic=name, timeout=10)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return 0
    return len([p for p in t.partitions.values() if p.leader >= 0])


def create_topic(name: str, partitions: int = 1, timeout: float = 30.0, config: Optional[dict] = None) -> None:
    from confluent_kafka.admin import NewTopic
    fut = admin_client().create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                                 config=config or {})],
                                       operation_timeout=timeout, request_timeout=timeout)
    fut[name].result(timeout=timeout)
    wait_until(lambda: topic_partitions(name) == partitions, timeout=timeout,
               what=f"topic {name} to have {partitions} partitions with leaders")


def delete_topic(name: str, timeout: float = 30.0) -> None:
    fut = admin_client().delete_topics([name], operation_timeout=timeout, request_timeout=timeout)
    fut[name].result(timeout=timeout)
    wait_until(lambda: name not in admin_client().list_topics(timeout=10).topics, timeout=timeout,
               what=f"topic {name} to disappear")


def add_partitions(name: str, total: int, timeout: float = 30.0) -> None:
    from confluent_kafka.admin import NewPartitions
    fut = admin_client().create_partitions([NewPartitions(name, total)], operation_timeout=timeout,
                                           request_timeout=timeout)
    fut[name].result(timeout=timeout)
    wait_until(lambda: topic_partitions(name) == total, timeout=timeout,
               what=f"topic {name} to have {total} partitions")


def _b(v: Any) -> Optional[bytes]:
    if v is None or isinstance(v, bytes):
        return v
    return str(v).encode()


def produce(topic: str, values: Iterable[Any], key: Any = None, partition: Optional[int] = None,
            headers: Optional[list] = None, timeout: float = 30.0) -> list[tuple[int, int]]:
    """Produce values (str/bytes/None) to topic, flush, assert every delivery succeeded.

    Returns [(partition, offset), ...] in production order.
    """
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": KAFKA_BOOTSTRAP, "acks": "all", "enable.idempotence": True,
                  "message.timeout.ms": int(timeout * 1000), "linger.ms": 5})
    values = list(values)
    results: list[Any] = [None] * len(values)

    def cb(idx):
        def _cb(err, msg):
            results[idx] = err if err is not None else (msg.partition(), msg.offset())
        return _cb

    for i, v in enumerate(values):
        kw = dict(value=_b(v), key=_b(key), on_delivery=cb(i))
        if partition is not None:
            kw["partition"] = partition
        if headers is not None:
            kw["headers"] = headers
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(timeout)
    assert remaining == 0, f"{remaining} messages still undelivered to {topic} after {timeout}s"
    errors = [r for r in results if not isinstance(r, tuple)]
    assert not errors, f"delivery to {topic} failed: {errors[:5]}"
    return results


def consume_all(topic: str, timeout: float = 30.0, min_messages: int = 0) -> list[dict]:
    """Read every message currently in topic (all partitions, from the beginning).

    Reads up to each partition's high watermark as of the call (re-checked until at least
    min_messages are in the topic). Returns dicts with partition, offset, key, value
    (bytes), headers, timestamp, sorted by (partition, offset).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    deadline = time.monotonic() + timeout
    c = Consumer({"bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": unique_name("pi_e2e_reader"),
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed", "enable.partition.eof": False})
    try:
        parts = wait_until(lambda: topic_partitions(topic), timeout=max(1.0, deadline - time.monotonic()),
                           what=f"topic {topic} metadata")

        def highs() -> dict[int, int]:
            return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(parts)}

        high = wait_until(lambda: (lambda h: h if sum(h.values()) >= min_messages else None)(highs()),
                          timeout=max(1.0, deadline - time.monotonic()),
                          what=f"{min_messages} messages in {topic}")
        pending = {p for p, h in high.items() if h > 0}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])
        out: list[dict] = []
        while pending:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"consume_all({topic}): partitions {sorted(pending)} not read to "
                                  f"high watermarks {high} within {timeout}s (got {len(out)} messages)")
            m = c.poll(0.5)
            if m is None:
                # transactional markers occupy offsets: check positions too
                for tp in c.position([TopicPartition(topic, p) for p in list(pending)]):
                    if tp.offset >= high[tp.partition]:
                        pending.discard(tp.partition)
                continue
            if m.error():
                raise AssertionError(f"consume error on {topic}: {m.error()}")
            if m.offset() < high.get(m.partition(), 0):
                out.append(dict(partition=m.partition(), offset=m.offset(), key=m.key(), value=m.value(),
                                headers=m.headers(), timestamp=m.timestamp()[1]))
            if m.offset() + 1 >= high.get(m.partition(), 0):
                pending.discard(m.partition())
        return sorted(out, key=lambda d: (d["partition"], d["offset"]))
    finally:
        c.close()


# --------------------------------------------------------------------------- Kinesis


def kinesis_client():
    import boto3
    from botocore.config import Config
    return boto3.client("kinesis", endpoint_url=KINESIS_ENDPOINT, region_name=AWS_REGION,
                        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                        config=Config(connect_timeout=5, read_timeout=15,
                                      retries={"max_attempts": 3, "mode": "standard"}))


def kinesis_create_stream(name: str, shards: int = 1, timeout: float = 30.0) -> list[str]:
    """Create a stream, wait until ACTIVE; return its shard ids (sorted)."""
    k = kinesis_client()
    k.create_stream(StreamName=name, ShardCount=shards)
    wait_until(lambda: k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
               == "ACTIVE", timeout=timeout, what=f"stream {name} ACTIVE")
    return sorted(s["ShardId"] for s in k.list_shards(StreamName=name)["Shards"])


def kinesis_delete_stream(name: str) -> None:
    with contextlib.suppress(Exception):
        kinesis_client().delete_stream(StreamName=name)


def kinesis_read_shard(name: str, shard_id: str, timeout: float = 10.0) -> list[dict]:
    """All records currently in one shard, from TRIM_HORIZON."""
    k = kinesis_client()
    it = k.get_shard_iterator(StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    out: list[dict] = []
    deadline = time.monotonic() + timeout
    while it and time.monotonic() < deadline:
        r = k.get_records(ShardIterator=it, Limit=1000)
        out.extend(r["Records"])
        if not r["Records"] and r.get("MillisBehindLatest", 0) == 0:
            break
        it = r.get("NextShardIterator")
    return out


def kinesis_read_all(name: str, timeout: float = 10.0) -> dict[str, list[dict]]:
    k = kinesis_client()
    shards = [s["ShardId"] for s in k.list_shards(StreamName=name)["Shards"]]
    return {s: kinesis_read_shard(name, s, timeout) for s in shards}


# --------------------------------------------------------------------------- Kafka message counts


def watermark_consumer():
    """A Kafka consumer used only to read watermarks (reuse it when polling often)."""
    from confluent_kafka import Consumer
    return Consumer({"bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": unique_name("pi_e2e_counter"),
                     "enable.auto.commit": False})


def topic_message_count(topic: str, consumer: Any = None) -> int:
    """Messages currently in topic: the sum over its partitions of high - low watermark.

    Cheap (no message is read); exact for topics written without transactions."""
    from confluent_kafka import TopicPartition
    own = consumer is None
    c = watermark_consumer() if own else consumer
    try:
        total = 0
        for p in range(topic_partitions(topic)):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        if own:
            c.close()


def wait_topic_count(topic: str, n: int, timeout: float = 60.0, interval: float = 0.05) -> int:
    """Poll the watermarks of topic until it holds at least n (>= 1) messages; return the count."""
    assert n >= 1, n
    c = watermark_consumer()
    try:
        return wait_until(lambda: (lambda k: k if k >= n else None)(topic_message_count(topic, c)),
                          timeout=timeout, interval=interval, what=f"{n} messages in topic {topic}")
    finally:
        c.close()


def high_watermarks(topic: str, timeout: float = 10.0) -> dict[int, int]:
    """{partition: high watermark (the next offset to be written)} for every partition of topic."""
    from confluent_kafka import Consumer, TopicPartition
    parts = wait_until(lambda: topic_partitions(topic), timeout=timeout, what=f"topic {topic} metadata")
    c = Consumer({"bootstrap.servers": KAFKA_BOOTSTRAP, "group.id": unique_name("pi_e2e_wm"),
                  "enable.auto.commit": False})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in range(parts)}
    finally:
        c.close()


def pg_kill9_all(wait: float = 30.0) -> list[int]:
    """Simulate a machine crash: freeze the postmaster and every one of its children (SIGSTOP,
    postmaster first so it forks nothing new), then SIGKILL them all, so that no process gets to
    run another instruction (unlike pg_kill9_postmaster, after which children keep running until
    they notice the postmaster's death). Waits until all are gone; returns the killed pids."""
    pid = postmaster_pid()
    assert pid and _pid_alive(pid), "postmaster is not running"
    os.kill(pid, signal.SIGSTOP)
    pids = [pid] + _children(pid)
    for p in pids[1:]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGSTOP)
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    wait_until(lambda: not any(_pid_alive(p) for p in pids), timeout=wait, what="killed PostgreSQL processes to exit")
    return pids
