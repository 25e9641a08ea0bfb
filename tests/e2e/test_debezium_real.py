"""Format 'debezium' against a real Debezium: Kafka Connect 4.1.1 standalone with
io.debezium:debezium-connector-postgres (scripts/connect.sh; jars from scripts/setup.sh's connect
step) captures a PostgreSQL 15 source cluster (wal_level = logical) and publishes to the stack's
Kafka. A deterministic history (snapshot rows, inserts, updates, deletes, primary-key changes, an
update leaving a TOASTed column unchanged, multi-statement transactions) runs on the source; then

- test_real_debezium_events_arrive: the topic holds exactly the events Debezium is documented to
  emit for that history (r for the snapshot, c/u/d, a tombstone after each d, a key change as d +
  tombstone + c, __debezium_unavailable_value for the unchanged TOASTed column under REPLICA
  IDENTITY DEFAULT), in order, and the same as the committed sample in
  tests/e2e/fixtures/debezium/ (PI_CAPTURE_DEBEZIUM_FIXTURES=1 rewrites the sample);
- test_real_debezium_applied_exactly_once: pipeline_kafka.consume_begin(..., format := 'debezium')
  makes a keyed table equal to the source's final state, nothing dead-lettered.

Two variants, one connector run each: 'schemas' (JsonConverter schemas.enable=true, Debezium's
default encodings: decimals as base64 bytes + scale, dates as days, timestamps as micros; REPLICA
IDENTITY DEFAULT) and 'noschema' (schemas.enable=false with decimal.handling.mode=string and
time.precision.mode=isostring, the settings a schemaless consumer needs; REPLICA IDENTITY FULL).

PI_SKIP_CONNECT=1 (setup did not fetch Kafka Connect) skips this file, saying so; without it,
missing jars fail the test.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import urllib.error
import urllib.request
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, PI_ROOT, consume_all, create_topic, delete_topic, pg_connect, query, scalar,
                       unique_name, wait_topic_count, wait_until)

CONNECT_SH = PI_ROOT / "scripts" / "connect.sh"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "debezium"
PLACEHOLDER = "__debezium_unavailable_value"
TOMBSTONE = "T"

# The table on both sides ({name} is replaced); big is stored out of line uncompressed, so a value
# of 2500 bytes is TOASTed.
DDL = """CREATE TABLE {name} (
    id int PRIMARY KEY,
    qty bigint,
    price numeric(20,6),
    ok boolean,
    ratio double precision,
    day date,
    at timestamp(6),
    at_tz timestamptz,
    note text,
    big text
)"""
COLUMNS = ["id", "qty", "price", "ok", "ratio", "day", "at", "at_tz", "note", "big"]

VARIANTS = {
    "schemas": dict(schemas=True, identity="DEFAULT", extra={}),
    "noschema": dict(schemas=False, identity="FULL",
                     extra={"decimal.handling.mode": "string", "time.precision.mode": "isostring"}),
}


# ---------------------------------------------------------------------------------- the worker

def _connect_sh(*args: str, timeout: float = 200) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CONNECT_SH), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def connect_worker():
    """scripts/connect.sh's source cluster and Kafka Connect worker (started here unless already
    running, and then stopped here); yields its settings (connect.sh env)."""
    if os.environ.get("PI_SKIP_CONNECT") == "1":
        pytest.skip("PI_SKIP_CONNECT=1: Kafka Connect and Debezium are not installed (scripts/setup.sh connect step)")
    env = dict(line.split("=", 1) for line in _connect_sh("env").stdout.split("\n") if "=" in line)
    started = [part for part in ("source", "worker") if _connect_sh("status", part).returncode != 0]
    try:
        for part in started:
            proc = _connect_sh("start", part)
            assert proc.returncode == 0, f"scripts/connect.sh start {part} failed:\n{proc.stdout}"
        yield env
    finally:
        for part in reversed(started):
            proc = _connect_sh("stop", part, timeout=120)
            if proc.returncode != 0:
                print(proc.stdout)


def _rest(env: dict, method: str, path: str, body: dict | None = None):
    req = urllib.request.Request(env["CONNECT_URL"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            data = resp.read()
            return resp.status, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _source(env: dict) -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", port=int(env["SOURCE_PORT"]), user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=10)


# ---------------------------------------------------------------------------------- the history

class History:
    """A deterministic history of statements on the source table, with the events Debezium emits
    for each: (op, id) in topic order, TOMBSTONE for a tombstone."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.rows: dict[int, dict] = {}
        self.next_id = 1
        self.deleted: list[int] = []

    def value(self, col: str):
        r = self.rng
        if col != "big" and r.random() < 0.1:
            return None
        if col == "qty":
            return r.randint(-10**15, 10**15)
        if col == "price":
            return Decimal(f"{r.randint(-10**13, 10**13)}.{r.randint(0, 999999):06d}")
        if col == "ok":
            return r.random() < 0.5
        if col == "ratio":
            return r.choice([0.1, -2.5, 1e-7, 12345.678, 0.0, 3.141592653589793])
        if col == "day":
            return date(1990, 1, 1) + timedelta(days=r.randint(0, 20000))
        if col == "at":
            return datetime(2001, 1, 1) + timedelta(microseconds=r.randint(0, 10**15))
        if col == "at_tz":
            return datetime(2001, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=r.randint(0, 10**15))
        if col == "note":
            return r.choice(["plain", "quote ' \" \\ back", "line\nbreak", "ünïcødé ✓", ""]) + str(r.randint(0, 99))
        if col == "big":
            if r.random() < 0.6:
                return None
            return "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(2500))
        raise AssertionError(col)

    def new_row(self, id_: int) -> dict:
        return {"id": id_, **{c: self.value(c) for c in COLUMNS[1:]}}

    def fresh_id(self) -> int:
        if self.deleted and self.rng.random() < 0.3:
            return self.deleted.pop(self.rng.randrange(len(self.deleted)))
        self.next_id += 1
        return self.next_id - 1

    # Each returns (sql, params, events) and applies the statement to the model.
    def insert(self, row: dict | None = None):
        row = row or self.new_row(self.fresh_id())
        self.rows[row["id"]] = row
        cols = ", ".join(COLUMNS)
        return (f"INSERT INTO {{t}} ({cols}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
                [row[c] for c in COLUMNS], [("c", row["id"])])

    def update(self, id_: int, cols: list[str]):
        row = self.rows[id_]
        sets = {c: self.value(c) for c in cols}
        row.update(sets)
        return (f"UPDATE {{t}} SET {', '.join(f'{c} = %s' for c in cols)} WHERE id = %s",
                [*sets.values(), id_], [("u", id_)])

    def delete(self, id_: int):
        del self.rows[id_]
        self.deleted.append(id_)
        return "DELETE FROM {t} WHERE id = %s", [id_], [("d", id_), (TOMBSTONE, id_)]

    def change_key(self, id_: int):
        new = self.fresh_id()
        row = self.rows.pop(id_)
        row["id"] = new
        row["note"] = self.value("note")
        self.rows[new] = row
        self.deleted.append(id_)
        return ("UPDATE {t} SET id = %s, note = %s WHERE id = %s", [new, row["note"], id_],
                [("d", id_), (TOMBSTONE, id_), ("c", new)])

    def random_statement(self):
        r = self.rng
        k = r.random()
        if not self.rows or k < 0.3:
            return self.insert()
        id_ = r.choice(sorted(self.rows))
        if k < 0.65:
            cols = r.sample([c for c in COLUMNS[1:] if c != "big"], r.randint(1, 4))
            return self.update(id_, cols)
        if k < 0.72:
            return self.update(id_, ["big"])
        if k < 0.86:
            return self.delete(id_)
        return self.change_key(id_)


def _run_history(src: psycopg.Connection, table: str, h: History) -> list[tuple]:
    """Fixed opening moves, then random statements in transactions of 1-3 statements; returns the
    events expected after the snapshot's."""
    events: list[tuple] = []

    def run(stmts):
        with src.transaction():
            for sql, params, ev in stmts:
                src.execute(sql.replace("{t}", table), params)
                events.extend(ev)

    # the TOASTed column of row 1 is left alone: Debezium cannot read it from the WAL
    run([h.update(1, ["note", "qty"])])
    run([h.change_key(2)])                              # a key change: d + tombstone + c
    run([h.delete(3), h.insert(), h.update(4, ["big"])])
    for _ in range(40):
        run([h.random_statement() for _ in range(h.rng.choice([1, 1, 2, 3]))])
    return events


# ---------------------------------------------------------------------------------- a capture

def _op(value: dict | None, schemas: bool) -> str:
    if value is None:
        return TOMBSTONE
    return (value["payload"] if schemas else value)["op"]


def _key_id(key: dict, schemas: bool) -> int:
    return (key["payload"] if schemas else key)["id"]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def capture(request, connect_worker):
    """One connector run of a variant: snapshot rows, the history, every message on the topic.
    Afterwards the connector, its slot and publication, the source table and the topic go."""
    name = request.param
    variant = VARIANTS[name]
    schemas = variant["schemas"]
    env = connect_worker
    table = unique_name(f"dbz_{name}")
    prefix = unique_name("dbz")
    topic = f"{prefix}.public.{table}"
    connector = prefix
    h = History(seed=21)
    try:
        with _source(env) as src:
            src.execute(DDL.format(name=table))
            src.execute(f"ALTER TABLE {table} ALTER COLUMN big SET STORAGE EXTERNAL")
            src.execute(f"ALTER TABLE {table} REPLICA IDENTITY {variant['identity']}")
            snapshot = [h.insert(h.new_row(h.fresh_id())) for _ in range(6)]
            for sql, params, _ in snapshot:
                src.execute(sql.replace("{t}", table), params)
            # rows 1 and 4 carry a TOASTed value (the opening moves rely on it)
            big = "".join(h.rng.choice("ABCDEFGHIJ") for _ in range(2500))
            src.execute(f"UPDATE {table} SET big = %s WHERE id IN (1, 4)", [big])
            h.rows[1]["big"] = h.rows[4]["big"] = big
            toast = scalar_src(src, f"SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = '{table}'::regclass")
            assert scalar_src(src, f"SELECT count(DISTINCT chunk_id) FROM {toast}") >= 2, "big is not stored out of line"
        create_topic(topic, 1)
        converter = "org.apache.kafka.connect.json.JsonConverter"
        config = {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "127.0.0.1", "database.port": env["SOURCE_PORT"], "database.user": "postgres",
            "database.password": "unused (trust)", "database.dbname": "postgres",
            "topic.prefix": prefix, "table.include.list": f"public.{table}",
            "plugin.name": "pgoutput", "slot.name": prefix, "slot.drop.on.stop": "true",
            "publication.name": prefix, "publication.autocreate.mode": "filtered",
            "snapshot.mode": "initial", "poll.interval.ms": "100",
            "key.converter": converter, "key.converter.schemas.enable": str(schemas).lower(),
            "value.converter": converter, "value.converter.schemas.enable": str(schemas).lower(),
            "topic.creation.default.replication.factor": "1", "topic.creation.default.partitions": "1",
            **variant["extra"],
        }
        status, body = _rest(env, "POST", "/connectors", {"name": connector, "config": config})
        assert status == 201, (status, body)
        def running():
            st, b = _rest(env, "GET", f"/connectors/{connector}/status")
            assert not (st == 200 and any(t["state"] == "FAILED" for t in b.get("tasks", []))), b
            return st == 200 and b["tasks"] and all(t["state"] == "RUNNING" for t in b["tasks"])
        wait_until(running, timeout=60, what=f"connector {connector} running (log: {env['CONNECT_LOG']})")
        wait_topic_count(topic, len(snapshot), timeout=60)   # the snapshot is read: stream from here
        with _source(env) as src:
            events = [("r", row["id"]) for row in sorted(h.rows.values(), key=lambda r: r["id"])]
            events += _run_history(src, table, h)
            final = [tuple(r) for r in src.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()]
            src.execute("SET TimeZone = 'UTC'")
            final_text = [list(r) for r in src.execute(
                f"SELECT {', '.join(c + '::text' for c in COLUMNS)} FROM {table} ORDER BY id").fetchall()]
        expected_rows = [tuple(h.rows[i][c] for c in COLUMNS) for i in sorted(h.rows)]
        assert final == expected_rows, "the model of the history went wrong"
        wait_topic_count(topic, len(events), timeout=60)
        msgs = consume_all(topic, timeout=30, min_messages=len(events))
        yield dict(name=name, schemas=schemas, identity=variant["identity"], topic=topic, table=table,
                   expected=events, final=final, final_text=final_text,
                   messages=[(json.loads(m["key"]), json.loads(m["value"]) if m["value"] is not None else None)
                             for m in msgs])
    finally:
        _rest(env, "DELETE", f"/connectors/{connector}")
        with _source(env) as src:
            # slot.drop.on.stop drops the slot when the task stops; a slot left by a failed run
            # would pin the source's WAL
            def slot_gone():
                row = src.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", [prefix]).fetchone()
                if row is not None and not row[0]:
                    src.execute("SELECT pg_drop_replication_slot(%s)", [prefix])
                    return True
                return row is None
            wait_until(slot_gone, timeout=30, what=f"replication slot {prefix} gone")
            src.execute(f"DROP PUBLICATION IF EXISTS {prefix}")
            src.execute(f"DROP TABLE IF EXISTS {table}")
        try:
            delete_topic(topic)
        except Exception as exc:  # noqa: BLE001 - do not mask the test's own failure
            print(f"warning: could not delete topic {topic}: {exc!r}")


def scalar_src(src: psycopg.Connection, sql: str):
    return src.execute(sql).fetchone()[0]


def _fixture_path(name: str) -> Path:
    return FIXTURES / f"postgres_{name}.jsonl"


def _write_fixture(cap: dict) -> None:
    """The captured messages, one JSON object a line: {"key": ..., "value": ... | null}; and
    beside it the source table's final state as PostgreSQL's text output, timestamptz in UTC
    (<name>.final.json)."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    with _fixture_path(cap["name"]).open("w") as f:
        for key, value in cap["messages"]:
            f.write(json.dumps({"key": key, "value": value}, ensure_ascii=False) + "\n")
    final = {
        "ddl": DDL.format(name="{table}"),
        "replica_identity": cap["identity"],
        "columns": COLUMNS,
        "rows": cap["final_text"],
    }
    rows = ",\n  ".join(json.dumps(r, ensure_ascii=False) for r in final.pop("rows"))
    head = json.dumps(final, ensure_ascii=False)[:-1]
    FIXTURES.joinpath(f"postgres_{cap['name']}.final.json").write_text(f'{head},\n "rows": [\n  {rows}\n]}}\n')


# ---------------------------------------------------------------------------------- the tests

@pytest.mark.timeout(240)
def test_real_debezium_events_arrive(capture):
    schemas = capture["schemas"]
    got = [(_op(v, schemas), _key_id(k, schemas)) for k, v in capture["messages"]]
    n_snap = sum(1 for op, _ in capture["expected"] if op == "r")
    # the snapshot's rows in any order, then the history's events exactly in order
    assert sorted(got[:n_snap]) == capture["expected"][:n_snap]
    assert got[n_snap:] == capture["expected"][n_snap:]
    for key, value in capture["messages"]:
        assert ("schema" in key and "payload" in key) == schemas
        if value is not None:
            assert ("schema" in value and "payload" in value) == schemas
    payloads = [(v["payload"] if schemas else v) for _, v in capture["messages"] if v is not None]
    assert {p["source"]["connector"] for p in payloads} == {"postgresql"}
    updates = [p for p in payloads if p["op"] == "u"]
    placeholders = [p for p in updates if p["after"]["big"] == PLACEHOLDER]
    if capture["identity"] == "DEFAULT":
        # the first update (row 1, big untouched) cannot carry big's value: the placeholder
        assert updates[0]["after"]["id"] == 1 and updates[0]["after"]["big"] == PLACEHOLDER
        assert all(p["before"] is None for p in updates)
    else:
        assert all(p["before"] is not None for p in updates)
    print(f"{capture['name']}: {len(got)} messages, {len(placeholders)} TOAST placeholders")
    if os.environ.get("PI_CAPTURE_DEBEZIUM_FIXTURES") == "1":
        _write_fixture(capture)
    # the committed sample is what this connector emits for this history
    sample = [json.loads(line) for line in _fixture_path(capture["name"]).read_text().splitlines()]
    assert [(_op(m["value"], schemas), _key_id(m["key"], schemas)) for m in sample][n_snap:] == got[n_snap:]


@pytest.mark.timeout(240)
def test_real_debezium_applied_exactly_once(capture, fresh_db):
    """Needs format 'debezium' (issue 21): until it exists, consume_begin raises 22023 and this
    test fails; it is not skipped."""
    with pg_connect(fresh_db) as conn:
        conn.execute(DDL.format(name="target"))
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'target', format := 'debezium', "
                           "start_offset := -2)", [capture["topic"]]).fetchone()[0]
    n = len(capture["messages"])
    wait_until(lambda: scalar(fresh_db, 'SELECT coalesce(sum("offset"), 0) FROM pipeline_kafka.offsets '
                                        'WHERE consumer_id = %s', [cid]) == n,
               timeout=60, what=f"{n} Debezium events committed")
    assert query(fresh_db, "SELECT * FROM target ORDER BY id") == capture["final"]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
