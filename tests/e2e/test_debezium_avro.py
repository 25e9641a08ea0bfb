"""format 'debezium-avro': Debezium change events as Kafka Connect's AvroConverter writes them
(Confluent-framed Avro, the envelope's and the key's schemas in the registry under <topic>-value
and <topic>-key), decoded by the Avro decoder into the events format 'debezium' applies. A seeded
random history of creates, updates, deletes, tombstones, key changes and TOAST placeholders, with
decimal, date (io.debezium.time.Date) and timestamp (io.debezium.time.MicroTimestamp) columns,
ends in the table as in the model; an unknown schema id and a corrupt body are dead letters and
the rest applies; Kinesis records holding the same bytes end the same; preview decodes them too."""
from __future__ import annotations

import datetime as dt
import io
import random
import uuid

import fastavro
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, confluent_frame, kinesis_add_endpoint, kinesis_consume_begin,
                       kinesis_put_records, pg_connect, produce, query, register_schema, scalar, wait_until)
from test_debezium import COLUMNS, EPOCH, PLACEHOLDER, TABLE, _assert_same, _random_row, _table

pytestmark = pytest.mark.timeout(240)


def _opt(t) -> list:
    return ["null", t]


VALUE = {"type": "record", "name": "Value", "namespace": "src.public.t", "fields": [
    {"name": "id", "type": {"type": "int", "connect.type": "int32"}},
    {"name": "name", "type": _opt("string"), "default": None},
    {"name": "price", "type": _opt({"type": "bytes", "scale": 2, "precision": 14, "connect.version": 1,
                                    "connect.parameters": {"scale": "2", "connect.decimal.precision": "14"},
                                    "connect.name": "org.apache.kafka.connect.data.Decimal",
                                    "logicalType": "decimal"}), "default": None},
    {"name": "day", "type": _opt({"type": "int", "connect.version": 1, "connect.name": "io.debezium.time.Date"}),
     "default": None},
    {"name": "at", "type": _opt({"type": "long", "connect.version": 1,
                                 "connect.name": "io.debezium.time.MicroTimestamp"}), "default": None},
    {"name": "doc", "type": _opt("string"), "default": None},
    {"name": "n", "type": _opt("long"), "default": None},
], "connect.name": "src.public.t.Value"}
ENVELOPE = {"type": "record", "name": "Envelope", "namespace": "src.public.t", "fields": [
    {"name": "before", "type": _opt(VALUE), "default": None},
    {"name": "after", "type": _opt("Value"), "default": None},
    {"name": "source", "type": {"type": "record", "name": "Source", "namespace": "io.debezium.connector.postgresql",
                                "fields": [{"name": "ts_ms", "type": "long"},
                                           {"name": "txId", "type": _opt("long"), "default": None},
                                           {"name": "lsn", "type": _opt("long"), "default": None}]}},
    {"name": "op", "type": "string"},
    {"name": "ts_ms", "type": _opt("long"), "default": None},
    {"name": "transaction", "type": _opt({"type": "record", "name": "block", "namespace": "event",
                                          "fields": [{"name": "id", "type": "string"},
                                                     {"name": "total_order", "type": "long"}]}), "default": None},
], "connect.name": "src.public.t.Envelope"}
KEY = {"type": "record", "name": "Key", "namespace": "src.public.t",
       "fields": [{"name": "id", "type": "int"}], "connect.name": "src.public.t.Key"}
PARSED_ENVELOPE = fastavro.parse_schema(ENVELOPE)
PARSED_KEY = fastavro.parse_schema(KEY)


def _avro(schema_id: int, parsed, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return confluent_frame(schema_id, buf.getvalue())


def _row(row: dict | None) -> dict | None:
    """A model row as the AvroConverter writes it (PLACEHOLDER for an unchanged TOASTed doc)."""
    if row is None:
        return None
    out = {c: row.get(c) for c in COLUMNS}
    if out["day"] is not None:
        out["day"] = (out["day"] - EPOCH).days
    if out["at"] is not None:
        out["at"] = (out["at"] - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)
    return out


class Ids:
    def __init__(self, topic: str):
        self.value = register_schema(f"{topic}-value", ENVELOPE)
        self.key = register_schema(f"{topic}-key", KEY)

    def event(self, op: str, before: dict | None, after: dict | None, lsn: int) -> bytes:
        tx = {"id": f"{lsn}:{lsn}", "total_order": 1} if lsn % 2 else None
        return _avro(self.value, PARSED_ENVELOPE, {
            "before": _row(before), "after": _row(after), "op": op, "ts_ms": 1_700_000_000_001,
            "source": {"ts_ms": 1_700_000_000_000, "txId": lsn // 3, "lsn": lsn}, "transaction": tx})

    def key_of(self, k: int) -> bytes:
        return _avro(self.key, PARSED_KEY, {"id": k})


def history(ids: Ids, seed: int, n: int, keys: int = 150, keyed_deletes: bool = False) -> tuple[list[tuple[bytes, bytes | None]], dict]:
    """n messages (key, value; value None = tombstone) of a random history, and the final table.
    A delete's before holds the key, or (unless keyed_deletes) is null: the message key tells."""
    rng = random.Random(seed)
    state: dict[int, dict] = {}
    out: list[tuple[bytes, bytes | None]] = []
    lsn = 1000
    for k in range(1, keys // 4):
        state[k] = _random_row(rng, k)
        out.append((ids.key_of(k), ids.event("r", None, state[k], lsn)))
    while len(out) < n:
        lsn += 1
        r = rng.random()
        k = rng.randrange(1, keys)
        if k not in state:
            state[k] = _random_row(rng, k)
            out.append((ids.key_of(k), ids.event("c", None, state[k], lsn)))
        elif r < 0.55:
            new = _random_row(rng, k)
            after = dict(new)
            if rng.random() < 0.4:
                new["doc"] = state[k]["doc"]
                after["doc"] = PLACEHOLDER
            before = dict(state[k]) if rng.random() < 0.3 else None  # REPLICA IDENTITY FULL or DEFAULT
            out.append((ids.key_of(k), ids.event("u", before, after, lsn)))
            state[k] = new
        elif r < 0.8:
            before = {"id": k} if keyed_deletes or rng.random() < 0.8 else None
            out.append((ids.key_of(k), ids.event("d", before, None, lsn)))
            out.append((ids.key_of(k), None))
            del state[k]
        else:
            new_k = rng.randrange(keys, 4 * keys)
            if new_k in state:
                continue
            row = dict(state.pop(k), id=new_k)
            out.append((ids.key_of(k), ids.event("d", {"id": k}, None, lsn)))
            out.append((ids.key_of(k), None))
            out.append((ids.key_of(new_k), ids.event("c", None, row, lsn)))
            state[new_k] = row
    return out, state


def _begin(conn, topic: str, registry: str, **kw) -> int:
    conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (registry,))
    args = "".join(f", {n} := %s" for n in kw)
    return conn.execute(
        f"SELECT pipeline_kafka.consume_begin(%s, 't', format := 'debezium-avro', start_offset := -2{args})",
        [topic, *kw.values()]).fetchone()[0]


def _wait_committed(db: str, cid: int, n: int) -> None:
    sql = 'SELECT coalesce(sum("offset"), 0)::bigint FROM pipeline_kafka.offsets WHERE consumer_id = %s'
    wait_until(lambda: scalar(db, sql, [cid]) == n, timeout=120, what=f"{n} change events committed")


def test_random_history_ends_as_the_source_table(fresh_db, topic_factory, schema_registry):
    topic = topic_factory(3)
    msgs, final = history(Ids(topic), seed=31, n=500)
    produce(topic, [v for _, v in msgs], keys=[k for k, _ in msgs], timeout=120)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        cid = _begin(conn, topic, schema_registry, batchsize=60)
    _wait_committed(fresh_db, cid, len(msgs))
    _assert_same(fresh_db, final)
    assert query(fresh_db, "SELECT sqlstate, error FROM pipeline_kafka.dead_letters") == []


def test_bad_events_are_dead_letters_and_the_rest_applies(fresh_db, topic_factory, schema_registry):
    topic = topic_factory(1)
    ids = Ids(topic)
    rows = [{"id": i, "name": f"g{i}", "price": None, "day": EPOCH, "at": dt.datetime(2024, 2, 29, 12, 30, 0, 123456),
             "doc": "d", "n": 1} for i in range(3)]
    good = [ids.event("c", None, r, 10 + i) for i, r in enumerate(rows)]
    unknown = confluent_frame(987654321, good[0][5:])
    corrupt = good[1][:-9]
    not_framed = b'{"op": "c"}'
    msgs = [good[0], unknown, corrupt, not_framed, good[1], good[2]]
    for v in msgs:
        produce(topic, [v], key=ids.key_of(0), partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        cid = _begin(conn, topic, schema_registry)
    _wait_committed(fresh_db, cid, len(msgs))
    assert query(fresh_db, "SELECT id, name, day, at FROM t ORDER BY id") == [
        (r["id"], r["name"], r["day"], r["at"]) for r in rows]
    dead = query(fresh_db, 'SELECT "offset", sqlstate, error, value FROM pipeline_kafka.dead_letters ORDER BY "offset"')
    assert [(o, s) for o, s, _, _ in dead] == [(1, "22P02"), (2, "22P03"), (3, "22P02")]
    assert "schema id 987654321 not found in the schema registry" in dead[0][2]
    assert [bytes(v) for _, _, _, v in dead] == msgs[1:4]


@pytest.mark.timeout(180)
def test_kinesis_records_holding_the_same_events(stream_factory, fresh_db, schema_registry):
    """pipeline_kinesis: the same bytes in records (no tombstones in Kinesis) end as the model."""
    stream, _ = stream_factory(1)
    # a partition key is text, not the Avro key: every delete carries its key in before
    msgs, final = history(Ids(f"k{uuid.uuid4().hex[:8]}"), seed=32, n=200, keys=60, keyed_deletes=True)
    kinesis_add_endpoint(fresh_db)
    kinesis_put_records(stream, [(k.hex(), v) for k, v in msgs if v is not None])
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (schema_registry,))
        kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2, format="debezium-avro", batchsize=50)
    wait_until(lambda: _table(fresh_db) == final, timeout=120, what="the table equal to the model")
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0


def test_preview_of_avro_change_events(fresh_db, topic_factory, schema_registry):
    """preview decodes the envelopes with the registry's schemas as the consumer would."""
    topic = topic_factory(1)
    ids = Ids(topic)
    row = {"id": 1, "name": "a", "price": None, "day": None, "at": None, "doc": None, "n": None}
    produce(topic, [ids.event("c", None, row, 1), b"\x00\x00"], key=ids.key_of(1), partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(name="t"))
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (schema_registry,))
        rows = conn.execute("SELECT \"offset\", action, row->>'name', sqlstate FROM pipeline_kafka.preview(%s, 't', "
                            "format := 'debezium-avro')", [topic]).fetchall()
    assert rows == [(0, "inserted", "a", None), (1, "error", None, "22P02")]
    assert scalar(fresh_db, "SELECT count(*) FROM t") == 0
