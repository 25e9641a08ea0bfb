"""emit_tuple(topic, partition, key column, 'avro') (issue 21): each new row as an Avro record
whose schema is derived from the table's row type, registered under `<topic>-value` in the
schema registry (Apicurio here), each message framed with the schema's id (Confluent wire
format), read back with fastavro and the schema fetched from the registry by that id.

The schema is registered in the trigger, in the user's transaction, once per (row type, topic)
in a session (the id is cached in the backend): a session with the id cached goes on producing
while the registry is down; one that has to register fails its INSERT with 08006 and writes
nothing, and succeeds once the registry is back. Only committed rows are sent.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from decimal import Decimal

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, consume_all, launcher_naptime, pg_connect, query, registry_is_up,
                       registry_request, scalar, wait_until)

fastavro = pytest.importorskip("fastavro")

COLUMNS = """
    id    int8 PRIMARY KEY,
    i2    int2,
    i4    int4 NOT NULL,
    f4    float4,
    f8    float8,
    n     numeric(20, 3),
    nu    numeric,
    b     boolean,
    t     text,
    vc    varchar(10),
    by    bytea,
    d     date,
    ts    timestamp,
    tstz  timestamptz,
    u     uuid,
    j     json,
    jb    jsonb,
    iv    interval,
    arr   int4[]
"""

FULL = dict(id=1, i2=-32768, i4=2147483647, f4=1.5, f8=0.1, n=Decimal("-12345678901234567.125"),
            nu=Decimal("3.14159265358979323846264338327950288"), b=True, t="héllo ✓", vc="short",
            by=b"\x00\xffbytes", d=dt.date(1969, 7, 20), ts=dt.datetime(2024, 2, 29, 23, 59, 59, 123456),
            tstz=dt.datetime(2001, 9, 9, 1, 46, 40, 654321, tzinfo=dt.timezone.utc),
            u=uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), j='{"a": [1, 2]}', jb='{"b": null}',
            iv="1 day 02:03:04", arr=[1, None, 3])


@pytest.fixture(scope="module", autouse=True)
def fast_launcher():
    with launcher_naptime(1):
        yield


def add_registry(conn, url):
    conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (url,))


def decode(value: bytes) -> tuple[int, dict, dict]:
    """(schema id, the record, the writer schema) of a framed message, the schema fetched from the
    registry by the id in the frame."""
    assert value[0] == 0, value[:5]
    sid = int.from_bytes(value[1:5], "big")
    status, answer = registry_request("GET", f"/schemas/ids/{sid}")
    assert status == 200, (sid, status, answer)
    schema = json.loads(answer["schema"])
    record = fastavro.schemaless_reader(io.BytesIO(value[5:]), fastavro.parse_schema(schema))
    return sid, record, schema


def avro_table(conn, table: str, topic: str) -> None:
    conn.execute(f"CREATE TABLE {table} ({COLUMNS})")
    conn.execute(f"CREATE TRIGGER emit AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW "
                 f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{topic}', '-1', 'id', 'avro')")


def insert(conn, table: str, row: dict) -> None:
    cols = ", ".join(row)
    conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join(['%s'] * len(row))})", list(row.values()))


@pytest.mark.timeout(120)
def test_every_mapped_type_is_read_back_by_fastavro_with_the_registered_schema(schema_registry, fresh_db,
                                                                                topic_factory):
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        add_registry(conn, schema_registry)
        avro_table(conn, "every", topic)
        insert(conn, "every", FULL)
        insert(conn, "every", dict(id=2, i4=0))
        # rolled back: never sent
        with pytest.raises(psycopg.errors.RaiseException):
            with conn.transaction():
                insert(conn, "every", dict(id=99, i4=99))
                conn.execute("DO $$ BEGIN RAISE 'roll back'; END $$")
        conn.execute("UPDATE every SET t = 'updated', n = 0.5 WHERE id = 2")
        conn.execute("DELETE FROM every WHERE id = 1")
    msgs = consume_all(topic, timeout=60, min_messages=4)
    assert [m["key"] for m in msgs] == [b"1", b"2", b"2", b"1"]
    assert msgs[3]["value"] is None  # DELETE: a tombstone
    sid, first, schema = decode(msgs[0]["value"])
    # the id is the one registered under <topic>-value, once (one version)
    status, latest = registry_request("GET", f"/subjects/{topic}-value/versions/latest")
    assert status == 200 and latest["id"] == sid, latest
    status, versions = registry_request("GET", f"/subjects/{topic}-value/versions")
    assert versions == [1], versions
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert schema["type"] == "record" and schema["name"] == "every" and schema["namespace"] == "public"
    assert types["id"] == "long" and types["i4"] == "int"
    assert types["i2"] == ["null", "int"] and types["f4"] == ["null", "float"] and types["f8"] == ["null", "double"]
    assert types["n"] == ["null", {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 3}]
    assert types["nu"] == ["null", "string"]
    assert types["d"] == ["null", {"type": "int", "logicalType": "date"}]
    assert types["ts"] == ["null", {"type": "long", "logicalType": "local-timestamp-micros"}]
    assert types["tstz"] == ["null", {"type": "long", "logicalType": "timestamp-micros"}]
    assert types["u"] == ["null", {"type": "string", "logicalType": "uuid"}]
    assert all(types[c] == ["null", "string"] for c in ("t", "vc", "j", "jb", "iv", "arr"))
    assert types["by"] == ["null", "bytes"] and types["b"] == ["null", "boolean"]
    want = dict(FULL, n=Decimal("-12345678901234567.125"), nu="3.14159265358979323846264338327950288",
                ts=FULL["ts"], u=FULL["u"], j='{"a": [1, 2]}', jb='{"b": null}', iv="1 day 02:03:04",
                arr="{1,NULL,3}")
    # fastavro's uuid logical type gives a UUID (or the text, by version)
    first["u"] = uuid.UUID(str(first["u"]))
    assert first == want
    assert isinstance(first["f8"], float) and first["f8"] == 0.1
    _, second, _ = decode(msgs[1]["value"])
    assert second == dict({k: None for k in FULL}, id=2, i4=0)
    _, third, _ = decode(msgs[2]["value"])
    assert third["t"] == "updated" and third["n"] == Decimal("0.500") and third["id"] == 2
    assert 99 not in [decode(m["value"])[1]["id"] for m in msgs if m["value"] is not None]


@pytest.mark.timeout(90)
def test_rows_come_back_equal_through_a_format_avro_consumer(schema_registry, fresh_db, topic_factory):
    """emit_tuple's Avro read back by pipeline_ingest's own Avro consumer into a table of the same
    columns: every mapped type comes back equal."""
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        add_registry(conn, schema_registry)
        avro_table(conn, "src", topic)
        conn.execute(f"CREATE TABLE dst ({COLUMNS.replace('PRIMARY KEY', '')})")
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'dst', format := 'avro', start_offset := -2)", (topic,))
        insert(conn, "src", FULL)
        insert(conn, "src", dict(id=2, i4=0))
        insert(conn, "src", dict(FULL, id=3, n=Decimal("0.001"), f8=-1e300, d=dt.date(9999, 12, 31),
                                 tstz=dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc), b=False))
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM dst") == 3, timeout=60, what="3 rows in dst")
    # (json has no equality: rows compared as their text)
    assert scalar(fresh_db, "SELECT count(*) FROM (SELECT sr::text FROM src sr EXCEPT SELECT dr::text FROM dst dr) x") == 0, \
        query(fresh_db, "SELECT sr::text, dr::text FROM src sr JOIN dst dr ON sr.id = dr.id WHERE sr::text <> dr::text")


@pytest.mark.timeout(60)
def test_a_changed_row_type_registers_a_new_version(schema_registry, fresh_db, topic_factory):
    """The schema is derived once per row type in a session: an ALTER TABLE in the same session
    makes the next row go out with a new version's id (the registry's default rules allow it)."""
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        add_registry(conn, schema_registry)
        conn.execute("CREATE TABLE v (id int8 PRIMARY KEY, a text)")
        conn.execute("CREATE TRIGGER emit AFTER INSERT ON v FOR EACH ROW "
                     f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{topic}', '-1', 'id', 'avro')")
        conn.execute("INSERT INTO v VALUES (1, 'one'), (2, 'two')")
        conn.execute("ALTER TABLE v ADD COLUMN amount numeric(8, 2) NOT NULL DEFAULT 0, DROP COLUMN a")
        conn.execute("INSERT INTO v VALUES (3, 7.25)")
    msgs = consume_all(topic, timeout=60, min_messages=3)
    decoded = [decode(m["value"]) for m in msgs]
    assert [r for _, r, _ in decoded] == [dict(id=1, a="one"), dict(id=2, a="two"), dict(id=3, amount=Decimal("7.25"))]
    assert decoded[0][0] == decoded[1][0] != decoded[2][0]
    assert registry_request("GET", f"/subjects/{topic}-value/versions")[1] == [1, 2]


@pytest.mark.timeout(60)
def test_misuse_is_refused_with_its_sqlstate(schema_registry, fresh_db, topic_factory):
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute('CREATE TABLE oddnames (id int, "two words" text)')
        with pytest.raises(psycopg.Error) as err:
            conn.execute("CREATE TRIGGER e AFTER INSERT ON oddnames FOR EACH ROW "
                         f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{topic}', '-1', 'id', 'avro')")
        assert err.value.sqlstate == "22023" and "not a legal Avro field name" in str(err.value)
        conn.execute("CREATE TABLE plain (id int, v text)")
        conn.execute("CREATE TRIGGER e AFTER INSERT ON plain FOR EACH ROW "
                     f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{topic}', '', '', 'avro')")
        # no registry added: 55000, nothing in the outbox
        with pytest.raises(psycopg.Error) as err:
            conn.execute("INSERT INTO plain VALUES (1, 'x')")
        assert err.value.sqlstate == "55000" and "add_schema_registry" in str(err.value.diag.message_hint)
        # a column renamed to a name Avro cannot carry after the trigger was made: 22023 when it fires
        add_registry(conn, schema_registry)
        conn.execute('ALTER TABLE plain RENAME COLUMN v TO "v-1"')
        with pytest.raises(psycopg.Error) as err:
            conn.execute("INSERT INTO plain VALUES (2, 'x')")
        assert err.value.sqlstate == "22023", err.value
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0


@pytest.mark.timeout(120)
def test_a_registry_outage_fails_only_inserts_that_must_register(registry_proxy, fresh_db, topic_factory):
    """A session with the schema id cached produces without the registry; one that must register
    gets 08006 and writes nothing; once the registry is back, its INSERT succeeds. Every committed
    row arrives, framed with an id the registry knows."""
    topic = topic_factory(1)
    with pg_connect(fresh_db) as setup:
        setup.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        add_registry(setup, registry_proxy.url())
        setup.execute("CREATE TABLE r (id int8 PRIMARY KEY, i4 int4 NOT NULL, t text)")
        setup.execute("CREATE TRIGGER emit AFTER INSERT ON r FOR EACH ROW "
                      f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{topic}', '-1', 'id', 'avro')")
    cached = pg_connect(fresh_db)
    other = pg_connect(fresh_db)
    try:
        cached.execute("INSERT INTO r VALUES (1, 1, 'before')")
        registry_proxy.stop()
        assert not registry_is_up(registry_proxy.url())
        cached.execute("INSERT INTO r VALUES (2, 2, 'cached id')")
        with pytest.raises(psycopg.Error) as err:
            other.execute("INSERT INTO r VALUES (3, 3, 'must register')")
        assert err.value.sqlstate == "08006", err.value
        assert "could not register" in str(err.value) and f"{topic}-value" in str(err.value)
        assert scalar(fresh_db, "SELECT count(*) FROM r") == 2
        registry_proxy.start()
        other.execute("INSERT INTO r VALUES (3, 3, 'after')")
    finally:
        cached.close()
        other.close()
    msgs = consume_all(topic, timeout=60, min_messages=3)
    assert [m["key"] for m in msgs] == [b"1", b"2", b"3"]
    ids = {decode(m["value"])[0] for m in msgs}
    assert len(ids) == 1, ids
    assert decode(msgs[2]["value"])[1] == dict(id=3, i4=3, t="after")
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=30,
               what="outbox drained")
