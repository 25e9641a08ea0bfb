"""Helpers for the pipeline_ingest end-to-end tests.

Every wait here is bounded and polls (wait_until); nothing sleeps blindly.
Connection settings come from the environment exported by scripts/env.sh, with the
same defaults, so the helpers also work when pytest is started by hand.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import psycopg
import psycopg.rows

PI_ROOT = Path(os.environ.get("PI_ROOT") or Path(__file__).resolve().parents[2])
PI_RUN = Path(os.environ.get("PI_RUN") or PI_ROOT / ".run")
PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
PGHOST = os.environ.get("PGHOST", "127.0.0.1")
PGPORT = int(os.environ.get("PGPORT", "28815"))
PGUSER = "postgres"
# The PostgreSQL major version the tests run against (scripts/env.sh: PG_VERSION, 15 or 18).
PG_VERSION = int(os.environ.get("PG_VERSION", "15"))
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


# --------------------------------------------------------------------------- schema registry
# Apicurio Registry (scripts/services.sh's `registry`), its Confluent-compatible API. Tests that
# need it take the `schema_registry` fixture (conftest.py), which starts it when it is not running.
SCHEMA_REGISTRY_URL = os.environ.get(
    "SCHEMA_REGISTRY_URL",
    f"http://127.0.0.1:{28840 + 100 * int(os.environ.get('PI_INSTANCE', '0'))}/apis/ccompat/v7")
_REGISTRY_CT = "application/vnd.schemaregistry.v1+json"


def registry_request(method: str, path: str, body: Any = None, url: Optional[str] = None,
                     headers: Optional[dict] = None, timeout: float = 10.0) -> tuple[int, Any]:
    """(HTTP status, parsed JSON or None) of one request to the registry's ccompat API."""
    import json
    import urllib.error
    import urllib.request
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request((url or SCHEMA_REGISTRY_URL) + path, data=data, method=method,
                                 headers={"Accept": _REGISTRY_CT, "Content-Type": _REGISTRY_CT, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def registry_is_up(url: Optional[str] = None) -> bool:
    try:
        return registry_request("GET", "/subjects", url=url, timeout=2)[0] == 200
    except OSError:
        return False


def register_schema(subject: str, schema: Any, schema_type: str = "AVRO",
                    references: Optional[list[dict]] = None, url: Optional[str] = None) -> int:
    """Registers `schema` (text, or a dict/list dumped as JSON) under `subject`; returns its id.
    references: [{"name": "dep.proto", "subject": "dep", "version": 1}, ...]."""
    import json
    body: dict[str, Any] = {"schema": schema if isinstance(schema, str) else json.dumps(schema)}
    if schema_type.upper() != "AVRO":
        body["schemaType"] = schema_type.upper()
    if references:
        body["references"] = references
    status, answer = registry_request("POST", f"/subjects/{subject}/versions", body, url=url)
    assert status == 200 and isinstance(answer, dict) and "id" in answer, \
        f"registering under {subject}: HTTP {status} {answer}"
    return int(answer["id"])


def confluent_frame(schema_id: int, body: bytes) -> bytes:
    """The Confluent wire format: magic byte 0, the 4-byte big-endian schema id, the body."""
    return b"\x00" + schema_id.to_bytes(4, "big") + body


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


def alter_system(name: str, value: Any) -> None:
    """ALTER SYSTEM SET name = value (None: RESET) and reload the configuration."""
    with pg_connect() as conn:
        if value is None:
            conn.execute(f"ALTER SYSTEM RESET {name}")
        else:
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        conn.execute("SELECT pg_reload_conf()")


@contextlib.contextmanager
def server_setting(name: str, value: Any, shown: str) -> Iterator[None]:
    """`name` = `value` in the server's configuration (reloaded; a new session shows `shown`) while
    the block runs; reset after."""
    alter_system(name, value)
    try:
        wait_until(lambda: scalar("postgres", f"SHOW {name}") == shown, timeout=10, interval=0.05,
                   what=f"{name} = {shown} after reload")
        yield
    finally:
        alter_system(name, None)


@contextlib.contextmanager
def launcher_naptime(seconds: int) -> Iterator[None]:
    """pipeline_ingest.launcher_naptime = `seconds` (reloaded) while the block runs, so a new
    database's supervisor (and its producer after a crash restart) starts within a second or two
    instead of up to 10 s; reset after."""
    with server_setting("pipeline_ingest.launcher_naptime", int(seconds), f"{int(seconds)}s"):
        yield


def producer_pids(db: str) -> list[int]:
    """The pids of the database's producer worker (none or one)."""
    return [r[0] for r in query(db, "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pipeline_kafka producer' "
                                    "AND datname = current_database()")]


# The server log's size when each fresh_db was made: where a failed wait's diagnostics start reading.
_DB_LOG_MARKS: dict[str, int] = {}


@contextlib.contextmanager
def fresh_db(name: Optional[str] = None, extension: bool = True) -> Iterator[str]:
    """Create a new database (with CREATE EXTENSION pipeline_ingest); drop it WITH (FORCE) after."""
    name = name or unique_name("pidb")
    try:
        _DB_LOG_MARKS[name] = log_size()
    except FileNotFoundError:
        pass
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
    # services.sh keeps the log beside the data dir ($PI_RUN/pg for 15, $PI_RUN/pg18 for 18).
    return PIPELINE_PGDATA.parent / "postgres.log"


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
    _wait_partitions_serving(name, range(partitions), timeout)


def _wait_partitions_serving(name: str, partitions: Iterable[int], timeout: float) -> None:
    """Wait until the broker answers a watermark request for each partition.

    The metadata names a leader a moment before that broker serves the partition: a request in
    between fails with NOT_LEADER_FOR_PARTITION (seen in CI right after create_topic)."""
    from confluent_kafka import TopicPartition
    c = watermark_consumer()
    try:
        for p in partitions:
            # wait_until counts the KafkaException of a partition not served yet as "not yet"
            wait_until(lambda p=p: c.get_watermark_offsets(TopicPartition(name, p), timeout=5) is not None,
                       timeout=timeout, interval=0.05, what=f"partition {p} of topic {name} to be served")
    finally:
        c.close()


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
    _wait_partitions_serving(name, range(total), timeout)


def _b(v: Any) -> Optional[bytes]:
    if v is None or isinstance(v, bytes):
        return v
    return str(v).encode()


def produce(topic: str, values: Iterable[Any], key: Any = None, partition: Optional[int] = None,
            headers: Optional[list] = None, timeout: float = 30.0, keys: Optional[list] = None) -> list[tuple[int, int]]:
    """Produce values (str/bytes/None) to topic, flush, assert every delivery succeeded. `key`
    is every message's key; `keys` (instead) one key per value.

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
        kw = dict(value=_b(v), key=_b(keys[i] if keys is not None else key), on_delivery=cb(i))
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


# --------------------------------------------------------------------------- Kinesis: records, resharding


def kinesis_wait_active(name: str, timeout: float = 30.0, client: Any = None) -> None:
    """Wait until the stream is ACTIVE (after create, split, merge); `client` for a kinesalite of a
    test's own (the shared one by default)."""
    k = client or kinesis_client()
    wait_until(lambda: k.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
               == "ACTIVE", timeout=timeout, what=f"stream {name} ACTIVE")


def kinesis_put_records(name: str, records: Iterable[tuple], batch: int = 500,
                        client: Any = None) -> list[tuple[str, str]]:
    """Put records with PutRecords, `batch` (<= 500) at a time, in the given order.

    Each record is (partition_key, data) or (partition_key, data, explicit_hash_key); data is
    bytes or str. Returns [(shard_id, sequence_number), ...] in the same order. A record the
    service refuses (FailedRecordCount) is an assertion error, not retried: a retry would put it
    after its successors and break the per-key order the tests check (kinesalite never refuses).
    """
    k = client or kinesis_client()
    out: list[tuple[str, str]] = []
    chunk: list[dict] = []

    def flush() -> None:
        if not chunk:
            return
        r = k.put_records(StreamName=name, Records=chunk)
        failed = [x for x in r["Records"] if "ErrorCode" in x]
        assert not r.get("FailedRecordCount") and not failed, f"PutRecords to {name} refused: {failed[:3]}"
        out.extend((x["ShardId"], x["SequenceNumber"]) for x in r["Records"])
        chunk.clear()

    for rec in records:
        pk, data = rec[0], rec[1]
        entry = {"PartitionKey": pk, "Data": data if isinstance(data, bytes) else str(data).encode()}
        if len(rec) > 2 and rec[2] is not None:
            entry["ExplicitHashKey"] = str(rec[2])
        chunk.append(entry)
        if len(chunk) >= batch:
            flush()
    flush()
    return out


def kinesis_shards(name: str, client: Any = None) -> list[dict]:
    """Every shard of the stream, open and closed, with its lineage (ListShards, paginated).

    Dicts: shard_id, parent (or None), adjacent_parent (or None), start_hash, end_hash (ints),
    closed (an ending sequence number is set), sorted by shard id."""
    k = client or kinesis_client()
    shards: list[dict] = []
    r = k.list_shards(StreamName=name)
    while True:
        for s in r["Shards"]:
            shards.append(dict(
                shard_id=s["ShardId"], parent=s.get("ParentShardId"),
                adjacent_parent=s.get("AdjacentParentShardId"),
                start_hash=int(s["HashKeyRange"]["StartingHashKey"]),
                end_hash=int(s["HashKeyRange"]["EndingHashKey"]),
                closed=s["SequenceNumberRange"].get("EndingSequenceNumber") is not None))
        token = r.get("NextToken")
        if not token:
            break
        r = k.list_shards(NextToken=token)
    return sorted(shards, key=lambda s: s["shard_id"])


def kinesis_split_shard(name: str, shard_id: str, timeout: float = 30.0) -> list[str]:
    """Split an open shard at the midpoint of its hash-key range; wait until the stream is ACTIVE
    again. Returns the two children's shard ids (lower half first)."""
    k = kinesis_client()
    shard = next(s for s in kinesis_shards(name, k) if s["shard_id"] == shard_id)
    assert not shard["closed"], f"shard {shard_id} of {name} is already closed"
    mid = (shard["start_hash"] + shard["end_hash"] + 1) // 2
    k.split_shard(StreamName=name, ShardToSplit=shard_id, NewStartingHashKey=str(mid))
    kinesis_wait_active(name, timeout)
    children = sorted((s for s in kinesis_shards(name, k) if s["parent"] == shard_id and s["adjacent_parent"] is None),
                      key=lambda s: s["start_hash"])
    assert len(children) == 2, f"split of {shard_id} made {children}"
    return [c["shard_id"] for c in children]


def kinesis_merge_shards(name: str, shard_id: str, adjacent_shard_id: str, timeout: float = 30.0) -> str:
    """Merge two open shards with adjacent hash-key ranges; wait until the stream is ACTIVE again.
    Returns the child's shard id."""
    k = kinesis_client()
    k.merge_shards(StreamName=name, ShardToMerge=shard_id, AdjacentShardToMerge=adjacent_shard_id)
    kinesis_wait_active(name, timeout)
    children = [s for s in kinesis_shards(name, k)
                if {s["parent"], s["adjacent_parent"]} == {shard_id, adjacent_shard_id}]
    assert len(children) == 1, f"merge of {shard_id} and {adjacent_shard_id} made {children}"
    return children[0]["shard_id"]


def shard_status_key(shard_id: str) -> int:
    """The number at the end of a shard id (shardId-000000000003 -> 3), as the worker publishes it."""
    n = int(shard_id.rsplit("-", 1)[1])
    return n if n < 2**31 else -1


# --------------------------------------------------------------------------- Kinesis: KPL aggregates

KPL_MAGIC = b"\xf3\x89\x9a\xc2"


def _pb_varint(v: int) -> bytes:
    assert v >= 0, v
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_bytes(field: int, b: bytes) -> bytes:
    return _pb_varint(field << 3 | 2) + _pb_varint(len(b)) + b


def _pb_uint(field: int, v: int) -> bytes:
    return _pb_varint(field << 3 | 0) + _pb_varint(v)


def kpl_aggregate(records: Iterable[tuple], corrupt_md5: bool = False) -> bytes:
    """A KPL aggregated record holding `records`, built by hand (no protobuf library).

    Each record is (partition_key, data) or (partition_key, data, explicit_hash_key). Layout:
    magic F3 89 9A C2, protobuf AggregatedRecord {1: repeated string partition_key_table,
    2: repeated string explicit_hash_key_table, 3: repeated Record {1: uint64
    partition_key_index, 2: uint64 explicit_hash_key_index (optional), 3: bytes data}}, then the
    16-byte MD5 of the protobuf bytes. Keys are stored once each in their table, in first-use
    order, as the KPL does. corrupt_md5 flips a bit of the digest (the record is then plain)."""
    pk_index: dict[str, int] = {}
    ehk_index: dict[str, int] = {}
    recs = []
    for rec in records:
        pk, data = rec[0], rec[1]
        ehk = rec[2] if len(rec) > 2 else None
        data = data if isinstance(data, bytes) else str(data).encode()
        body = _pb_uint(1, pk_index.setdefault(pk, len(pk_index)))
        if ehk is not None:
            body += _pb_uint(2, ehk_index.setdefault(str(ehk), len(ehk_index)))
        body += _pb_bytes(3, data)
        recs.append(body)
    msg = b"".join(_pb_bytes(1, k.encode()) for k in pk_index)
    msg += b"".join(_pb_bytes(2, k.encode()) for k in ehk_index)
    msg += b"".join(_pb_bytes(3, r) for r in recs)
    digest = bytearray(hashlib.md5(msg).digest())
    if corrupt_md5:
        digest[-1] ^= 1
    return KPL_MAGIC + msg + bytes(digest)


def kinesis_hash_key(partition_key: str) -> int:
    """The 128-bit hash key Kinesis derives from a partition key (MD5, big-endian)."""
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


# --------------------------------------------------------------------------- Kinesis: own kinesalite


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral
    range (32768+): a test that stops its server and starts it again on the same port must not
    find it taken meanwhile by an outgoing connection of a test running beside it. Chosen at
    random in 10000..19999 (the stacks' own ports are 24567.. and 28815..)."""
    import random
    import socket
    for _ in range(200):
        port = random.randint(10000, 19999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port in 10000..19999")


class Kinesalite:
    """A private kinesalite on a free port of 127.0.0.1 with a LevelDB store (--path), so that it
    can be stopped and started again on the same port with the same streams and records, without
    touching the shared one that scripts/services.sh runs for the other tests. Use as a context
    manager: the process is always stopped at exit."""

    def __init__(self, path: Path, port: Optional[int] = None):
        self.path = Path(path)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.path.parent / f"kinesalite-{self.port}.log"
        self.proc: Optional[subprocess.Popen] = None

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client("kinesis", endpoint_url=self.url, region_name=AWS_REGION,
                            aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                            config=Config(connect_timeout=5, read_timeout=15,
                                          retries={"max_attempts": 3, "mode": "standard"}))

    def _ready(self) -> bool:
        return subprocess.run(["node", str(PI_ROOT / "tests" / "kinesis" / "kinesalite.js"), "--probe",
                               str(self.port), "127.0.0.1"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10).returncode == 0

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["node", str(PI_ROOT / "tests" / "kinesis" / "kinesalite.js"), "--path", str(self.path),
                 str(self.port), "127.0.0.1"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, \
                f"kinesalite exited: {self.log.read_text(errors='replace')[-2000:]}"
            return self._ready()

        wait_until(up, timeout=timeout, what=f"kinesalite on port {self.port}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (kinesalite closes its store, then exits), SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "Kinesalite":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------- Kinesis consumers (SQL side)

def kinesis_add_endpoint(db: str, name: str = "local", url: Optional[str] = None) -> str:
    """pipeline_kinesis.add_endpoint(name, region, NULL, url); url defaults to KINESIS_ENDPOINT."""
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kinesis.add_endpoint(%s, %s, NULL, %s)",
                     [name, AWS_REGION, url or KINESIS_ENDPOINT])
    return name


def kinesis_consume_begin(conn: psycopg.Connection, endpoint: str, stream: str, relation: str, **kw: Any) -> int:
    """SELECT pipeline_kinesis.consume_begin(endpoint, stream, relation, name := value, ...) -> id."""
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kinesis.consume_begin(%s, %s, %s{args})",
                        [endpoint, stream, relation] + [kw[n] for n in names]).fetchone()[0]


def kinesis_status(db: str, consumer_id: Optional[int] = None) -> list[dict]:
    """Rows of pipeline_kinesis.consumer_status (of one consumer), as dicts, by shard id."""
    with pg_connect(db) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        if consumer_id is None:
            cur.execute("SELECT * FROM pipeline_kinesis.consumer_status ORDER BY consumer_id, shard_id")
        else:
            cur.execute("SELECT * FROM pipeline_kinesis.consumer_status WHERE consumer_id = %s "
                        "ORDER BY shard_id", [consumer_id])
        return cur.fetchall()


def kinesis_seqnums(db: str, consumer_id: int) -> dict[str, tuple]:
    """{shard_id: (seqnum, sub_sequence, finished)} from pipeline_kinesis.seqnums."""
    return {r[0]: r[1:] for r in query(db, "SELECT shard_id, seqnum, sub_sequence, finished "
                                           "FROM pipeline_kinesis.seqnums WHERE consumer_id = %s", [consumer_id])}


def pipeline_diag(db: str, log_mark: Optional[int] = None, limit: int = 6000) -> str:
    """What the consumers of db say (Kafka's and Kinesis's catalog and status, only the sources that
    have consumers) and the pipeline lines of the server log since log_mark (default: since db was
    made by fresh_db): for assertion messages."""
    parts = []
    checks = [
        ("kafka consumers", "SELECT id, topic, relname, format, parallelism, enabled, generation, "
                            "last_error FROM pipeline_kafka.consumers ORDER BY id"),
        ("kafka offsets", "SELECT * FROM pipeline_kafka.offsets ORDER BY 1, 2"),
        ("kafka status", "SELECT * FROM pipeline_kafka.consumer_status ORDER BY 1"),
        ("kafka dead letters", "SELECT consumer_id, partition, \"offset\", sqlstate, error "
                               "FROM pipeline_kafka.dead_letters ORDER BY 1, 2, 3 LIMIT 10"),
        ("kinesis consumers", "SELECT id, stream, relation::text, enabled, generation, start_time, last_error "
                              "FROM pipeline_kinesis.consumers ORDER BY id"),
        ("kinesis seqnums", "SELECT consumer_id, shard_id, seqnum, sub_sequence, finished, parents, closed "
                            "FROM pipeline_kinesis.seqnums ORDER BY 1, 2"),
        ("kinesis status", "SELECT consumer_id, shard_id, state, shard_state, worker_pid, records, rows, "
                           "dead_letters, last_error FROM pipeline_kinesis.consumer_status ORDER BY 1, shard_id"),
    ]
    for what, sql in checks:
        try:
            rows = query(db, sql)
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            parts.append(f"{what}: {exc!r}")
            continue
        if rows:
            parts.append(f"{what}: {rows}")
    if log_mark is None:
        log_mark = _DB_LOG_MARKS.get(db)
    if log_mark is not None:
        try:
            text = log_since(log_mark)
        except FileNotFoundError:
            text = ""
        lines = [ln for ln in text.splitlines() if "pipeline" in ln or "ERROR" in ln or "FATAL" in ln
                 or "PANIC" in ln or "WARNING" in ln]
        parts.append("postgres.log since the test began:\n" + "\n".join(lines)[-limit:])
    return "\n" + "\n".join(parts)


def wait_table_rows(db: str, table: str, n: int, timeout: float = 60.0, log_mark: Optional[int] = None,
                    interval: float = 0.2) -> None:
    """Wait until `table` holds at least n rows, then assert it holds exactly n."""
    try:
        wait_until(lambda: scalar(db, f"SELECT count(*) FROM {table}") >= n, timeout=timeout,
                   interval=interval, what=f"{n} rows in {table}")
    except WaitTimeout as exc:
        got = scalar(db, f"SELECT count(*) FROM {table}")
        raise AssertionError(f"{exc}; has {got} rows{pipeline_diag(db, log_mark)}") from None
    got = scalar(db, f"SELECT count(*) FROM {table}")
    assert got == n, f"{table} has {got} rows, expected exactly {n}{pipeline_diag(db, log_mark)}"


class RegistryProxy:
    """A forwarding HTTP proxy in front of the stack's registry, stopped and started again on the
    same port within milliseconds: an outage without restarting Apicurio (slow on a loaded
    machine, and shared by the session's other tests)."""

    def __init__(self, target: str):
        import urllib.parse
        self.target = target
        self.port = None
        self.server = None
        self.prefix = urllib.parse.urlsplit(target).path

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def start(self) -> None:
        import http.server
        import threading
        import urllib.error
        import urllib.request
        origin = self.target[: -len(self.prefix)] if self.prefix else self.target

        class Forward(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                req = urllib.request.Request(origin + self.path, data=body, method=self.command, headers=headers)
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        status, data, ctype = r.status, r.read(), r.headers.get("Content-Type")
                except urllib.error.HTTPError as e:
                    status, data, ctype = e.code, e.read(), e.headers.get("Content-Type")
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = forward

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port or 0), Forward)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
