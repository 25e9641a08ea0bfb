"""Schema registries (issue 21): add_schema_registry / remove_schema_registry are for superusers,
their credentials are readable by no other role and never echoed; consume_begin's schema_registry
for the formats avro, protobuf and debezium-avro (NULL = the only registry) is stored with the
consumer. The registry itself is the test stack's Apicurio (the schema_registry fixture)."""
from __future__ import annotations

import json

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, KINESIS_ENDPOINT, log_since, log_size, pg_connect, produce, scalar,
                       wait_until)

SECRET = "s3cr3t-Registry-PW"
TOKEN = "tok-Registry-SECRET"


def _regs(db):
    with pg_connect(db) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT url, config FROM pipeline_kafka.schema_registries ORDER BY url").fetchall()]


@pytest.mark.timeout(60)
def test_superuser_adds_and_removes_registries_with_checked_config(fresh_db):
    log_start = log_size()
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_schema_registry('http://reg-a:8080/apis/ccompat/v7/', %s)",
                     [json.dumps({"basic_auth": f"alice:{SECRET}"})])
        conn.execute("SELECT pipeline_kafka.add_schema_registry('https://reg-b/apis/ccompat/v7', %s)",
                     [json.dumps({"bearer_token": TOKEN, "ca_file": "/etc/ssl/certs/ca-certificates.crt",
                                  "timeout_ms": 2000})])
        conn.execute("SELECT pipeline_kafka.add_schema_registry('http://reg-c')")
        # stored with the trailing slash dropped; config as given (superusers read it)
        assert _regs(fresh_db) == [("http://reg-a:8080/apis/ccompat/v7", {"basic_auth": f"alice:{SECRET}"}),
                                   ("http://reg-c", {}),
                                   ("https://reg-b/apis/ccompat/v7",
                                    {"bearer_token": TOKEN, "ca_file": "/etc/ssl/certs/ca-certificates.crt",
                                     "timeout_ms": 2000})]
        with pytest.raises(psycopg.errors.DuplicateObject):
            conn.execute("SELECT pipeline_kafka.add_schema_registry('http://reg-a:8080/apis/ccompat/v7', %s)",
                         [json.dumps({"bearer_token": TOKEN})])
        bad = [
            ("ftp://reg-d", None, "http:// or https://"),
            ("reg-d:8080", None, "http:// or https://"),
            (f"http://alice:{SECRET}@reg-d/", None, "user info"),
            ("http://reg-d/?x=1", None, "query"),
            ("http://reg-d", {"pasword": SECRET}, "unknown config key \"pasword\""),
            ("http://reg-d", {"basic_auth": f"no-colon-{SECRET}"}, "\"user:password\""),
            ("http://reg-d", {"username": "alice"}, "go together"),
            ("http://reg-d", {"basic_auth": f"a:{SECRET}", "bearer_token": TOKEN}, "not both"),
            ("http://reg-d", {"insecure": True}, "https URLs only"),
            ("https://reg-d", {"ca_file": "relative.pem"}, "absolute path"),
            ("http://reg-d", {"timeout_ms": 1}, "timeout_ms"),
            ("http://reg-d", [1, 2], "JSON object"),
        ]
        for url, cfg, want in bad:
            with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
                conn.execute("SELECT pipeline_kafka.add_schema_registry(%s, %s)",
                             [url, None if cfg is None else json.dumps(cfg)])
            assert want in str(e.value), (url, cfg, str(e.value))
            assert SECRET not in str(e.value) and TOKEN not in str(e.value), str(e.value)
        with pytest.raises(psycopg.errors.NullValueNotAllowed):
            conn.execute("SELECT pipeline_kafka.add_schema_registry(NULL)")
        conn.execute("SELECT pipeline_kafka.remove_schema_registry('http://reg-a:8080/apis/ccompat/v7/')")
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT pipeline_kafka.remove_schema_registry('http://reg-a:8080/apis/ccompat/v7')")
        assert [u for u, _ in _regs(fresh_db)] == ["http://reg-c", "https://reg-b/apis/ccompat/v7"]
    log = log_since(log_start)
    assert SECRET not in log and TOKEN not in log


@pytest.mark.timeout(60)
def test_other_roles_cannot_add_registries_nor_read_credentials(fresh_db, roles):
    mallory = roles("pi_reg")
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_schema_registry('http://reg-a', %s)",
                     [json.dumps({"username": "alice", "password": SECRET})])
    with pg_connect(fresh_db, user=mallory) as conn:
        for sql in ("SELECT pipeline_kafka.add_schema_registry('http://evil')",
                    "SELECT pipeline_kafka.remove_schema_registry('http://reg-a')",
                    "SELECT * FROM pipeline_kafka.schema_registries",
                    "SELECT config FROM pipeline_kafka.schema_registries"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()
        # nothing else a role can read names the credentials
        seen = json.dumps([conn.execute(f"SELECT * FROM {v}").fetchall() for v in (
            "pipeline_kafka.consumer_status", "pipeline_kafka.consumers", "pipeline_kafka.brokers")], default=str)
        assert SECRET not in seen
    # A superuser may grant adding registries; a file the server would read stays superuser-only.
    with pg_connect(fresh_db) as conn:
        conn.execute(f"GRANT EXECUTE ON FUNCTION pipeline_kafka.add_schema_registry(text, jsonb) TO {mallory}")
    with pg_connect(fresh_db, user=mallory) as conn:
        conn.execute("SELECT pipeline_kafka.add_schema_registry('http://reg-b', %s)",
                     [json.dumps({"bearer_token": TOKEN})])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pipeline_kafka.add_schema_registry('https://reg-c', %s)",
                         [json.dumps({"ca_file": "/etc/passwd"})])
        conn.rollback()
        with pytest.raises(psycopg.errors.DuplicateObject) as e:
            conn.execute("SELECT pipeline_kafka.add_schema_registry('http://reg-a', %s)",
                         [json.dumps({"bearer_token": TOKEN})])
        assert SECRET not in str(e.value) and TOKEN not in str(e.value)
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM pipeline_kafka.schema_registries")
    assert [u for u, _ in _regs(fresh_db)] == ["http://reg-a", "http://reg-b"]


@pytest.mark.timeout(120)
def test_consume_begin_names_the_registry_or_takes_the_only_one(fresh_db, topic_factory, stream_factory,
                                                                 schema_registry):
    topic, ptopic = topic_factory(1), topic_factory(1)
    stream, _ = stream_factory(1)
    other = "http://127.0.0.1:1/apis/ccompat/v7"
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("SELECT pipeline_kinesis.add_endpoint('local', 'us-east-1', NULL, %s)", [KINESIS_ENDPOINT])
        conn.execute("CREATE TABLE t (id int, v text)")
        conn.execute("CREATE TABLE t2 (id int, v text)")
        # none added: 55000
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'avro')", [topic])
        assert "no schema registry" in str(e.value)
        conn.rollback()
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", [schema_registry])
        # the only one
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'avro')", [topic]).fetchone()[0]
        assert conn.execute("SELECT format, schema_registry FROM pipeline_kafka.consumers WHERE id = %s",
                            [cid]).fetchone() == ("avro", schema_registry)
        kid = conn.execute("SELECT pipeline_kinesis.consume_begin('local', %s, 't', format := 'avro')",
                           [stream]).fetchone()[0]
        assert conn.execute("SELECT format, schema_registry FROM pipeline_kinesis.consumers WHERE id = %s",
                            [kid]).fetchone() == ("avro", schema_registry)
        conn.execute("SELECT pipeline_kafka.add_schema_registry(%s)", [other])
        # two: the call must name one (an existing consumer keeps its own)
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't2', format := 'avro')", [topic])
        conn.rollback()
        for bad in ("http://127.0.0.1:2/unknown", "not a url"):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', schema_registry := %s)", [topic, bad])
            conn.rollback()
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', batchsize := 10)", [topic])
        assert scalar(fresh_db, "SELECT schema_registry FROM pipeline_kafka.consumers WHERE id = %s",
                      [cid]) == schema_registry
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', schema_registry := %s)", [topic, other + "/"])
        assert scalar(fresh_db, "SELECT schema_registry FROM pipeline_kafka.consumers WHERE id = %s", [cid]) == other
        # in use: remove refuses and names the consumers
        with pytest.raises(psycopg.errors.ObjectInUse) as e:
            conn.execute("SELECT pipeline_kafka.remove_schema_registry(%s)", [other])
        assert f"Kafka consumer {cid}" in (e.value.diag.message_detail or "")
        conn.rollback()
        # a registry only for the formats that need one; another format drops it
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'json', schema_registry := %s)",
                         [topic, other])
        assert "schema_registry is for the formats avro" in str(e.value)
        conn.rollback()
        for bad in ("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'avro', delimiter := ',')",
                    "SELECT pipeline_kafka.consume_begin(%s, 't', format := 'avro', columns := '{id}')"):
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                conn.execute(bad, [topic])
            conn.rollback()
        # the stream-partitioned consumer of another topic names one too
        pid = conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, format := 'protobuf', "
                           "schema_registry := %s)", [ptopic, other]).fetchone()[0]
        assert scalar(fresh_db, "SELECT schema_registry FROM pipeline_kafka.consumers WHERE id = %s", [pid]) == other
        conn.execute("SELECT pipeline_kafka.consume_drop_stream_partitioned(%s)", [ptopic])
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'json')", [topic])
        assert scalar(fresh_db, "SELECT schema_registry FROM pipeline_kafka.consumers WHERE id = %s", [cid]) is None
        conn.execute("SELECT pipeline_kafka.remove_schema_registry(%s)", [other])
        conn.execute("SELECT pipeline_kinesis.consume_drop('local', %s, 't')", [stream])
        conn.execute("SELECT pipeline_kafka.remove_schema_registry(%s)", [schema_registry])
        conn.execute("SELECT pipeline_kafka.consume_drop(%s, 't')", [topic])


@pytest.mark.timeout(600)
def test_the_rust_client_against_apicurio(schema_registry):
    """crates/ingest-registry/tests/apicurio.rs against this stack's Apicurio: Avro and Protobuf
    schemas (one with a reference) registered and read back through the workers' client, cached
    (it skips itself when SCHEMA_REGISTRY_URL does not answer, so it must say it ran). Built by
    scripts/test.sh's registry-client tier already; compiled here otherwise."""
    import os
    import shutil
    import subprocess
    from pihelpers import PI_ROOT
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    proc = subprocess.run([cargo, "test", "-q", "-p", "ingest-registry", "--test", "apicurio", "--", "--nocapture"],
                          cwd=PI_ROOT, env={**os.environ, "SCHEMA_REGISTRY_URL": schema_registry},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=580)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "1 passed" in out and "skipped" not in out, out[-4000:]
