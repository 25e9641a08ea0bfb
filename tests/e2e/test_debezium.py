"""format 'debezium': Debezium's JSON change events (with or without the schema/payload wrapper)
applied to a keyed table exactly once. A seeded random history of creates, updates, deletes,
tombstones, key changes and TOAST placeholders (generated here as Debezium would write it), keyed
by row over several partitions, ends in the table as in the model, also across a kill -9 of the
postmaster (rows and offsets always agree); events captured from a real Debezium
(tests/e2e/fixtures/debezium) end in the source's final state; truncates apply only with mode
'replicate'; every Connect encoding decodes exactly; bad events are dead letters."""
from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import random
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records, log_since,
                       pg_connect, pg_kill9_postmaster, pg_start, produce, query, scalar, wait_until)

FIXTURES = Path(__file__).parent / "fixtures" / "debezium"
PLACEHOLDER = "__debezium_unavailable_value"
EPOCH = dt.date(1970, 1, 1)
TABLE = ("CREATE TABLE {name} (id int PRIMARY KEY, name text, price numeric(14,2), day date, at timestamp, "
         "doc text, n bigint)")
COLUMNS = ["id", "name", "price", "day", "at", "doc", "n"]


def _begin(conn, topic: str, relation: str, **kw) -> int:
    conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s, format := 'debezium', start_offset := -2{args})",
                        [topic, relation] + [kw[n] for n in names]).fetchone()[0]


def _committed(db: str, cid: int) -> int:
    return scalar(db, 'SELECT coalesce(sum("offset"), 0)::bigint FROM pipeline_kafka.offsets WHERE consumer_id = %s', [cid])


def _wait_committed(db: str, cid: int, n: int, timeout: float = 90) -> None:
    wait_until(lambda: _committed(db, cid) == n, timeout=timeout, what=f"{n} change events committed")


# -- Debezium's JSON, as its JsonConverter writes it ------------------------------------------

def _decimal_b64(v: decimal.Decimal, scale: int) -> str:
    with decimal.localcontext() as ctx:
        ctx.prec = 100  # the default 28 digits would round a 38-digit value
        unscaled = int(v.scaleb(scale))
    n = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(n, "big", signed=True)).decode()


ROW_SCHEMA = [
    {"type": "int32", "optional": False, "field": "id"},
    {"type": "string", "optional": True, "field": "name"},
    {"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
     "parameters": {"scale": "2", "connect.decimal.precision": "14"}, "field": "price"},
    {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "version": 1, "field": "day"},
    {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp", "version": 1, "field": "at"},
    {"type": "string", "optional": True, "field": "doc"},
    {"type": "int64", "optional": True, "field": "n"},
]
KEY_SCHEMA = {"type": "struct", "optional": False, "name": "src.public.t.Key", "fields": [ROW_SCHEMA[0]]}


def _envelope_schema(fields: list) -> dict:
    row = {"type": "struct", "optional": True, "name": "src.public.t.Value", "fields": fields}
    return {"type": "struct", "optional": False, "name": "src.public.t.Envelope", "fields": [
        dict(row, field="before"), dict(row, field="after"),
        {"type": "struct", "optional": False, "name": "io.debezium.connector.postgresql.Source", "field": "source",
         "fields": [{"type": "int64", "optional": False, "field": "ts_ms"}]},
        {"type": "string", "optional": False, "field": "op"},
        {"type": "int64", "optional": True, "field": "ts_ms"}]}


def _encode_row(row: dict | None, wrapped: bool) -> dict | None:
    """A model row (Python values; PLACEHOLDER for an unchanged TOASTed doc) as Debezium writes it."""
    if row is None:
        return None
    out = {}
    for c in COLUMNS:
        v = row.get(c)
        if v is None or v == PLACEHOLDER:
            out[c] = v
        elif c == "price":
            out[c] = _decimal_b64(v, 2) if wrapped else str(v)
        elif c == "day":
            out[c] = (v - EPOCH).days if wrapped else v.isoformat() + "Z"
        elif c == "at":
            micros = (v - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
            out[c] = micros if wrapped else v.isoformat() + "Z"
        else:
            out[c] = v
    if "id" in row and set(row) == {"id"}:
        out = {c: (row["id"] if c == "id" else None) for c in COLUMNS}
    return out


def event(op: str, before: dict | None, after: dict | None, wrapped: bool, ts: int = 1_700_000_000_000) -> str:
    payload = {"before": _encode_row(before, wrapped), "after": _encode_row(after, wrapped),
               "source": {"ts_ms": ts}, "op": op, "ts_ms": ts + 1}
    if not wrapped:
        return json.dumps(payload)
    return json.dumps({"schema": _envelope_schema(ROW_SCHEMA), "payload": payload})


def key(k: int, wrapped: bool) -> str:
    return json.dumps({"schema": KEY_SCHEMA, "payload": {"id": k}} if wrapped else {"id": k})


# -- the model ---------------------------------------------------------------------------------

def _random_row(rng: random.Random, k: int) -> dict:
    return {
        "id": k,
        "name": rng.choice([None, "ünïcødé", "tab\there", "back\\slash", "quote'\"", f"name {rng.randrange(10**6)}"]),
        "price": None if rng.random() < 0.1 else decimal.Decimal(rng.randrange(-10**12, 10**12)).scaleb(-2),
        "day": None if rng.random() < 0.1 else EPOCH + dt.timedelta(days=rng.randrange(-40000, 40000)),
        "at": None if rng.random() < 0.1 else dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=rng.randrange(-2 * 10**15, 4 * 10**15)),
        "doc": "big " * rng.randrange(1, 50) + str(rng.random()),
        "n": rng.randrange(-2**63, 2**63),
    }


def history(seed: int, n: int, wrapped: bool, keys: int = 400) -> tuple[list[tuple[str, str | None]], dict]:
    """n messages (key, value; value None = tombstone) of a random history, and the final table."""
    rng = random.Random(seed)
    state: dict[int, dict] = {}
    out: list[tuple[str, str | None]] = []
    # the snapshot
    for k in range(1, keys // 4):
        state[k] = _random_row(rng, k)
        out.append((key(k, wrapped), event("r", None, state[k], wrapped)))
    while len(out) < n:
        r = rng.random()
        k = rng.randrange(1, keys)
        if k not in state:
            state[k] = _random_row(rng, k)
            out.append((key(k, wrapped), event("c", None, state[k], wrapped)))
        elif r < 0.55:
            new = _random_row(rng, k)
            after = dict(new)
            if rng.random() < 0.4:  # the TOASTed doc did not change: Debezium sends its placeholder
                new["doc"] = state[k]["doc"]
                after["doc"] = PLACEHOLDER
            # REPLICA IDENTITY DEFAULT: before is null in updates
            out.append((key(k, wrapped), event("u", None, after, wrapped)))
            state[k] = new
        elif r < 0.8:
            # a delete (before holds the key only, or nothing: the message key tells), then its tombstone
            before = {"id": k} if rng.random() < 0.8 else None
            out.append((key(k, wrapped), event("d", before, None, wrapped)))
            out.append((key(k, wrapped), None))
            del state[k]
        else:
            # a key change: d of the old key (+ tombstone), c of the new one
            new_k = rng.randrange(keys, 4 * keys)
            if new_k in state:
                continue
            row = dict(state.pop(k), id=new_k)
            out.append((key(k, wrapped), event("d", {"id": k}, None, wrapped)))
            out.append((key(k, wrapped), None))
            out.append((key(new_k, wrapped), event("c", None, row, wrapped)))
            state[new_k] = row
    return out, state


def _table(db: str, name: str = "t") -> dict:
    rows = query(db, f"SELECT {', '.join(COLUMNS)} FROM {name}")
    return {r[0]: dict(zip(COLUMNS, r)) for r in rows}


def _assert_same(db: str, expected: dict, name: str = "t") -> None:
    got = _table(db, name)
    assert got.keys() == expected.keys(), (sorted(set(got) ^ set(expected)))[:20]
    bad = [k for k in expected if got[k] != expected[k]]
    assert not bad, [(got[k], expected[k]) for k in bad[:3]]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("wrapped", [True, False], ids=["schema", "noschema"])
def test_random_history_ends_as_the_source_table(fresh_db, topic_factory, wrapped):
    topic = topic_factory(4)
    msgs, final = history(seed=21 if wrapped else 22, n=3000, wrapped=wrapped)
    produce(topic, [v for _, v in msgs], keys=[k for k, _ in msgs], timeout=120)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        cid = _begin(conn, topic, "t", batchsize=250)
    _wait_committed(fresh_db, cid, len(msgs))
    _assert_same(fresh_db, final)
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


def _model_at(msgs: list, positions: list, committed: dict) -> dict:
    """The model after the messages below each partition's committed offset."""
    state: dict[int, dict] = {}
    for (k, v), (p, o) in zip(msgs, positions):
        if o >= committed.get(p, 0) or v is None:
            continue
        e = json.loads(v)
        e = e.get("payload", e)
        row = e["after"]
        if e["op"] == "d":
            state.pop(json.loads(k).get("payload", json.loads(k))["id"], None)
        else:
            new = {c: row[c] for c in COLUMNS}
            if new["doc"] == PLACEHOLDER:
                new["doc"] = state[new["id"]]["doc"]
            state[new["id"]] = new
    return state


def _decoded(db: str, state: dict) -> dict:
    """The model's encoded rows as PostgreSQL reads them (what _table returns)."""
    out = {}
    for k, r in state.items():
        out[k] = {
            "id": r["id"], "name": r["name"], "doc": r["doc"], "n": r["n"],
            "price": None if r["price"] is None else decimal.Decimal(r["price"]),
            "day": None if r["day"] is None else dt.date.fromisoformat(r["day"].rstrip("Z")),
            "at": None if r["at"] is None else dt.datetime.fromisoformat(r["at"].rstrip("Z")),
        }
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exactly_once_across_kill9_mid_history(fresh_db, topic_factory):
    """kill -9 of the postmaster while batches commit: after the restart the table is exactly the
    model after the committed offsets of each partition (rows and offsets in one transaction),
    and at the end the source's final state."""
    db = fresh_db
    topic = topic_factory(4)
    msgs, final = history(seed=2121, n=6000, wrapped=False)
    half = len(msgs) // 2
    positions = produce(topic, [v for _, v in msgs[:half]], keys=[k for k, _ in msgs[:half]], timeout=120)
    with pg_connect(db) as conn:
        conn.execute(TABLE.format(name="t"))
        cid = _begin(conn, topic, "t", batchsize=50, parallelism=2)

    def consistent() -> None:
        with pg_connect(db) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            committed = dict(conn.execute('SELECT partition, "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                                          [cid]).fetchall())
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM t").fetchall()
            conn.execute("COMMIT")
        got = {r[0]: dict(zip(COLUMNS, r)) for r in rows}
        expected = _decoded(db, _model_at(msgs, all_positions, committed))
        assert got == expected, (sum(committed.values()), len(got), len(expected))

    all_positions = list(positions)
    seen = wait_until(lambda: (lambda v: v if v >= half // 5 else 0)(_committed(db, cid)), timeout=60, interval=0.01,
                      what="a fifth of the first half applied")
    pg_kill9_postmaster()
    pg_start()
    consistent()
    assert _committed(db, cid) >= seen
    errors: list[BaseException] = []

    def producer():
        try:
            all_positions.extend(produce(topic, [v for _, v in msgs[half:]], keys=[k for k, _ in msgs[half:]], timeout=120))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    th.join(timeout=150)
    assert not th.is_alive() and not errors, errors
    wait_until(lambda: _committed(db, cid) >= half + 300, timeout=60, interval=0.01, what="some of the second half applied")
    pg_kill9_postmaster()
    pg_start()
    consistent()
    _wait_committed(db, cid, len(msgs), timeout=120)
    consistent()
    _assert_same(db, _decoded(db, _model_at(msgs, all_positions, {p: 10**9 for p in range(4)})))
    assert len(final) == scalar(db, "SELECT count(*) FROM t")
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


def _fixture(name: str) -> tuple[list[tuple[str, str | None]], dict]:
    lines = [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    msgs = [(json.dumps(m["key"]), None if m["value"] is None else json.dumps(m["value"])) for m in lines]
    return msgs, json.loads((FIXTURES / f"{name}.final.json").read_text())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["postgres_schemas", "postgres_noschema"])
def test_real_debezium_events_end_as_the_source(fresh_db, topic_factory, name):
    """Events a real Debezium 3.5 captured (tests/e2e/fixtures/debezium/README.md), both wrappers."""
    msgs, final = _fixture(name)
    topic = topic_factory(1)
    produce(topic, [v for _, v in msgs], keys=[k for k, _ in msgs], partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(final["ddl"].format(table="target"))
        # one batch: a key change's c carrying a TOAST placeholder takes the old row's value only
        # when its d is in the same batch (README, Debezium change events)
        cid = _begin(conn, topic, "target")
    _wait_committed(fresh_db, cid, len(msgs))
    cols = ", ".join(f"{c}::text" for c in final["columns"])
    with pg_connect(fresh_db) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        rows = [list(r) for r in conn.execute(f"SELECT {cols} FROM target ORDER BY id").fetchall()]
    assert rows == final["rows"]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["upsert", "replicate"])
def test_truncate_applies_only_with_mode_replicate(fresh_db, topic_factory, log_mark, mode):
    topic = topic_factory(1)
    rows = [{"id": i, "name": f"r{i}"} for i in range(4)]
    msgs = [event("c", None, rows[0], False), event("c", None, rows[1], False),
            json.dumps({"before": None, "after": None, "source": {"ts_ms": 1}, "op": "t", "ts_ms": 2}),
            event("c", None, rows[2], False)]
    produce(topic, msgs[:2], partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        cid = _begin(conn, topic, "t", mode=mode)
    _wait_committed(fresh_db, cid, 2)
    produce(topic, msgs[2:], partition=0)
    _wait_committed(fresh_db, cid, 4)
    ids = [r[0] for r in query(fresh_db, "SELECT id FROM t ORDER BY id")]
    if mode == "replicate":
        assert ids == [2]
    else:
        assert ids == [0, 1, 2]
        assert "a truncate event of" in log_since(log_mark)
    assert scalar(fresh_db, "SELECT mode FROM pipeline_kafka.consumers WHERE id = %s", [cid]) == mode


@pytest.mark.timeout(120)
def test_connect_encodings_decode_exactly(fresh_db, topic_factory):
    """With the schema wrapper every Connect/Debezium encoding loads its exact value."""
    f = lambda ty, field, name=None, **params: dict({"type": ty, "optional": True, "field": field},  # noqa: E731
                                                   **({"name": name} if name else {}),
                                                   **({"parameters": params} if params else {}))
    fields = [
        {"type": "int32", "optional": False, "field": "id"},
        f("bytes", "d38", "org.apache.kafka.connect.data.Decimal", scale="10"),
        f("struct", "vsd", "io.debezium.data.VariableScaleDecimal"),
        f("int32", "day", "io.debezium.time.Date"),
        f("int32", "t_ms", "io.debezium.time.Time"),
        f("int64", "t_us", "io.debezium.time.MicroTime"),
        f("int64", "t_ns", "io.debezium.time.NanoTime"),
        f("int64", "ts_ms", "io.debezium.time.Timestamp"),
        f("int64", "ts_us", "io.debezium.time.MicroTimestamp"),
        f("int64", "ts_ns", "io.debezium.time.NanoTimestamp"),
        f("string", "tstz", "io.debezium.time.ZonedTimestamp"),
        f("string", "js", "io.debezium.data.Json"),
        f("string", "u", "io.debezium.data.Uuid"),
        f("bytes", "b"),
        f("double", "x"),
        f("boolean", "ok"),
        f("int16", "small"),
    ]
    d38 = decimal.Decimal("-9999999999999999999999999999.9999999999")
    u = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    after = {
        "id": 1, "d38": _decimal_b64(d38, 10),
        "vsd": {"scale": 3, "value": base64.b64encode((-12345).to_bytes(2, "big", signed=True)).decode()},
        "day": -719162,  # 0001-01-01
        "t_ms": 45296789, "t_us": 45296789012, "t_ns": 45296789012000,
        "ts_ms": 1700000000123, "ts_us": -1, "ts_ns": 1700000000123456000,
        "tstz": "2024-01-02T03:04:05.123456Z", "js": '{"a": [1, 2]}', "u": str(u),
        "b": base64.b64encode(b"\x00\xff\\\t").decode(), "x": 0.1, "ok": False, "small": -32768,
    }
    value = json.dumps({"schema": _envelope_schema(fields), "payload": {"before": None, "after": after, "op": "c",
                                                                       "source": {"ts_ms": 1}, "ts_ms": 2}})
    topic = topic_factory(1)
    produce(topic, [value], key='{"id": 1}', partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE e (id int PRIMARY KEY, d38 numeric(38,10), vsd numeric, day date, t_ms time, "
                     "t_us time, t_ns time, ts_ms timestamp, ts_us timestamp, ts_ns timestamp(6), tstz timestamptz, "
                     "js jsonb, u uuid, b bytea, x double precision, ok boolean, small smallint)")
        cid = _begin(conn, topic, "e")
    _wait_committed(fresh_db, cid, 1)
    assert query(fresh_db, "SELECT sqlstate, error FROM pipeline_kafka.dead_letters") == []
    got = query(fresh_db, "SELECT d38, vsd, day, t_ms, t_us, t_ns, ts_ms, ts_us, ts_ns, tstz, js, u, b, x, ok, small FROM e")[0]
    assert got == (
        d38, decimal.Decimal("-12.345"), dt.date(1, 1, 1), dt.time(12, 34, 56, 789000), dt.time(12, 34, 56, 789012),
        dt.time(12, 34, 56, 789012), dt.datetime(2023, 11, 14, 22, 13, 20, 123000),
        dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(2023, 11, 14, 22, 13, 20, 123456),
        dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc), {"a": [1, 2]}, u, b"\x00\xff\\\t", 0.1, False,
        -32768)


@pytest.mark.timeout(120)
def test_bad_events_are_dead_letters_and_the_rest_applies(fresh_db, topic_factory):
    topic = topic_factory(1)
    good = [event("c", None, {"id": i, "name": f"g{i}"}, False) for i in range(3)]
    msgs = [
        (b"1", good[0]),
        (b"x", "{not json"),                                               # 22032
        (b"x", json.dumps({"id": 5, "name": "a plain row"})),            # 22P02: no op
        (b"x", json.dumps({"before": None, "after": {"id": 6}, "op": "x"})),  # 22P02: unknown op
        (b"x", json.dumps({"before": None, "after": {"name": "keyless"}, "op": "c"})),  # 22004
        (None, json.dumps({"before": None, "after": None, "op": "d"})),  # 22004: no key anywhere
        (b"x", json.dumps({"before": None, "after": {"id": "seven"}, "op": "c"})),  # 22P02 from int4's input
        (b"x", json.dumps({"before": None, "after": {"id": 8, "n": "many"}, "op": "u"})),  # 22P02 of bigint
        (b"2", good[1]),
        (b"3", good[2]),
    ]
    for k, v in msgs:
        produce(topic, [v], key=k, partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        cid = _begin(conn, topic, "t")
    _wait_committed(fresh_db, cid, len(msgs))
    assert [r[0] for r in query(fresh_db, "SELECT id FROM t ORDER BY id")] == [0, 1, 2]
    dead = query(fresh_db, 'SELECT "offset", sqlstate, error, value FROM pipeline_kafka.dead_letters ORDER BY "offset"')
    assert [(o, s) for o, s, _, _ in dead] == [(1, "22032"), (2, "22P02"), (3, "22P02"), (4, "22004"), (5, "22004"),
                                              (6, "22P02"), (7, "22P02")]
    assert [bytes(v) for _, _, _, v in dead] == [m[1].encode() for m in msgs[1:8]]
    assert 'no "op"' in dead[1][2] and 'unknown change event op "x"' in dead[2][2]
    assert 'key column "id"' in dead[3][2]


@pytest.mark.timeout(60)
def test_consume_begin_needs_a_keyed_table(fresh_db, topic_factory):
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE nokey (id int, v text)")
        conn.execute("CREATE TABLE k (id int PRIMARY KEY, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        with pytest.raises(psycopg.errors.InvalidColumnReference, match="has no primary key: give key_columns for format debezium"):
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'nokey', format := 'debezium')", [topic])
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="mode 'upsert' .* or 'replicate'"):
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'k', format := 'debezium', mode := 'append')", [topic])
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="format debezium-avro applies change events"):
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'k', format := 'debezium-avro', mode := 'append')", [topic])
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="not supported for stream-partitioned consumers"):
            conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, format := 'debezium')", [topic])


@pytest.mark.timeout(120)
def test_changes_are_written_as_the_tables_owner(pg_role, fresh_db, topic_factory):
    """Every statement of the apply (truncate, deletes, upserts, the read of a key change's old
    row) runs as the table's owner: its triggers see the owner as current_user, and a table the
    owner may not read (the extension's catalog) is not reachable through them."""
    alice = pg_role()
    topic = topic_factory(1)
    c = lambda k, doc: event("c", None, {"id": k, "name": "n", "doc": doc}, False)  # noqa: E731
    msgs = [c(1, "one"), c(2, "two"),
            json.dumps({"before": {"id": 2}, "after": None, "op": "d", "source": {"txId": 7, "lsn": 70}}),
            json.dumps({"before": None, "after": {"id": 3, "name": "moved", "doc": PLACEHOLDER}, "op": "c",
                        "source": {"txId": 7, "lsn": 70}}),
            json.dumps({"before": None, "after": None, "op": "t", "source": {}}),
            c(4, "four")]
    produce(topic, msgs[:2], partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        conn.execute(f"""
            CREATE TABLE seen (op text, who text);
            CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO seen VALUES (TG_OP, current_user); RETURN NULL; END $$;
            CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION note();
            ALTER TABLE t OWNER TO "{alice}";
            ALTER TABLE seen OWNER TO "{alice}";
            ALTER FUNCTION note() OWNER TO "{alice}";""")
        cid = _begin(conn, topic, "t", mode="replicate")
    _wait_committed(fresh_db, cid, 2)
    produce(topic, msgs[2:4], partition=0)
    _wait_committed(fresh_db, cid, 4)
    # the key change 2 -> 3 kept the old row's doc
    assert query(fresh_db, "SELECT id, name, doc FROM t ORDER BY id") == [(1, "n", "one"), (3, "moved", "two")]
    produce(topic, msgs[4:], partition=0)
    _wait_committed(fresh_db, cid, 6)
    assert query(fresh_db, "SELECT id FROM t") == [(4,)]
    assert {r[0] for r in query(fresh_db, "SELECT DISTINCT who FROM seen")} == {alice}
    assert {r[0] for r in query(fresh_db, "SELECT DISTINCT op FROM seen")} == {"INSERT", "DELETE"}


@pytest.mark.timeout(180)
def test_kinesis_records_holding_the_same_events(stream_factory, fresh_db):
    """pipeline_kinesis: the same JSON events in records (partition key = the row key) end as the model."""
    stream, _ = stream_factory(2)
    kinesis_add_endpoint(fresh_db)
    msgs, final = history(seed=23, n=600, wrapped=True, keys=100)
    # Kinesis has no tombstones: a delete is its d event alone
    kinesis_put_records(stream, [(k, v) for k, v in msgs if v is not None])
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2, format="debezium", batchsize=100)
    wait_until(lambda: len(_table(fresh_db)) == len(final) and _table(fresh_db) == final, timeout=120,
               what="the table equal to the model")
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0


@pytest.mark.timeout(60)
def test_preview_of_change_events(fresh_db, topic_factory):
    """preview (whose mode defaults to 'append' in SQL) previews change events as consume_begin applies them."""
    topic = topic_factory(1)
    produce(topic, [event("c", None, {"id": 1, "name": "a"}, False), "junk"], key='{"id": 1}', partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        rows = conn.execute("SELECT \"offset\", action, row->>'name', sqlstate FROM pipeline_kafka.preview(%s, 't', "
                            "format := 'debezium')", [topic]).fetchall()
    assert rows == [(0, "inserted", "a", None), (1, "error", None, "22P02")]
    assert scalar(fresh_db, "SELECT count(*) FROM t") == 0


@pytest.mark.timeout(120)
def test_placeholders_keep_the_stored_value_and_a_new_row_gets_the_default(fresh_db, topic_factory):
    topic = topic_factory(1)
    u = lambda k, doc, name="n": event("u", None, {"id": k, "name": name, "doc": doc}, False)  # noqa: E731
    produce(topic, [event("c", None, {"id": 1, "name": "a", "doc": "stored"}, False)], partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text, doc text NOT NULL DEFAULT 'dflt', "
                     "strict text NOT NULL)")
        conn.execute("ALTER TABLE t ALTER COLUMN strict SET DEFAULT 's'")
        cid = _begin(conn, topic, "t")
    _wait_committed(fresh_db, cid, 1)
    conn_msgs = [u(1, PLACEHOLDER, "b"),   # keeps doc
                 u(2, PLACEHOLDER),        # a row the table lacks: doc gets its default
                 json.dumps({"before": None, "after": {"id": 3, "name": "x", "strict": PLACEHOLDER}, "op": "u"})]
    produce(topic, conn_msgs, partition=0)
    _wait_committed(fresh_db, cid, 4)
    assert query(fresh_db, "SELECT id, name, doc, strict FROM t ORDER BY id") == [
        (1, "b", "stored", "s"), (2, "n", "dflt", "s"), (3, "x", "dflt", "s")]
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE t ALTER COLUMN strict DROP DEFAULT")
    produce(topic, [json.dumps({"before": None, "after": {"id": 4, "name": "y", "strict": PLACEHOLDER}, "op": "c"}),
                    u(1, PLACEHOLDER, "c")], partition=0)
    _wait_committed(fresh_db, cid, 6)
    # a new row whose NOT NULL column Debezium could not send, without a default: a dead letter
    assert query(fresh_db, 'SELECT "offset", sqlstate FROM pipeline_kafka.dead_letters') == [(4, "23502")]
    assert query(fresh_db, "SELECT id, name, doc FROM t ORDER BY id") == [(1, "c", "stored"), (2, "n", "dflt"),
                                                                        (3, "x", "dflt")]
    # fixed, the dead letter applies through retry_dead_letters (the same writer)
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE t ALTER COLUMN strict SET DEFAULT 'later'")
        assert conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't')", [topic]).fetchone()[0] == 1
    assert query(fresh_db, "SELECT id, name, strict FROM t WHERE id = 4") == [(4, "y", "later")]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
