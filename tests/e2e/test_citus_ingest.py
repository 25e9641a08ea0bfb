"""Ingest into Citus tables through Citus (issue 22), on a real Citus 14 cluster: a coordinator and
two workers (scripts/citus.sh), in the PostgreSQL 18 pass.

Core COPY into a Citus table would fill the coordinator's shell table, which Citus never reads
(docs/citus-findings.md); sink::citus stages each batch and hands it to Citus with INSERT ... SELECT,
which Citus commits with two-phase commit together with the batch's offsets, even for one shard.
Here: a topic of several partitions into a hash-distributed table while a worker's and then the
coordinator's postmaster are killed with -9 (every row exactly once, in shards on both workers, none
in the shell table), a consumer on a worker node killed with -9, dead letters from a shard's CHECK constraint, metadata columns, a one-message
batch committed with PREPARE TRANSACTION, a reference table, a distributed partitioned table, an
upsert, a Kinesis stream, a preview, and the SQLSTATEs of what stays refused."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, KINESIS_ENDPOINT, PG_BIN, PG_VERSION, PI_RUN, create_topic,
                       kinesis_create_stream, kinesis_delete_stream, kinesis_put_records, kinesis_split_shard, produce,
                       unique_name, wait_until)

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


def _ports() -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in _citus("ports").splitlines())}


@pytest.fixture(scope="module")
def citus_db():
    """A database on a local Citus cluster with pipeline_ingest, the test broker and endpoint; the
    database is dropped on every node and the cluster stopped afterwards."""
    _citus("start")
    try:
        ports = _ports()
        db = unique_name("citus")
        _citus("createdb", db)
        with psycopg.connect(host="127.0.0.1", port=ports["coord"], user="postgres", dbname=db, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pipeline_ingest")
            c.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            c.execute("SELECT pipeline_kinesis.add_endpoint('local', 'us-east-1', NULL, %s)", (KINESIS_ENDPOINT,))
        yield ports, db
        with psycopg.connect(host="127.0.0.1", port=ports["coord"], user="postgres", dbname=db, autocommit=True) as c:
            c.execute("SELECT pipeline_kafka.consume_end()")
            c.execute("SELECT pipeline_kinesis.consume_end()")
        for node in ("coord", "w1", "w2"):
            with psycopg.connect(host="127.0.0.1", port=ports[node], user="postgres", dbname="postgres",
                                 autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    finally:
        _citus("stop")


def _conn(citus_db, node: str = "coord"):
    ports, db = citus_db
    return psycopg.connect(host="127.0.0.1", port=ports[node], user="postgres", dbname=db, autocommit=True)


def _try_count(citus_db, sql: str):
    """A count through the coordinator, None while a node is down or restarting."""
    try:
        with _conn(citus_db) as c:
            return c.execute(sql).fetchone()[0]
    except psycopg.Error:
        return None


def _kill9(node: str) -> None:
    """kill -9 the node's postmaster, wait until it and its children are gone, start it again."""
    pid = int((PI_RUN / "citus" / node / "data" / "postmaster.pid").read_text().split()[0])
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    os.kill(pid, signal.SIGKILL)

    def gone(p: int) -> bool:
        try:
            os.kill(p, 0)
        except ProcessLookupError:
            return True
        return pathlib.Path(f"/proc/{p}/stat").read_text().split()[2] == "Z"

    try:
        # every child notices the postmaster's death at its next wait (WL_EXIT_ON_PM_DEATH) and
        # exits, releasing its locks; one that stays would keep the old shared memory attached
        wait_until(lambda: gone(pid) and all(gone(p) for p in children), timeout=20)
    except Exception:
        # A failure, not a warning: once a worker survived blocked in LWLockAcquire of the
        # partition status lock (shmem::update_partition). Killed here only so that the other
        # tests find a cluster that starts.
        alive = {p: (pathlib.Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" "),
                     pathlib.Path(f"/proc/{p}/wchan").read_text()) for p in children if not gone(p)}
        for p in alive:
            os.kill(p, signal.SIGKILL)
        wait_until(lambda: all(gone(p) for p in children), timeout=10)
        _citus("start", node)
        pytest.fail(f"processes survived the death of {node}'s postmaster for 20 s: {alive}")
    _citus("start", node)


def _placements(c, table: str) -> dict[int, int]:
    """Rows per node port, counted in each shard placement (not through the distributed table)."""
    out: dict[int, int] = {}
    for port, result in c.execute("SELECT nodeport, result FROM run_command_on_placements(%s, "
                                  "'SELECT count(*) FROM %%s')", (table,)):
        out[port] = out.get(port, 0) + int(result)
    return out


@pytest.mark.timeout(300)
def test_distributed_table_exactly_once_through_worker_and_coordinator_crashes(citus_db):
    ports, db = citus_db
    topic = unique_name("citus_d")
    create_topic(topic, partitions=3)
    log = PI_RUN / "citus" / "coord" / "postgres.log"
    mark = log.stat().st_size
    with _conn(citus_db) as c:
        c.execute("CREATE TABLE dist (id bigint, v text, amount int CHECK (amount >= 0), part int, off bigint)")
        c.execute("SELECT create_distributed_table('dist', 'id')")
        # Citus's commands to the workers in the coordinator's log (the workers read these at start)
        c.execute(f"ALTER DATABASE {db} SET citus.log_remote_commands = on")
        c.execute(f"ALTER DATABASE {db} SET log_min_messages = notice")
        try:
            cid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 'dist', format := 'csv', start_offset := -2, "
                            "metadata := '{\"partition\": \"part\", \"offset\": \"off\"}', batchsize := 500)",
                            (topic,)).fetchone()[0]
            # one message, one shard: still a two-phase commit
            produce(topic, ["0,one,1"], partition=0)
            wait_until(lambda: c.execute("SELECT count(*) FROM dist").fetchone()[0] == 1, timeout=60)
        finally:
            c.execute(f"ALTER DATABASE {db} RESET citus.log_remote_commands")
            c.execute(f"ALTER DATABASE {db} RESET log_min_messages")
    with open(log, "rb") as f:
        f.seek(mark)
        text = f.read().decode(errors="replace")
    assert "PREPARE TRANSACTION" in text and "COMMIT PREPARED" in text, text[-3000:]

    n, bad = 6000, {17, 2500, 4999}  # bad: a negative amount, refused by the shard's CHECK
    rows = [f"{i},v{i},{-1 if i in bad else i}" for i in range(1, n + 1)]
    expected = n + 1 - len(bad)
    third = n // 3
    produce(topic, rows[:third])
    wait_until(lambda: (_try_count(citus_db, "SELECT count(*) FROM dist") or 0) > 200, timeout=60)
    produce(topic, rows[third:2 * third])
    _kill9("w1")
    wait_until(lambda: _try_count(citus_db, "SELECT count(*) FROM dist") == 2 * third + 1 - 2, timeout=120)
    produce(topic, rows[2 * third:])
    _kill9("coord")
    with _conn(citus_db) as c:
        c.execute("SELECT recover_prepared_transactions()")
    wait_until(lambda: _try_count(citus_db, "SELECT count(*) FROM dist") == expected, timeout=120)
    with _conn(citus_db) as c:
        c.execute("SELECT recover_prepared_transactions()")
        assert c.execute("SELECT count(*), count(DISTINCT id) FROM dist").fetchone() == (expected, expected)
        # the metadata columns: every row's own partition and offset, each (partition, offset) once
        assert c.execute("SELECT count(DISTINCT (part, off)) FROM dist WHERE part IS NOT NULL").fetchone()[0] == expected
        # dead letters: the three rows the shard's CHECK refused, with the SQLSTATE of a CHECK
        letters = c.execute("SELECT convert_from(value, 'UTF8'), sqlstate FROM pipeline_kafka.dead_letters "
                            "WHERE consumer_id = %s ORDER BY 1", (cid,)).fetchall()
        assert sorted(letters) == sorted((f"{i},v{i},-1", "23514") for i in bad), letters
        # offsets: every message accounted for, once
        assert c.execute("SELECT sum(\"offset\") FROM pipeline_kafka.offsets WHERE consumer_id = %s",
                         (cid,)).fetchone()[0] == n + 1
        # the rows are in shards on both workers, none in the coordinator's shell table
        per_node = _placements(c, "dist")
        assert per_node.get(ports["w1"], 0) > 0 and per_node.get(ports["w2"], 0) > 0, per_node
        assert sum(per_node.values()) == expected
        assert c.execute("SELECT pg_relation_size('dist')").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM pg_dist_transaction").fetchone()[0] == 0
    for node in ("w1", "w2"):
        with _conn(citus_db, node) as w:
            assert w.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()[0] == 0


@pytest.mark.timeout(240)
def test_a_consumer_on_a_worker_node_survives_its_kill9(citus_db):
    """With Citus's metadata on every node, a worker node writes distributed tables itself: a
    consumer created there (its catalog, offsets and workers on that node) commits its offsets
    with the shard rows, coordinated by that node's two-phase commit."""
    ports, db = citus_db
    topic = unique_name("citus_w")
    create_topic(topic, partitions=2)
    with _conn(citus_db) as c:
        c.execute("CREATE TABLE wdist (id bigint PRIMARY KEY, v text)")
        c.execute("SELECT create_distributed_table('wdist', 'id')")
    with _conn(citus_db, "w1") as w:
        w.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        cid = w.execute("SELECT pipeline_kafka.consume_begin(%s, 'wdist', format := 'csv', start_offset := -2, "
                        "batchsize := 300)", (topic,)).fetchone()[0]
    n = 4000
    produce(topic, [f"{i},w{i}" for i in range(n // 2)])
    wait_until(lambda: (_try_count(citus_db, "SELECT count(*) FROM wdist") or 0) > 300, timeout=60)
    produce(topic, [f"{i},w{i}" for i in range(n // 2, n)])
    _kill9("w1")
    with _conn(citus_db, "w1") as w:
        w.execute("SELECT recover_prepared_transactions()")
    wait_until(lambda: _try_count(citus_db, "SELECT count(*) FROM wdist") == n, timeout=120)
    with _conn(citus_db, "w1") as w:
        w.execute("SELECT recover_prepared_transactions()")
        assert w.execute("SELECT sum(\"offset\") FROM pipeline_kafka.offsets WHERE consumer_id = %s",
                         (cid,)).fetchone()[0] == n
        assert w.execute("SELECT count(*) FROM pipeline_kafka.dead_letters").fetchone()[0] == 0
        w.execute("SELECT pipeline_kafka.consume_end(%s, 'wdist')", (topic,))
    with _conn(citus_db) as c:
        assert c.execute("SELECT count(*), count(DISTINCT id) FROM wdist").fetchone() == (n, n)
        per_node = _placements(c, "wdist")
        assert per_node.get(ports["w1"], 0) > 0 and per_node.get(ports["w2"], 0) > 0, per_node
        # the coordinator's shell and the worker's own copy of the shell hold nothing
        assert c.execute("SELECT pg_relation_size('wdist')").fetchone()[0] == 0
    with _conn(citus_db, "w1") as w:
        assert w.execute("SELECT pg_relation_size('wdist')").fetchone()[0] == 0
    for node in ("coord", "w1", "w2"):
        with _conn(citus_db, node) as x:
            assert x.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone()[0] == 0


def _spread_offsets(citus_db, cid_by_node: dict[str, int]) -> dict[str, dict[int, int]]:
    """The stored offsets of the spread consumer, per node."""
    out = {}
    for node, cid in cid_by_node.items():
        with _conn(citus_db, node) as x:
            out[node] = dict(x.execute("SELECT \"partition\", \"offset\" FROM pipeline_kafka.offsets "
                                       "WHERE consumer_id = %s", (cid,)).fetchall())
    return out


@pytest.mark.timeout(300)
def test_spread_consumer_takes_each_partition_on_one_node_through_a_kill9(citus_db):
    """consume_spread: the same consumer on every node, each reading its share of the partitions
    (partition p on the node of slot p mod 3 here), its offsets on that node; a node killed with -9
    makes its partitions wait (no other node takes them), then every row is there once."""
    ports, db = citus_db
    topic = unique_name("citus_s")
    create_topic(topic, partitions=6)
    with _conn(citus_db) as c:
        c.execute("CREATE TABLE sdist (id bigint PRIMARY KEY, v text)")
        c.execute("SELECT create_distributed_table('sdist', 'id')")
        ok = c.execute("SELECT bool_and(success) FROM run_command_on_all_nodes(format("
                       "'SELECT pipeline_kafka.add_broker(%%1$L) WHERE NOT EXISTS "
                       "(SELECT FROM pipeline_kafka.brokers WHERE host = %%1$L)', %s::text))",
                       (KAFKA_BOOTSTRAP,)).fetchone()[0]
        assert ok
        # consume_begin and consume_spread in one statement per node: no worker reads before
        # the node knows its share
        rows = c.execute("SELECT n.nodeport, r.success, r.result FROM run_command_on_all_nodes(format("
                         "$$SELECT pipeline_kafka.consume_spread(%%1$L, 'sdist') FROM (SELECT pipeline_kafka.consume_begin("
                         "%%1$L, 'sdist', format := 'csv', start_offset := -2, batchsize := 200) OFFSET 0) b$$, %s::text)) r "
                         "JOIN pg_dist_node n USING (nodeid)", (topic,)).fetchall()
    assert all(ok for _, ok, _ in rows), rows
    slot = {port: int(result) for port, _, result in rows}
    node_of_port = {v: k for k, v in ports.items()}
    assert sorted(slot.values()) == [0, 1, 2], slot
    cids = {}
    for node in ports:
        with _conn(citus_db, node) as x:
            cids[node] = x.execute("SELECT id FROM pipeline_kafka.consumers WHERE topic = %s", (topic,)).fetchone()[0]
            assert x.execute("SELECT slot, slots FROM pipeline_kafka.spread WHERE consumer_id = %s",
                             (cids[node],)).fetchone() == (slot[ports[node]], 3)

    def wave(lo: int, hi: int) -> None:
        for p in range(6):
            produce(topic, [f"{i},s{i}" for i in range(lo, hi) if i % 6 == p], partition=p)

    wave(0, 1200)
    wait_until(lambda: _try_count(citus_db, "SELECT count(*) FROM sdist") == 1200, timeout=90)
    offsets = _spread_offsets(citus_db, cids)
    for node, parts in offsets.items():
        # each node read only its partitions, each partition read by one node
        assert sorted(parts) == [p for p in range(6) if p % 3 == slot[ports[node]]], (node, offsets)
    assert sum(sum(parts.values()) for parts in offsets.values()) == 1200

    # a node running consumers killed with -9 while the others go on
    wave(1200, 2400)
    _kill9("w1")
    wave(2400, 3000)
    with _conn(citus_db, "w1") as w:
        w.execute("SELECT recover_prepared_transactions()")
    wait_until(lambda: _try_count(citus_db, "SELECT count(*) FROM sdist") == 3000, timeout=120)
    for node in ports:
        with _conn(citus_db, node) as x:
            x.execute("SELECT recover_prepared_transactions()")
    offsets = _spread_offsets(citus_db, cids)
    for node, parts in offsets.items():
        assert sorted(parts) == [p for p in range(6) if p % 3 == slot[ports[node]]], (node, offsets)
    assert sum(sum(parts.values()) for parts in offsets.values()) == 3000
    with _conn(citus_db) as c:
        assert c.execute("SELECT count(*), count(DISTINCT id) FROM sdist").fetchone() == (3000, 3000)
        assert c.execute("SELECT pg_relation_size('sdist')").fetchone()[0] == 0
        # which node runs which partition, from the coordinator: spread_status, each partition
        # once, on the node of its slot, with that node's offset
        status = c.execute("SELECT node, \"partition\", next_offset FROM pipeline_kafka.spread_status(%s, 'sdist')",
                           (topic,)).fetchall()
        assert [(node_of_port[int(n.rsplit(":", 1)[1])], p) for n, p, _ in status] == \
            [(node_of_port[next(pt for pt, k in slot.items() if k == p % 3)], p) for p in range(6)], status
        assert sum(o for _, _, o in status) == 3000, status
        # the same visibility as each node's consumer_status: a plain role sees nothing of it
        role = unique_name("citus_plain")
        c.execute(f"CREATE ROLE {role} LOGIN")  # (Citus creates it on the workers too)
        try:
            c.execute(f"SET ROLE {role}")
            assert c.execute("SELECT count(*) FROM pipeline_kafka.spread_status(%s, 'sdist')",
                             (topic,)).fetchone()[0] == 0
        finally:
            c.execute("RESET ROLE")
            c.execute(f"DROP ROLE {role}")
        c.execute("SELECT run_command_on_all_nodes(format('SELECT pipeline_kafka.consume_end(%%L, ''sdist'')', %s::text))",
                  (topic,))


def _shard_no(shard_id: str) -> int:
    return int(shard_id.rsplit("-", 1)[1])


@pytest.mark.timeout(300)
def test_spread_kinesis_each_shard_on_one_node_through_a_split(citus_db):
    """pipeline_kinesis.consume_spread: shard s on the node of slot (its number) mod 3, its sequence
    numbers there only; a split while spread: the parent's children (on other nodes) are read only
    once the parent is finished on its node, every record once; a node killed with -9 while records
    come; spread_status shows each shard once."""
    ports, db = citus_db
    node_of_port = {v: k for k, v in ports.items()}
    stream = unique_name("citus_ks")
    shards = kinesis_create_stream(stream, shards=3)
    # a node whose own shards did not end sees a split's children at its next listing: every
    # second here instead of every 30
    for node in ports:
        with _conn(citus_db, node) as x:
            x.execute("ALTER SYSTEM SET pipeline_ingest.metadata_refresh = 1")
            x.execute("SELECT pg_reload_conf()")
    try:
        with _conn(citus_db) as c:
            c.execute("CREATE TABLE kspread (id bigint, v text, shard text, at timestamptz DEFAULT now())")
            c.execute("SELECT create_distributed_table('kspread', 'id')")
            assert c.execute("SELECT bool_and(success) FROM run_command_on_all_nodes(format("
                             "'SELECT pipeline_kinesis.add_endpoint(''local'', ''us-east-1'', NULL, %%1$L) WHERE NOT EXISTS "
                             "(SELECT FROM pipeline_kinesis.endpoints WHERE name = ''local'')', %s::text))",
                             (KINESIS_ENDPOINT,)).fetchone()[0]
            rows = c.execute("SELECT n.nodeport, r.success, r.result FROM run_command_on_all_nodes(format("
                             "$$SELECT pipeline_kinesis.consume_spread('local', %%1$L, 'kspread') FROM ("
                             "SELECT pipeline_kinesis.consume_begin('local', %%1$L, 'kspread', format := 'csv', "
                             "columns := ARRAY['id', 'v'], metadata := '{\"shard_id\": \"shard\"}', start_offset := -2, "
                             "batchsize := 100, poll_interval := 50) OFFSET 0) b$$, %s::text)) r "
                             "JOIN pg_dist_node n USING (nodeid)", (stream,)).fetchall()
        assert all(ok for _, ok, _ in rows), rows
        slot = {node_of_port[port]: int(result) for port, _, result in rows}
        assert sorted(slot.values()) == [0, 1, 2], slot

        def positions() -> dict[str, dict[str, tuple]]:
            """Each node's shards with something read (a sequence number or finished)."""
            out = {}
            for node in ports:
                with _conn(citus_db, node) as x:
                    out[node] = {sh: (seq, fin) for sh, seq, fin in x.execute(
                        "SELECT q.shard_id, q.seqnum, q.finished FROM pipeline_kinesis.seqnums q "
                        "JOIN pipeline_kinesis.consumers c ON c.id = q.consumer_id WHERE c.stream = %s "
                        "AND (q.seqnum IS NOT NULL OR q.finished)", (stream,))}
            return out

        def owner(shard_id: str) -> str:
            return next(node for node, k in slot.items() if k == _shard_no(shard_id) % 3)

        kinesis_put_records(stream, [(f"k{i}", f"{i},a{i}") for i in range(300)])
        wait_until(lambda: _try_count(citus_db, "SELECT count(*) FROM kspread") == 300, timeout=90)
        pos = positions()
        for sh in shards:
            assert [node for node, p in pos.items() if sh in p] == [owner(sh)], (sh, pos)

        # a split of the shard on the node of slot 0: its children (3, 4) go to slots 0 and 1
        parent = shards[0]
        children = kinesis_split_shard(stream, parent)
        assert {_shard_no(ch) % 3 for ch in children} == {0, 1}, children
        kinesis_put_records(stream, [(f"k{i}", f"{i},b{i}") for i in range(300, 600)])
        wait_until(lambda: _try_count(citus_db, "SELECT count(*) FROM kspread") == 600, timeout=120)
        with _conn(citus_db) as c:
            assert c.execute("SELECT count(*), count(DISTINCT id) FROM kspread").fetchone() == (600, 600)
            # each child's first batch began after the parent's last one (its end committed first)
            last_parent, first_child = c.execute(
                "SELECT max(at) FILTER (WHERE shard = %s), min(at) FILTER (WHERE shard = ANY(%s)) FROM kspread",
                (parent, children)).fetchone()
            assert first_child is not None and last_parent < first_child, (last_parent, first_child)
            assert c.execute("SELECT pg_relation_size('kspread')").fetchone()[0] == 0
        pos = positions()
        assert pos[owner(parent)][parent][1] is True, pos
        for sh in shards + children:
            assert [node for node, p in pos.items() if sh in p] == [owner(sh)], (sh, pos)
        # a node running Kinesis workers killed with -9 while records come: its shards wait, then
        # every record once, each shard's position still on its node only
        kinesis_put_records(stream, [(f"k{i}", f"{i},c{i}") for i in range(600, 900)])
        _kill9("w1")
        for node in ports:
            with _conn(citus_db, node) as x:
                x.execute("SELECT recover_prepared_transactions()")
        wait_until(lambda: _try_count(citus_db, "SELECT count(*) FROM kspread") == 900, timeout=120)
        for node in ports:
            with _conn(citus_db, node) as x:
                x.execute("SELECT recover_prepared_transactions()")
        with _conn(citus_db) as c:
            assert c.execute("SELECT count(*), count(DISTINCT id) FROM kspread").fetchone() == (900, 900)
        pos = positions()
        for sh in shards + children:
            assert [node for node, p in pos.items() if sh in p] == [owner(sh)], (sh, pos)
        # spread_status: every shard once, on its node
        with _conn(citus_db) as c:
            status = c.execute("SELECT node, shard_id, shard_state FROM pipeline_kinesis.spread_status('local', %s, 'kspread')",
                               (stream,)).fetchall()
        got = sorted((sh, node_of_port[int(n.rsplit(":", 1)[1])]) for n, sh, _ in status)
        assert got == sorted((sh, owner(sh)) for sh in shards + children), status
    finally:
        with _conn(citus_db) as c:
            c.execute("SELECT run_command_on_all_nodes(format('SELECT pipeline_kinesis.consume_end(''local'', %%L, ''kspread'')', "
                      "%s::text))", (stream,))
        for node in ports:
            with _conn(citus_db, node) as x:
                x.execute("ALTER SYSTEM RESET pipeline_ingest.metadata_refresh")
                x.execute("SELECT pg_reload_conf()")
        kinesis_delete_stream(stream)


@pytest.mark.timeout(240)
def test_reference_partitioned_upsert_kinesis_and_preview(citus_db):
    ports, _ = citus_db
    t_ref, t_part, t_ups = (unique_name("citus_r"), unique_name("citus_p"), unique_name("citus_u"))
    for t in (t_ref, t_part, t_ups):
        create_topic(t, partitions=2)
    stream = unique_name("citus_k")
    kinesis_create_stream(stream, shards=2)
    try:
        with _conn(citus_db) as c:
            c.execute("CREATE TABLE ref (id bigint PRIMARY KEY, v text)")
            c.execute("SELECT create_reference_table('ref')")
            c.execute("CREATE TABLE events (id bigint, day date, v text) PARTITION BY RANGE (day)")
            c.execute("CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')")
            c.execute("CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01')")
            c.execute("SELECT create_distributed_table('events', 'id')")
            c.execute("CREATE TABLE kv (k bigint PRIMARY KEY, v text)")
            c.execute("SELECT create_distributed_table('kv', 'k')")
            c.execute("CREATE TABLE kin (id bigint, v text)")
            c.execute("SELECT create_distributed_table('kin', 'id')")
            # a transform returning rows of a distributed table
            c.execute("CREATE TABLE tr (\"offset\" bigint, body text)")
            c.execute("SELECT create_distributed_table('tr', 'offset')")
            c.execute("CREATE FUNCTION to_tr(batch pipeline_kafka.message[]) RETURNS SETOF tr LANGUAGE sql AS "
                      "$$ SELECT m.\"offset\", upper(convert_from(m.value, 'UTF8')) FROM unnest(batch) m $$")
            c.execute("SELECT pipeline_kafka.consume_begin(%s, 'tr', transform := 'to_tr(pipeline_kafka.message[])', "
                      "start_offset := -2)", (t_ref,))
            c.execute("SELECT pipeline_kafka.consume_begin(%s, 'ref', format := 'csv', start_offset := -2)", (t_ref,))
            pcid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 'events', format := 'csv', start_offset := -2)",
                             (t_part,)).fetchone()[0]
            c.execute("SELECT pipeline_kafka.consume_begin(%s, 'kv', format := 'json', start_offset := -2, "
                      "mode := 'upsert', key_columns := ARRAY['k'])", (t_ups,))
            c.execute("SELECT pipeline_kinesis.consume_begin('local', %s, 'kin', format := 'csv', start_offset := -2)",
                      (stream,))
            produce(t_ref, [f"{i},r{i}" for i in range(100)])
            # a date without a partition: a dead letter (the shard says 23514 through Citus)
            produce(t_part, [f"{i},2026-0{1 + i % 2}-15,e{i}" for i in range(200)] + ["999,2027-01-01,none"])
            # keyed: a key's messages in one partition, in order
            produce(t_ups, [f'{{"k": {i % 50}, "v": "a{i}"}}' for i in range(200)],
                    keys=[f'{{"k": {i % 50}}}' for i in range(200)])
            kinesis_put_records(stream, [(f"{i}", f"{i},k{i}".encode()) for i in range(300)])
            wait_until(lambda: c.execute("SELECT (SELECT count(*) FROM ref), (SELECT count(*) FROM events), "
                                         "(SELECT count(*) FROM kv), (SELECT count(*) FROM kin), "
                                         "(SELECT count(*) FROM tr WHERE body LIKE '%%,R%%')").fetchone()
                       == (100, 200, 50, 300, 100), timeout=120)
            assert c.execute("SELECT count(*) FROM pipeline_kafka.dead_letters WHERE consumer_id = %s AND sqlstate = '23514'",
                             (pcid,)).fetchone()[0] == 1
            # the reference table: the same 100 rows in the placement on each worker
            per_node = _placements(c, "ref")
            assert per_node.get(ports["w1"]) == 100 and per_node.get(ports["w2"]) == 100, per_node
            # the partitions' shards hold the rows, not their shells (nor the parent's)
            assert c.execute("SELECT count(*) FROM events_1").fetchone()[0] == 100
            for shell in ("ref", "events_1", "events_2", "kv", "kin", "tr"):
                assert c.execute("SELECT pg_relation_size(%s)", (shell,)).fetchone()[0] == 0, shell
            # the upsert: the last value of each key wins, once per key
            assert c.execute("SELECT count(*) FROM kv WHERE v = 'a' || (150 + k)").fetchone()[0] == 50
            produce(t_ups, [f'{{"k": {i}, "v": "b{i}"}}' for i in range(5)], keys=[f'{{"k": {i}}}' for i in range(5)])
            wait_until(lambda: c.execute("SELECT count(*) FROM kv WHERE v LIKE 'b%'").fetchone()[0] == 5, timeout=60)
            assert c.execute("SELECT count(*) FROM kv").fetchone()[0] == 50
            # a preview of a distributed table says what each message became, without the rows (they
            # are on the workers, stamped with their transaction ids: before, rows of earlier batches
            # whose worker xid happened to equal one of the preview's showed up), and writes nothing
            produce(t_ref, ["500,p"])
            shown = c.execute("SELECT action, \"row\" IS NULL, error FROM pipeline_kafka.preview(%s, 'kin', format := 'csv', "
                              "start_offset := -2, \"limit\" := 3)", (t_ref,)).fetchall()
            assert shown == [("inserted", True, None)] * 3, shown
            assert c.execute("SELECT count(*) FROM kin").fetchone()[0] == 300
            assert c.execute("SELECT pg_relation_size('kin')").fetchone()[0] == 0
    finally:
        with _conn(citus_db) as c:
            c.execute("SELECT pipeline_kinesis.consume_end()")
        kinesis_delete_stream(stream)


@pytest.mark.timeout(240)
def test_what_stays_refused(citus_db):
    topic = unique_name("citus_x")
    create_topic(topic)
    with _conn(citus_db) as c:
        # a Citus local table: 0A000 at consume_begin, nothing stored
        c.execute("CREATE TABLE loc (id bigint, v text)")
        c.execute("SELECT citus_add_local_table_to_metadata('loc')")
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT pipeline_kafka.consume_begin(%s, 'loc', format := 'csv')", (topic,))
        assert e.value.sqlstate == "0A000" and "Citus local table" in str(e.value), str(e.value)
        assert c.execute("SELECT count(*) FROM pipeline_kafka.consumers WHERE relname LIKE '%%loc'").fetchone()[0] == 0
        # a distributed table with an identity column (not staged yet): 0A000 as well
        c.execute("CREATE TABLE ident (id bigint GENERATED ALWAYS AS IDENTITY, v text)")
        c.execute("SELECT create_distributed_table('ident', 'v')")
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT pipeline_kafka.consume_begin(%s, 'ident', format := 'csv', columns := ARRAY['v'])",
                      (topic,))
        assert e.value.sqlstate == "0A000" and "identity column" in str(e.value), str(e.value)
        # Debezium change events into a distributed table: 0A000 (the change-event writer is local)
        c.execute("CREATE TABLE dbz (id bigint PRIMARY KEY, v text)")
        c.execute("SELECT create_distributed_table('dbz', 'id')")
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT pipeline_kafka.consume_begin(%s, 'dbz', format := 'debezium')", (topic,))
        assert e.value.sqlstate == "0A000" and "Debezium change events" in str(e.value), str(e.value)
        # a table that becomes one after consume_begin: the consumer stops before writing, the
        # offset stays at the first message not written
        c.execute("CREATE TABLE later (id bigint, v text)")
        cid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 'later', format := 'csv', start_offset := -2)",
                        (topic,)).fetchone()[0]
        produce(topic, [f"{i},a" for i in range(3)])
        wait_until(lambda: c.execute("SELECT count(*) FROM later").fetchone()[0] == 3, timeout=60)
        c.execute("SELECT citus_add_local_table_to_metadata('later')")
        produce(topic, [f"{i},b" for i in range(3, 6)])
        wait_until(lambda: c.execute("SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                     (cid,)).fetchone()[0] is not None, timeout=60)
        error, enabled = c.execute("SELECT last_error, enabled FROM pipeline_kafka.consumers WHERE id = %s",
                                   (cid,)).fetchone()
        assert "Citus local table" in error and "0A000" in error and not enabled, error
        assert c.execute("SELECT \"offset\" FROM pipeline_kafka.offsets WHERE consumer_id = %s",
                         (cid,)).fetchone()[0] == 3
        with pytest.raises(psycopg.Error) as e:
            c.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 'later')", (topic,))
        assert e.value.sqlstate == "0A000", str(e.value)
        # a stream-partitioned consumer does not write Citus tables: the message is a dead letter
        c.execute("CREATE TABLE sp (id bigint, v text)")
        c.execute("SELECT create_distributed_table('sp', 'id')")
        sp_topic = unique_name("citus_sp")
        create_topic(sp_topic)
        spid = c.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, format := 'csv', start_offset := -2)",
                         (sp_topic,)).fetchone()[0]
        produce(sp_topic, ["1,a"], key="sp")
        wait_until(lambda: c.execute("SELECT count(*) FROM pipeline_kafka.dead_letters WHERE consumer_id = %s",
                                     (spid,)).fetchone()[0] == 1, timeout=60)
        assert c.execute("SELECT sqlstate FROM pipeline_kafka.dead_letters WHERE consumer_id = %s",
                         (spid,)).fetchone()[0] == "0A000"
        # an upsert tombstone into a reference table: the batch fails with 0A000 (retried, shown)
        c.execute("CREATE TABLE rkv (k bigint PRIMARY KEY, v text)")
        c.execute("SELECT create_reference_table('rkv')")
        r_topic = unique_name("citus_rt")
        create_topic(r_topic)
        rid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 'rkv', format := 'json', start_offset := -2, "
                        "mode := 'upsert', key_columns := ARRAY['k'])", (r_topic,)).fetchone()[0]
        produce(r_topic, [None], key='{"k": 1}')
        wait_until(lambda: (c.execute("SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                      (rid,)).fetchone()[0] or "").find("0A000") >= 0, timeout=60)
