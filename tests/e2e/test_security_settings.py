"""Client settings and broker waits under attack (issue 11, items 1, 8, 12, 13).

- A role that is not a superuser may give only the allow-listed client tuning settings; settings
  that run commands (sasl.kerberos.kinit.cmd), load code (plugin.library.paths) or read files
  (ssl.*.location, keytabs) are refused with 42501 before librdkafka sees them, aliases included;
  the worker checks again. Superusers may give them.
- add_broker / remove_broker restart running consumers with the new broker list.
- Broker waits of SQL functions honour statement_timeout and pg_cancel_backend;
  pipeline_ingest.broker_timeout is superuser-only and capped.
- A secret passed as a bind parameter stays out of the server log when the call fails.

Every wait is bounded (wait_until); each "nothing happened" assertion follows a positive marker.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, log_since, log_size, pg_connect, produce, scalar, server_setting, unique_name,
                       wait_until)


def _unused_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sqlstate(conn: psycopg.Connection, sql: str, params: Any = None) -> str:
    with pytest.raises(psycopg.Error) as ei:
        conn.execute(sql, params)
    return ei.value.sqlstate


def _table_owned_by(conn: psycopg.Connection, role: str, table: str = "t") -> None:
    """Creates `table` (id int, v text) owned by `role`."""
    conn.execute(f'CREATE TABLE {table} (id int, v text)')
    conn.execute(f'ALTER TABLE {table} OWNER TO "{role}"')


def _consume_begin(conn: psycopg.Connection, topic: str, config: dict, **kw: Any) -> int:
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', config := %s{args})",
                        [topic, json.dumps(config)] + [kw[n] for n in names]).fetchone()[0]


KINIT_ATTACK = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "GSSAPI"}


@pytest.mark.timeout(120)
def test_command_running_settings_are_refused_for_non_superusers(pg_role, fresh_db, topic_factory):
    """The kinit.cmd attack: refused with 42501 and the command never runs for a role that is not a
    superuser; the same settings from a superuser do run it (so the refusal is what stops it)."""
    r = pg_role()
    topic = topic_factory(1)
    marker = f"/tmp/{unique_name('pi_kinit_marker')}"
    su_marker = marker + "_superuser"
    attack = dict(KINIT_ATTACK, **{"sasl.kerberos.kinit.cmd": f"touch {marker}"})
    try:
        with pg_connect(fresh_db) as conn:
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
            _table_owned_by(conn, r)
            conn.execute(f'SET ROLE "{r}"')
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                _consume_begin(conn, topic, attack)
            assert "sasl.kerberos.kinit.cmd" in str(ei.value) or "security.protocol" in str(ei.value)
            assert "README" in (ei.value.diag.message_hint or "")
            conn.execute("RESET ROLE")
            # Positive marker: a superuser's client runs the command when it is created (it then
            # fails to authenticate: no Kerberos here).
            with pytest.raises(psycopg.Error):
                _consume_begin(conn, topic, dict(KINIT_ATTACK, **{"sasl.kerberos.kinit.cmd": f"touch {su_marker}"}))
            wait_until(lambda: os.path.exists(su_marker), timeout=10, what="the superuser's kinit command to run")
            assert not os.path.exists(marker), "the non-superuser's command ran"
            assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
    finally:
        for path in (marker, su_marker):
            if os.path.exists(path):
                os.unlink(path)


@pytest.mark.timeout(120)
def test_code_file_and_aliased_settings_are_refused_for_non_superusers(pg_role, fresh_db, topic_factory):
    r = pg_role()
    topic = topic_factory(1)
    refused = [
        {"plugin.library.paths": "/tmp/x.so"},
        {"ssl.ca.location": "/etc/passwd"},
        {"ssl.ca.location": "/no/such/file"},
        {"ssl.key.location": "/etc/ssl/private/x.key"},
        {"ssl.engine.location": "/tmp/engine.so"},
        {"sasl.kerberos.keytab": "/etc/krb5.keytab"},
        {"sasl.oauthbearer.config": "principal=x"},
        {"sasl.mechanism": "GSSAPI"},          # alias of sasl.mechanisms
        {"sasl.mechanisms": "GSSAPI"},
        {"security.protocol": "SSL"},
        {"debug": "all"},
        {"Fetch.Wait.Max.Ms": 50},             # librdkafka names are case-sensitive
        {"topic.offset.store.path": "/tmp"},
    ]
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        _table_owned_by(conn, r)
        conn.execute(f'SET ROLE "{r}"')
        messages = {}
        for config in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                _consume_begin(conn, topic, config)
            key = next(iter(config))
            assert f'"{key}"' in str(ei.value), str(ei.value)
            messages[json.dumps(config)] = str(ei.value)
        # No oracle for file existence: an existing and a missing path give the same answer.
        assert messages['{"ssl.ca.location": "/etc/passwd"}'] == messages['{"ssl.ca.location": "/no/such/file"}']
        # Settings the extension manages are refused for everyone, under every alias (22023).
        for key in ("auto.commit.enable", "enable.auto.commit", "topic.enable.auto.commit", "bootstrap.servers",
                    "metadata.broker.list", "enable.auto.offset.store"):
            assert _sqlstate(conn, "SELECT pipeline_kafka.consume_begin(%s, 't', config := %s)",
                             [topic, json.dumps({key: "true"})]) == "22023", key
        conn.execute("RESET ROLE")
        assert _sqlstate(conn, "SELECT pipeline_kafka.consume_begin(%s, 't', config := %s)",
                         [topic, json.dumps({"topic.auto.commit.enable": "true"})]) == "22023"
        # Broker entries: management may be granted, but command/file settings stay superuser-only.
        conn.execute(f'GRANT EXECUTE ON FUNCTION pipeline_kafka.add_broker(text, jsonb) TO "{r}"')
        conn.execute(f'SET ROLE "{r}"')
        assert _sqlstate(conn, "SELECT pipeline_kafka.add_broker('127.0.0.1:9', %s)",
                         [json.dumps({"sasl.kerberos.kinit.cmd": "true"})]) == "42501"
        conn.execute("RESET ROLE")
        conn.execute(f'REVOKE EXECUTE ON FUNCTION pipeline_kafka.add_broker(text, jsonb) FROM "{r}"')
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.brokers") == 1


@pytest.mark.timeout(120)
def test_allow_listed_settings_work_for_non_superusers(pg_role, fresh_db, topic_factory):
    r = pg_role()
    topic = topic_factory(2)
    produce(topic, [f"{i},v{i}" for i in range(20)])
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        _table_owned_by(conn, r)
        conn.execute(f'SET ROLE "{r}"')
        _consume_begin(conn, topic, {"fetch.wait.max.ms": 50, "max.partition.fetch.bytes": 1048576,
                                     "socket.keepalive.enable": True, "isolation.level": "read_committed"},
                       start_offset=-2)
        conn.execute("RESET ROLE")
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 20, timeout=60, what="20 rows")
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end()")
        conn.execute("DROP TABLE t")


@pytest.mark.timeout(60)
def test_buffer_sizes_above_librdkafkas_defaults_are_for_superusers(pg_role, fresh_db, topic_factory):
    """Allow-listed settings that size the client's buffers are capped for other roles at
    librdkafka's defaults (42501 above them, aliases and strings included); superusers may go
    above."""
    r = pg_role()
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        _table_owned_by(conn, r)
        conn.execute(f'SET ROLE "{r}"')
        for config in ({"queued.min.messages": 10_000_000}, {"queued.min.messages": "1e7"},
                       {"max.partition.fetch.bytes": 1_000_000_000}, {"fetch.max.bytes": "2147483135"},
                       {"receive.message.max.bytes": 2_147_483_647}, {"queued.max.messages.kbytes": 2_097_151}):
            assert _sqlstate(conn, "SELECT pipeline_kafka.consume_begin(%s, 't', config := %s)",
                             [topic, json.dumps(config)]) == "42501", config
        _consume_begin(conn, topic, {"queued.min.messages": 100_000, "fetch.max.bytes": "52428800"})
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
        conn.execute("RESET ROLE")
        _consume_begin(conn, topic, {"queued.min.messages": 10_000_000})
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])


def _most_rows_in_one_batch(db: str, table: str) -> int:
    """A batch is one transaction: the most rows of `table` with the same xmin."""
    return scalar(db, f"SELECT max(n) FROM (SELECT count(*) AS n FROM {table} GROUP BY xmin::text) b")


@pytest.mark.timeout(180)
def test_batches_stay_under_the_servers_cap_whatever_a_role_asks(pg_role, fresh_db, topic_factory):
    """A role asking for batches of 2 billion messages and 2 GB gets no more than
    pipeline_ingest.max_batch_bytes allows (lowered to 64kB here): that many bytes of messages per
    batch (4 kB messages: 17 at most, the last one crossing the cap), and that / 256 messages
    (small messages: 256). Without the cap a backlog goes in batches of thousands."""
    r = pg_role()
    big, small = topic_factory(1), topic_factory(1)
    produce(big, [f"{i},{'x' * 4000}" for i in range(2000)])
    produce(small, [f"{i},y" for i in range(20000)])
    with server_setting("pipeline_ingest.max_batch_bytes", "64kB", "64kB"):
        with pg_connect(fresh_db) as conn:
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
            _table_owned_by(conn, r, "t")
            _table_owned_by(conn, r, "u")
            conn.execute(f'SET ROLE "{r}"')
            for topic, table in ((big, "t"), (small, "u")):
                conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv', start_offset := -2, "
                             "batchsize := 2000000000, maxbytes := 2000000000)", [topic, table])
            conn.execute("RESET ROLE")
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 2000, timeout=120, what="2,000 rows in t")
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM u") == 20000, timeout=120, what="20,000 rows in u")
    assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM t") == 2000
    assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM u") == 20000
    most_big, most_small = _most_rows_in_one_batch(fresh_db, "t"), _most_rows_in_one_batch(fresh_db, "u")
    print(f"most rows in one batch: {most_big} of 4 kB, {most_small} small")
    assert most_big <= 65536 // 4005 + 1, most_big
    assert most_small <= 65536 // 256, most_small


@pytest.mark.timeout(120)
def test_superusers_may_give_file_settings(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ["1,a", "2,b"])
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE t (id int, v text)")
        # A path setting (unused over PLAINTEXT, but librdkafka takes it).
        _consume_begin(conn, topic, {"ssl.ca.location": "/etc/ssl/certs"}, start_offset=-2)
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 2, timeout=60, what="2 rows")


@pytest.mark.timeout(120)
def test_superuser_given_settings_run_for_a_consumer_owned_by_another_role(pg_role, fresh_db, topic_factory):
    """Settings a superuser gave stay usable when the consumer's owner is a role that is not a
    superuser (the owner may be the table's owner rather than the caller): the worker goes by who
    gave the settings, recorded in consumers.config_by_superuser."""
    r = pg_role()
    topic = topic_factory(1)
    produce(topic, ["1,a"])
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        _table_owned_by(conn, r)
        cid = _consume_begin(conn, topic, {"ssl.ca.location": "/etc/ssl/certs"}, start_offset=-2)
        assert scalar(fresh_db, "SELECT config_by_superuser FROM pipeline_kafka.consumers WHERE id = %s", [cid])
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 1, timeout=60, what="the first row")
        # The same row as a release storing the table's owner would write it; its workers restart.
        conn.execute('UPDATE pipeline_kafka.consumers SET owner = %s::regrole, generation = generation + 1 '
                     'WHERE id = %s', [r, cid])
        produce(topic, ["2,b"])
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 2, timeout=60, what="the second row")
        assert scalar(fresh_db, "SELECT enabled AND last_error IS NULL FROM pipeline_kafka.consumers "
                                "WHERE id = %s", [cid])
        conn.execute("SELECT pipeline_kafka.consume_end()")


def _stored_settings_stop_the_consumer(db: str, role: str, topic: str, config: dict) -> str:
    """A consumer of `topic` owned by `role` ingests a first row; then `config` is written into its
    row without the check (as an older release could hold) and it is restarted: its worker must
    stop it. Returns its last_error."""
    produce(topic, ["1,a"])
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        _table_owned_by(conn, role)
        conn.execute(f'SET ROLE "{role}"')
        cid = _consume_begin(conn, topic, {}, start_offset=-2)
        conn.execute("RESET ROLE")
        wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 1, timeout=60, what="the first row")
        conn.execute("UPDATE pipeline_kafka.consumers SET config = %s::jsonb, generation = generation + 1 "
                     "WHERE id = %s", [json.dumps(config), cid])
        conn.execute("SELECT pipeline_kafka.consume_end()")
        conn.execute("SELECT pipeline_kafka.consume_begin()")
    wait_until(lambda: scalar(db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s AND NOT enabled",
                              [cid]), timeout=60, what="the consumer to be stopped")
    return scalar(db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", [cid])


@pytest.mark.timeout(120)
def test_worker_refuses_stored_settings_of_a_non_superuser_owner(pg_role, fresh_db, topic_factory):
    """Defence in depth: a consumer row owned by a role that is not a superuser, whose settings
    were written without the check (as a 0.1.0 database could hold), is stopped by its worker
    with the reason instead of handing the settings to librdkafka."""
    marker = f"/tmp/{unique_name('pi_kinit_marker')}"
    try:
        attack = dict(KINIT_ATTACK, **{"sasl.kerberos.kinit.cmd": f"touch {marker}"})
        error = _stored_settings_stop_the_consumer(fresh_db, pg_role(), topic_factory(1), attack)
        assert "may only be given by a superuser" in error, error
        assert not os.path.exists(marker)
    finally:
        if os.path.exists(marker):
            os.unlink(marker)


@pytest.mark.timeout(120)
def test_worker_refuses_a_stored_buffer_size_above_the_cap(pg_role, fresh_db, topic_factory):
    """The same for a buffer-sizing setting above its cap (stored by a release without the caps):
    the worker stops the consumer with the reason; consume_begin with a value within the cap
    starts it again."""
    r, topic = pg_role(), topic_factory(1)
    error = _stored_settings_stop_the_consumer(fresh_db, r, topic, {"queued.min.messages": 10_000_000})
    assert "\"queued.min.messages\" above 100000 may only be given by a superuser" in error, error
    with pg_connect(fresh_db) as conn:
        conn.execute(f'SET ROLE "{r}"')
        _consume_begin(conn, topic, {"queued.min.messages": 1000})
        conn.execute("RESET ROLE")
    produce(topic, ["2,b"])
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 2, timeout=60, what="the second row")


@pytest.mark.timeout(180)
def test_broker_changes_restart_running_consumers(fresh_db, topic_factory):
    """A consumer whose workers started with a wrong broker list ingests once the list is fixed,
    without consume_begin being called again."""
    topic = topic_factory(1)
    produce(topic, [f"{i},v{i}" for i in range(5)])
    wrong = f"127.0.0.1:{_unused_port()}"
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        # The workers start at COMMIT, with the broker list as it then is: the wrong one only.
        with conn.transaction():
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
            cid = _consume_begin(conn, topic, {}, start_offset=-2)
            conn.execute("SELECT pipeline_kafka.remove_broker(%s)", [KAFKA_BOOTSTRAP])
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", [wrong])
        # Positive marker: the worker runs and cannot reach the wrong broker.
        wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", [cid]),
                   timeout=60, what="the worker's error with the wrong broker")
        assert scalar(fresh_db, "SELECT count(*) FROM t") == 0
        generation = scalar(fresh_db, "SELECT generation FROM pipeline_kafka.consumers WHERE id = %s", [cid])
        conn.execute("SELECT pipeline_kafka.remove_broker(%s)", [wrong])
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        assert scalar(fresh_db, "SELECT generation FROM pipeline_kafka.consumers WHERE id = %s", [cid]) > generation
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 5, timeout=90, what="5 rows after the fix")
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end()")


@pytest.mark.timeout(120)
def test_broker_waits_honour_statement_timeout_and_cancel(fresh_db):
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [f"127.0.0.1:{_unused_port()}"])
        conn.execute("SET pipeline_ingest.broker_timeout = '20s'")
        conn.execute("SET statement_timeout = '500ms'")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT * FROM pipeline_kafka.topic_watermarks('pi_no_topic')")
        assert time.monotonic() - started < 1.5
        conn.execute("SET statement_timeout = 0")

        # pg_cancel_backend from another session, once the call is seen waiting.
        pid = conn.info.backend_pid
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                conn.execute("SELECT * FROM pipeline_kafka.topic_watermarks('pi_no_topic')")
            except psycopg.Error as e:  # noqa: PERF203
                outcome["error"] = e
            outcome["done"] = time.monotonic()

        t = threading.Thread(target=call)
        t.start()
        wait_until(lambda: scalar(fresh_db, "SELECT state = 'active' AND query LIKE '%%topic_watermarks%%' "
                                            "FROM pg_stat_activity WHERE pid = %s", [pid]),
                   timeout=10, what="the call to be running")
        cancelled_at = time.monotonic()
        assert scalar(fresh_db, "SELECT pg_cancel_backend(%s)", [pid])
        t.join(timeout=15)
        assert not t.is_alive()
        assert outcome["error"].sqlstate == "57014"
        assert outcome["done"] - cancelled_at < 1.5


@pytest.mark.timeout(60)
def test_broker_timeout_is_superuser_only_and_capped(pg_role, fresh_db):
    r = pg_role()
    with pg_connect(fresh_db) as conn:
        assert _sqlstate(conn, "SET pipeline_ingest.broker_timeout = '61s'") == "22023"
        conn.execute("SET pipeline_ingest.broker_timeout = '60s'")
        conn.execute("RESET pipeline_ingest.broker_timeout")
        conn.execute(f'SET ROLE "{r}"')
        assert _sqlstate(conn, "SET pipeline_ingest.broker_timeout = '600s'") == "42501"
        assert _sqlstate(conn, "SET pipeline_ingest.broker_timeout = '1s'") == "42501"
        assert scalar(fresh_db, "SHOW pipeline_ingest.broker_timeout") == "5s"


@pytest.mark.timeout(60)
def test_secret_passed_as_parameter_stays_out_of_the_log(fresh_db):
    """log_min_error_statement (default error) logs the failing statement's text; a secret bound as
    a parameter is not in that text, one written as a literal is."""
    bound_secret = f"bound-{unique_name('s')}"
    literal_secret = f"literal-{unique_name('s')}"
    start = log_size()
    with pg_connect(fresh_db) as conn:
        bad = {"security.protocol": "NONSENSE", "sasl.password": bound_secret}
        assert _sqlstate(conn, "SELECT pipeline_kafka.add_broker(%s, %s)", ["127.0.0.1:9", json.dumps(bad)]) == "22023"
        bad_literal = json.dumps({"security.protocol": "NONSENSE", "sasl.password": literal_secret})
        assert _sqlstate(conn, f"SELECT pipeline_kafka.add_broker('127.0.0.1:9', '{bad_literal}')") == "22023"
    # Positive markers: both failing statements reached the log.
    wait_until(lambda: "pipeline_kafka.add_broker($1, $2)" in log_since(start) and literal_secret in log_since(start),
               timeout=10, what="both failing statements in the server log")
    assert bound_secret not in log_since(start)
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.brokers") == 0
