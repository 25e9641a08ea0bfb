"""pytest configuration for the pipeline_ingest e2e tier.

Services: a session fixture runs `scripts/services.sh start all` before the first test and
`scripts/services.sh stop all` after the last one (also on failure), unless
PI_SERVICES_MANAGED=1 says the caller (scripts/test.sh) manages them.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pihelpers  # noqa: E402


# ---------------------------------------------------------------------------------------------
# Shards: `--shard I/N` (or PI_E2E_SHARD=I/N) runs the I-th of N disjoint parts of the suite, whole
# files each, balanced by the seconds each file took (durations.txt, refreshed from a full run's
# `--durations=0`; a file missing there counts DEFAULT_FILE_SECONDS). scripts/test.sh runs the
# parts side by side, each against a stack of its own (PI_INSTANCE: own PostgreSQL cluster, Kafka
# broker and kinesalite), so a test that stops a broker or restarts its cluster disturbs no other.
DURATIONS = Path(__file__).resolve().parent / "durations.txt"
DEFAULT_FILE_SECONDS = 30.0


def pytest_addoption(parser):
    parser.addoption("--shard", default=os.environ.get("PI_E2E_SHARD", ""),
                     help="I/N: run the I-th (0-based) of N parts of the suite (whole files, balanced by durations.txt)")


def _file_seconds() -> dict[str, float]:
    out: dict[str, float] = {}
    if DURATIONS.exists():
        for line in DURATIONS.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and not line.startswith("#"):
                out[parts[0]] = float(parts[1])
    return out


def shard_of_files(files: list[str], shards: int) -> dict[str, int]:
    """Longest first, each file to the part with the least seconds so far (ties: lowest index)."""
    seconds = _file_seconds()
    load = [0.0] * shards
    placed: dict[str, int] = {}
    for f in sorted(files, key=lambda f: (-seconds.get(f, DEFAULT_FILE_SECONDS), f)):
        i = min(range(shards), key=lambda k: (load[k], k))
        placed[f] = i
        load[i] += seconds.get(f, DEFAULT_FILE_SECONDS)
    return placed


def pytest_collection_modifyitems(config, items):
    spec = config.getoption("--shard")
    if not spec:
        return
    index, total = (int(x) for x in spec.split("/"))
    if not 0 <= index < total:
        raise pytest.UsageError(f"--shard {spec}: I must be in 0..N-1")
    files = sorted({Path(str(item.fspath)).name for item in items})
    placed = shard_of_files(files, total)
    keep = [item for item in items if placed[Path(str(item.fspath)).name] == index]
    dropped = [item for item in items if placed[Path(str(item.fspath)).name] != index]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def services():
    managed = os.environ.get("PI_SERVICES_MANAGED") == "1"
    if not managed:
        pihelpers.run_services("start", "all")
    try:
        yield
    finally:
        if not managed:
            proc = pihelpers.run_services("stop", "all", check=False)
            if proc.returncode != 0:
                print(proc.stdout, file=sys.stderr)


@pytest.fixture(scope="session")
def schema_registry():
    """The test stack's Apicurio Registry URL (…/apis/ccompat/v7). Started here when it is not
    running (scripts/test.sh does not start it for every part) and then stopped at the end."""
    started = False
    if not pihelpers.registry_is_up():
        pihelpers.run_services("start", "registry")
        started = True
    _registry_in_use.append(True)
    try:
        yield pihelpers.SCHEMA_REGISTRY_URL
    finally:
        _registry_in_use.clear()
        if started:
            pihelpers.run_services("stop", "registry", check=False)


# Set while the schema_registry fixture is alive: restore_services then restarts a registry a test
# stopped (an outage test), as it does the other services.
_registry_in_use: list[bool] = []


def _port_open(hostport: str) -> bool:
    import socket
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(autouse=True)
def restore_services():
    """After each test, restart any service a test stopped or crashed (outage/crash tests),
    so one failing outage test does not cascade into the following ones."""
    yield
    down = []
    if not pihelpers.pg_is_ready():
        down.append("pg")
    if not _port_open(pihelpers.KAFKA_BOOTSTRAP):
        down.append("kafka")
    if not _port_open(pihelpers.KINESIS_ENDPOINT.split("//", 1)[1]):
        down.append("kinesis")
    if _registry_in_use and not pihelpers.registry_is_up():
        down.append("registry")
    for s in down:
        pihelpers.run_services("start", s)


@pytest.fixture
def fresh_db():
    """Name of a new database with the extension created; dropped WITH (FORCE) afterwards."""
    with pihelpers.fresh_db() as name:
        yield name


@pytest.fixture
def roles(fresh_db):
    """make(prefix) -> a new LOGIN role (attacks run as roles that connect by themselves; the
    cluster uses trust auth). Afterwards every consumer of fresh_db is dropped (stopping its workers
    before their roles go), then each role with what it owns."""
    made: list[str] = []

    def make(prefix: str = "pi_sec") -> str:
        name = pihelpers.unique_name(prefix)
        with pihelpers.pg_connect(fresh_db) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN")
        made.append(name)
        return name

    yield make
    with pihelpers.pg_connect(fresh_db) as conn:
        try:
            for topic, relname in conn.execute("SELECT topic, relname FROM pipeline_kafka.consumers").fetchall():
                if relname is None:
                    conn.execute("SELECT pipeline_kafka.consume_drop_stream_partitioned(%s)", (topic,))
                else:
                    conn.execute("SELECT pipeline_kafka.consume_drop(%s, %s)", (topic, relname))
            for c in conn.execute("SELECT endpoint, stream, relname FROM pipeline_kinesis.consumers").fetchall():
                conn.execute("SELECT pipeline_kinesis.consume_drop(%s, %s, %s)", c)
            # The workers are told to stop at the drop's commit; one still exiting drops its temporary
            # (staging) tables while DROP OWNED does ("tuple concurrently deleted"): wait for them.
            pihelpers.wait_until(lambda: conn.execute(
                "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = current_database() "
                "AND backend_type IN ('pipeline_kafka consumer', 'pipeline_kinesis consumer')").fetchone()[0] == 0,
                timeout=30, interval=0.05, what="the consumers' workers to exit")
        finally:
            for name in made:
                conn.execute(f"DROP OWNED BY {name} CASCADE")
                conn.execute(f"DROP ROLE {name}")


@pytest.fixture
def pg_role():
    """create() -> a new NOLOGIN role that is not a superuser; dropped at teardown. Request it
    BEFORE fresh_db so the database (holding the role's objects and privileges) is dropped first."""
    roles: list[str] = []

    def create() -> str:
        name = pihelpers.unique_name("pi_role")
        with pihelpers.pg_connect("postgres") as conn:
            conn.execute(f'CREATE ROLE "{name}" NOLOGIN')
        roles.append(name)
        return name

    yield create
    for name in roles:
        try:
            with pihelpers.pg_connect("postgres") as conn:
                conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        except Exception as exc:  # noqa: BLE001 - do not mask the test's own failure
            print(f"warning: could not drop role {name}: {exc!r}", file=sys.stderr)


@pytest.fixture
def topic_factory():
    """create(partitions=1) -> new unique topic; all deleted afterwards."""
    created: list[str] = []

    def create(partitions: int = 1, prefix: str = "pi_topic") -> str:
        name = pihelpers.unique_name(prefix)
        pihelpers.create_topic(name, partitions)
        created.append(name)
        return name

    yield create
    for name in created:
        try:
            pihelpers.delete_topic(name)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: could not delete topic {name}: {exc!r}", file=sys.stderr)


@pytest.fixture
def stream_factory():
    """create(shards=1) -> (stream name, shard ids); all deleted afterwards."""
    created: list[str] = []

    def create(shards: int = 1, prefix: str = "pi_stream"):
        name = pihelpers.unique_name(prefix)
        shard_ids = pihelpers.kinesis_create_stream(name, shards)
        created.append(name)
        return name, shard_ids

    yield create
    for name in created:
        pihelpers.kinesis_delete_stream(name)


@pytest.fixture
def own_kinesalite(tmp_path):
    """A private kinesalite (pihelpers.Kinesalite) on a free port with its store in tmp_path, for
    tests that stop and restart it; always stopped, and its store removed, at teardown."""
    import shutil
    k = pihelpers.Kinesalite(tmp_path / "kinesalite-db")
    k.start()
    try:
        yield k
    finally:
        k.stop()
        shutil.rmtree(k.path, ignore_errors=True)


@pytest.fixture
def log_mark():
    """The server log's size when the test began (for pihelpers.pipeline_diag / log_since)."""
    try:
        return pihelpers.log_size()
    except FileNotFoundError:
        return 0


def pytest_report_header(config):
    return (f"pipeline_ingest e2e: pg {pihelpers.PGHOST}:{pihelpers.PGPORT} kafka {pihelpers.KAFKA_BOOTSTRAP} "
            f"kinesis {pihelpers.KINESIS_ENDPOINT} managed={os.environ.get('PI_SERVICES_MANAGED', '0')}")


@pytest.fixture
def registry_proxy(schema_registry):
    """A pihelpers.RegistryProxy in front of the session's registry: stop() and start() make an outage
    without restarting Apicurio (slow on a loaded machine, and its schemas live in memory)."""
    proxy = pihelpers.RegistryProxy(schema_registry)
    proxy.start()
    yield proxy
    proxy.stop()
