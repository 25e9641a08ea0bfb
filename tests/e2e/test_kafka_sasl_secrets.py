"""Client settings reach librdkafka (SASL against the local broker's SASL_PLAINTEXT listener),
bad settings are errors at the SQL call, wrong credentials show as an authentication error, and
secrets are readable by no one but superusers: not in the readable catalog, not in the status view,
not in error messages, not in the server log."""
from __future__ import annotations

import json

import psycopg
import pytest

from pihelpers import (KAFKA_SASL_BOOTSTRAP, KAFKA_SASL_PASSWORD, KAFKA_SASL_USER, log_since, log_size, pg_connect, produce,
                       query, scalar, wait_until)

SASL = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": KAFKA_SASL_USER}


@pytest.mark.timeout(120)
def test_ingest_through_sasl_with_broker_settings(fresh_db, topic_factory):
    topic = topic_factory(2)
    produce(topic, [f"{i},v{i}" for i in range(50)])
    log_start = log_size()
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s, %s)",
                     (KAFKA_SASL_BOOTSTRAP, json.dumps(dict(SASL, **{"sasl.password": KAFKA_SASL_PASSWORD}))))
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)",
                           (topic,)).fetchone()[0]
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 50, timeout=60, what="50 rows over SASL")
        assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM t") == 50
        # the readable catalog shows the password masked
        shown = scalar(fresh_db, "SELECT config FROM pipeline_kafka.brokers")
        assert shown["sasl.password"] == "********" and shown["sasl.username"] == KAFKA_SASL_USER
        assert KAFKA_SASL_PASSWORD not in json.dumps(query(fresh_db, "SELECT * FROM pipeline_kafka.consumer_status"),
                                                     default=str)
        # producing goes through the same broker settings
        conn.execute("SELECT pipeline_kafka.produce_message(%s, '1000,produced', partition := 0)", (topic,))
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t WHERE id = 1000") == 1, timeout=60,
                   what="a produced message to come back through the consumer")
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", (topic,))
        assert scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", (cid,)) is None
    assert KAFKA_SASL_PASSWORD not in log_since(log_start)


@pytest.mark.timeout(120)
def test_wrong_credentials_show_an_authentication_error(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ["1,a"])
    log_start = log_size()
    with pg_connect(fresh_db) as conn:
        conn.execute("SET pipeline_ingest.broker_timeout = 3000")
        conn.execute("CREATE TABLE t (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s, %s)",
                     (KAFKA_SASL_BOOTSTRAP, json.dumps(dict(SASL, **{"sasl.password": "wrong-password-1"}))))
        # checked at consume_begin: the brokers refuse the metadata request
        with pytest.raises(psycopg.errors.SqlclientUnableToEstablishSqlconnection) as e:
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)", (topic,))
        assert "wrong-password-1" not in str(e.value)
        # a consumer stored with good credentials, whose broker entry later gets wrong ones, shows the
        # authentication failure in its status and keeps retrying
        conn.execute("SELECT pipeline_kafka.remove_broker(%s)", (KAFKA_SASL_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.add_broker(%s, %s)",
                     (KAFKA_SASL_BOOTSTRAP, json.dumps(dict(SASL, **{"sasl.password": KAFKA_SASL_PASSWORD}))))
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)",
                           (topic,)).fetchone()[0]
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM t") == 1, timeout=60, what="the first row")
        conn.execute("SELECT pipeline_kafka.consume_end()")
        conn.execute("SELECT pipeline_kafka.remove_broker(%s)", (KAFKA_SASL_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.add_broker(%s, %s)",
                     (KAFKA_SASL_BOOTSTRAP, json.dumps(dict(SASL, **{"sasl.password": "wrong-password-2"}))))
        conn.execute("SELECT pipeline_kafka.consume_begin()")
        err = wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                        (cid,)), timeout=60, what="the authentication error")
        assert "auth" in err.lower() or "sasl" in err.lower(), err
        state = scalar(fresh_db, "SELECT DISTINCT state FROM pipeline_kafka.consumer_status WHERE consumer_id = %s", (cid,))
        assert state in ("error", "starting"), state
        conn.execute("SELECT pipeline_kafka.consume_end()")
    log = log_since(log_start)
    assert "wrong-password-1" not in log and "wrong-password-2" not in log and KAFKA_SASL_PASSWORD not in log


@pytest.mark.timeout(60)
def test_settings_are_checked_and_secrets_hidden_from_other_roles(fresh_db, topic_factory):
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        # bad keys or values are errors at the call, secrets are not echoed back
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            conn.execute("SELECT pipeline_kafka.add_broker('127.0.0.1:1', %s)",
                         (json.dumps({"security.protocol": "NOT_A_PROTOCOL"}),))
        assert "security.protocol" in str(e.value)
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            conn.execute("SELECT pipeline_kafka.add_broker('127.0.0.1:1', %s)",
                         (json.dumps({"sasl.passwrd.typo": "s3cret-value"}),))
        assert "s3cret-value" not in str(e.value)
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT pipeline_kafka.add_broker('127.0.0.1:1', '[]')")
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.brokers") == 0

        conn.execute("SELECT pipeline_kafka.add_broker(%s, %s)",
                     (KAFKA_SASL_BOOTSTRAP, json.dumps(dict(SASL, **{"sasl.password": KAFKA_SASL_PASSWORD}))))
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', "
                     "config := %s)", (topic, json.dumps({"ssl.key.password": "consumer-level-secret",
                                                          "fetch.wait.max.ms": 100})))
        cfg = scalar(fresh_db, "SELECT config FROM pipeline_kafka.consumers")
        assert cfg == {"ssl.key.password": "********", "fetch.wait.max.ms": 100}
        # superusers can see the secrets table; nobody else
        assert {r[0] for r in query(fresh_db, "SELECT key FROM pipeline_kafka.secrets")} == {"sasl.password",
                                                                                            "ssl.key.password"}
        conn.execute("CREATE ROLE pi_secret_reader")
        try:
            conn.execute("SET ROLE pi_secret_reader")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT * FROM pipeline_kafka.secrets")
            conn.execute("RESET ROLE")
            conn.execute("SET ROLE pi_secret_reader")
            visible = json.dumps([conn.execute(f"SELECT * FROM pipeline_kafka.{t}").fetchall()
                                  for t in ("brokers", "consumers", "consumer_status")], default=str)
            assert KAFKA_SASL_PASSWORD not in visible and "consumer-level-secret" not in visible
        finally:
            conn.execute("RESET ROLE")
            conn.execute("SELECT pipeline_kafka.consume_end()")
            conn.execute("DROP ROLE pi_secret_reader")
