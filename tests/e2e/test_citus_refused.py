"""Citus tables are refused until pipeline_ingest has a writer that goes through Citus (issue 22).

The workers COPY with PostgreSQL's own CopyFrom, which Citus does not intercept (only its
ProcessUtility hook routes a COPY): on a distributed or reference table the rows land in the
coordinator's shell table, committed with their offsets and invisible (docs/citus-findings.md). So
consume_begin refuses such a table (0A000) and a consumer whose table becomes one stops with that
error before writing, its offsets where they were: nothing is lost. Runs on a real Citus 14 cluster
(a coordinator and two workers, scripts/citus.sh) in the PostgreSQL 18 pass."""
from __future__ import annotations

import pathlib
import subprocess

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, PG_BIN, PG_VERSION, create_topic, produce, unique_name, wait_until

REPO = pathlib.Path(__file__).resolve().parents[2]


def _citus_installed() -> bool:
    """scripts/setup.sh builds Citus into the PostgreSQL 18 installation from the vendored source
    (../shared/vendor); a machine without that source has no Citus to test against."""
    try:
        libdir = subprocess.run([f"{PG_BIN}/pg_config", "--pkglibdir"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return pathlib.Path(libdir, "citus.so").is_file()


pytestmark = [
    pytest.mark.skipif(PG_VERSION < 16, reason="Citus 14 needs PostgreSQL 16 or later (runs in the 18 pass)"),
    pytest.mark.skipif(PG_VERSION >= 16 and not _citus_installed(),
                       reason="Citus is not installed (scripts/setup.sh builds it from ../shared/vendor when present)"),
]


def _citus(*args: str) -> str:
    return subprocess.run(["bash", str(REPO / "scripts/citus.sh"), *args], check=True, capture_output=True,
                          text=True, timeout=180).stdout


@pytest.fixture(scope="module")
def citus_db():
    """A database on a fresh local Citus cluster with pipeline_ingest and the test broker; the
    cluster is stopped afterwards."""
    _citus("start")
    try:
        port = int(dict(line.split() for line in _citus("ports").splitlines())["coord"])
        db = unique_name("citus")
        _citus("createdb", db)
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pipeline_ingest")
            c.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        yield port, db
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db, autocommit=True) as c:
            c.execute("SELECT pipeline_kafka.consume_end()")
    finally:
        _citus("stop")


def _conn(citus_db):
    port, db = citus_db
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db, autocommit=True)


@pytest.mark.timeout(240)
def test_consume_begin_refuses_distributed_and_reference_tables(citus_db):
    topic = unique_name("citus_t")
    create_topic(topic)
    with _conn(citus_db) as c:
        c.execute("CREATE TABLE dist (id bigint, v text)")
        c.execute("SELECT create_distributed_table('dist', 'id')")
        c.execute("CREATE TABLE ref (id bigint, v text)")
        c.execute("SELECT create_reference_table('ref')")
        for table, kind in (("dist", "hash-distributed table"), ("ref", "reference table")):
            with pytest.raises(psycopg.Error) as e:
                c.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv')", (topic, table))
            assert e.value.sqlstate == "0A000" and kind in str(e.value), str(e.value)
            assert c.execute("SELECT count(*) FROM pipeline_kafka.consumers WHERE relname LIKE %s",
                             (f"%{table}",)).fetchone()[0] == 0


@pytest.mark.timeout(240)
def test_a_consumer_whose_table_becomes_distributed_stops_and_loses_nothing(citus_db):
    topic = unique_name("citus_t")
    create_topic(topic)
    with _conn(citus_db) as c:
        c.execute("CREATE TABLE later (id bigint, v text)")
        cid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 'later', format := 'csv', start_offset := -2)",
                        (topic,)).fetchone()[0]
        produce(topic, [f"{i},a" for i in range(3)])
        wait_until(lambda: c.execute("SELECT count(*) FROM later").fetchone()[0] == 3, timeout=60)
        c.execute("SELECT create_distributed_table('later', 'id')")
        produce(topic, [f"{i},b" for i in range(3, 6)])
        wait_until(lambda: c.execute("SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                     (cid,)).fetchone()[0] is not None, timeout=60)
        error, enabled = c.execute("SELECT last_error, enabled FROM pipeline_kafka.consumers WHERE id = %s",
                                   (cid,)).fetchone()
        assert "Citus hash-distributed table" in error and "0A000" in error and not enabled, error
        # The three rows before are in the shards (Citus moved them), the three after were not written
        # anywhere: the offset still points at them.
        assert c.execute("SELECT count(*) FROM later").fetchone()[0] == 3
        assert c.execute("SELECT \"offset\" FROM pipeline_kafka.offsets WHERE consumer_id = %s",
                         (cid,)).fetchone()[0] == 3
        # retry_dead_letters writes through the same COPY: refused as well
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 'later')", (topic,))
        assert e.value.sqlstate == "0A000", str(e.value)
