"""consume_begin(..., auto_evolve := true) with format 'avro': a field that a later schema version
adds and the table lacks becomes a new nullable column mid-stream (added as the table's owner, in
the batch's transaction); earlier rows keep NULL there, later rows fill it. Without it the new
fields are ignored. A field spelled like a column in another case gets its own column; more than
100 new columns in one batch fail the batch (54011 in last_error), nothing added."""
from __future__ import annotations

import io

import fastavro
import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, confluent_frame, pg_connect, produce, query, register_schema,
                       scalar, wait_until)

pytestmark = pytest.mark.timeout(180)


def avro(schema_id: int, schema: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return confluent_frame(schema_id, buf.getvalue())


def _record(fields: list) -> dict:
    return {"type": "record", "name": "Person", "namespace": "pi.evolve", "fields": fields}


V1 = _record([{"name": "id", "type": "long"}, {"name": "name", "type": "string"}])
V2 = _record(V1["fields"] + [
    {"name": "score", "type": ["null", "double"], "default": None},
    {"name": "Name", "type": "string", "default": ""},
    {"name": "tags", "type": {"type": "map", "values": "long"}, "default": {}},
    {"name": "born", "type": {"type": "int", "logicalType": "date"}, "default": 0},
    {"name": "select", "type": "int", "default": 0},
])


def _produce_versions(topic: str) -> None:
    v1 = register_schema(f"{topic}-value", V1)
    v2 = register_schema(f"{topic}-value", V2)
    msgs = [avro(v1, V1, {"id": i, "name": f"n{i}"}) for i in (1, 2)]
    msgs += [avro(v2, V2, {"id": i, "name": f"n{i}", "score": i / 2, "Name": f"N{i}", "tags": {"k": i},
                           "born": 19000 + i, "select": i}) for i in (3, 4)]
    produce(topic, msgs)


def _setup(db: str, registry: str, owner: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", (registry,))
        conn.execute("CREATE TABLE people (id bigint PRIMARY KEY, name text)")
        conn.execute(f"ALTER TABLE people OWNER TO {owner}")


def _columns(db: str) -> dict:
    return dict(query(db, "SELECT attname::text, format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END "
                          "FROM pg_attribute WHERE attrelid = 'people'::regclass AND attnum > 0 AND NOT attisdropped"))


def test_new_fields_become_nullable_columns_added_as_the_owner(fresh_db, topic_factory, schema_registry, roles):
    owner = roles("pi_evolve")
    topic = topic_factory(1)
    _produce_versions(topic)
    _setup(fresh_db, schema_registry, owner)
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'people', format := 'avro', start_offset := -2, "
                     "auto_evolve := true)", (topic,))
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM people") == 4, timeout=90, what="4 rows")
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
    assert scalar(fresh_db, "SELECT auto_evolve FROM pipeline_kafka.consumers") is True
    assert _columns(fresh_db) == {
        "id": "bigint not null", "name": "text", "score": "double precision", "Name": "text", "tags": "jsonb",
        "born": "date", "select": "integer"}
    rows = query(fresh_db, "SELECT id, name, score, \"Name\", tags, born::text, \"select\" "
                           "FROM people ORDER BY id")
    assert rows == [
        (1, "n1", None, None, None, None, None), (2, "n2", None, None, None, None, None),
        (3, "n3", 1.5, "N3", {"k": 3}, "2022-01-11", 3), (4, "n4", 2.0, "N4", {"k": 4}, "2022-01-12", 4)]
    # The columns were added as the table's owner: it still owns the table, and it is the only
    # role that could have (ALTER TABLE needs ownership).
    assert scalar(fresh_db, "SELECT relowner::regrole::text FROM pg_class WHERE oid = 'people'::regclass") == owner
    assert scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers") is None
    # NULL keeps the stored setting; false turns it off (a NOTICE names the change).
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'people')", (topic,))
        assert scalar(fresh_db, "SELECT auto_evolve FROM pipeline_kafka.consumers") is True
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'people', auto_evolve := false)", (topic,))
        assert scalar(fresh_db, "SELECT auto_evolve FROM pipeline_kafka.consumers") is False


def test_without_auto_evolve_new_fields_are_ignored(fresh_db, topic_factory, schema_registry, roles):
    owner = roles("pi_evolve")
    topic = topic_factory(1)
    _produce_versions(topic)
    _setup(fresh_db, schema_registry, owner)
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'people', format := 'avro', start_offset := -2)", (topic,))
        # only for formats with typed records
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT pipeline_kafka.consume_begin('other', 'people', format := 'json', auto_evolve := true)")
        assert e.value.sqlstate == "22023" and "auto_evolve is for the formats with typed records" in str(e.value)
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM people") == 4, timeout=90, what="4 rows")
    assert _columns(fresh_db) == {"id": "bigint not null", "name": "text"}
    assert scalar(fresh_db, "SELECT auto_evolve FROM pipeline_kafka.consumers") is False
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


def test_too_many_new_columns_fail_the_batch(fresh_db, topic_factory, schema_registry, roles):
    owner = roles("pi_evolve")
    topic = topic_factory(1)
    wide = _record(V1["fields"] + [{"name": f"f{i}", "type": "int", "default": 0} for i in range(101)])
    sid = register_schema(f"{topic}-value", wide)
    produce(topic, [avro(sid, wide, {"id": 1, "name": "x", **{f"f{i}": i for i in range(101)}})])
    _setup(fresh_db, schema_registry, owner)
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'people', format := 'avro', start_offset := -2, "
                     "auto_evolve := true)", (topic,))
    error = wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers"), timeout=90,
                       what="last_error")
    assert "101 fields" in error and "more than the 100 new columns" in error and "54011" in error, error
    assert _columns(fresh_db) == {"id": "bigint not null", "name": "text"}
    assert scalar(fresh_db, "SELECT count(*) FROM people") == 0


def test_protobuf_new_fields_become_columns(fresh_db, topic_factory, schema_registry, roles):
    from test_protobuf import f_bytes, f_double, f_int, framed
    owner = roles("pi_evolve")
    topic = topic_factory(1)
    v1 = register_schema(f"{topic}-value", 'syntax = "proto3";\nmessage P { int64 id = 1; string name = 2; }\n',
                         schema_type="PROTOBUF")
    v2 = register_schema(f"{topic}-value", 'syntax = "proto3";\nmessage P { int64 id = 1; string name = 2; '
                         'double score = 3; repeated string tags = 4; }\n', schema_type="PROTOBUF")
    produce(topic, [framed(v1, [0], f_int(1, 1) + f_bytes(2, "a")),
                    framed(v2, [0], f_int(1, 2) + f_bytes(2, "b") + f_double(3, 0.5) + f_bytes(4, "t"))])
    _setup(fresh_db, schema_registry, owner)
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'people', format := 'protobuf', start_offset := -2, "
                     "auto_evolve := true)", (topic,))
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM people") == 2, timeout=90, what="2 rows")
    assert _columns(fresh_db) == {"id": "bigint not null", "name": "text", "score": "double precision", "tags": "jsonb"}
    assert query(fresh_db, "SELECT id, name, score, tags FROM people ORDER BY id") == [
        (1, "a", None, None), (2, "b", 0.5, ["t"])]


def test_upsert_fills_the_new_column(fresh_db, topic_factory, schema_registry, roles):
    owner = roles("pi_evolve")
    topic = topic_factory(1)
    v1 = register_schema(f"{topic}-value", V1)
    v2s = _record(V1["fields"] + [{"name": "score", "type": ["null", "double"], "default": None}])
    v2 = register_schema(f"{topic}-value", v2s)
    produce(topic, [avro(v1, V1, {"id": 1, "name": "a"}), avro(v1, V1, {"id": 2, "name": "b"}),
                    avro(v2, v2s, {"id": 1, "name": "a2", "score": 7.5})])
    _setup(fresh_db, schema_registry, owner)
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'people', format := 'avro', start_offset := -2, "
                     "mode := 'upsert', auto_evolve := true)", (topic,))
    wait_until(lambda: query(fresh_db, "SELECT name FROM people WHERE id = 1") == [("a2",)], timeout=90,
               what="the upsert of id 1")
    assert query(fresh_db, "SELECT id, name, score FROM people ORDER BY id") == [(1, "a2", 7.5), (2, "b", None)]
