"""consume_begin on an existing consumer keeps its stored settings but for the arguments given
(issue 24, item 2): `consume_end` then `consume_begin(topic, relation)` resumes the consumer as it
was (no NOTICE, the same catalog row, messages still read as csv into the listed columns), and a
call that gives one argument changes that one only, with a NOTICE naming it. The same for Kafka,
Kinesis and stream-partitioned consumers. Before 0.7.0 every omitted argument went back to its
default (format text, columns NULL, parallelism 1) and the next csv messages became dead letters.
"""
from __future__ import annotations

import pytest

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records,
                       pg_connect, produce, query, scalar, wait_table_rows)

KAFKA_SETTINGS = ("format, delimiter, columns, batchsize, maxbytes, parallelism, timeout, on_error, "
                  "max_dead_letters, group_id, config::text, mode, metadata::text, transform")
KINESIS_SETTINGS = ("format, delimiter, columns, batchsize, parallelism, timeout, poll_interval, on_error, "
                    "max_dead_letters, config::text, mode, metadata::text, transform")


def _call(db: str, sql: str, params: list) -> tuple[int, list[str]]:
    """Runs a consume_begin; returns its id and the NOTICEs it raised."""
    notices: list[str] = []
    with pg_connect(db) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        cid = conn.execute(sql, params).fetchone()[0]
    return cid, notices


def _settings(db: str, table: str, columns: str, cid: int) -> dict:
    with pg_connect(db) as conn:
        cur = conn.execute(f"SELECT {columns} FROM {table} WHERE id = %s", [cid])
        names = [d.name for d in cur.description]
        return dict(zip(names, cur.fetchone()))


def _kafka_db(db: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE t (id int, v text, src text DEFAULT 'kept')")


@pytest.mark.timeout(120)
def test_kafka_consumer_resumes_as_it_was(fresh_db, topic_factory):
    db = fresh_db
    _kafka_db(db)
    topic = topic_factory(2)
    cid, notices = _call(db, "SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', delimiter := ';', "
                             "columns := ARRAY['v', 'id'], parallelism := 2, batchsize := 500, start_offset := -2)",
                         [topic])
    assert notices == []
    produce(topic, ["a;1"], partition=0)
    wait_table_rows(db, "t", 1)
    before = _settings(db, "pipeline_kafka.consumers", KAFKA_SETTINGS, cid)
    assert (before["format"], before["columns"], before["parallelism"]) == ("csv", ["v", "id"], 2)

    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", [topic])
    again, notices = _call(db, "SELECT pipeline_kafka.consume_begin(%s, 't')", [topic])
    assert again == cid
    assert notices == [], "nothing changed, so nothing to say"
    assert _settings(db, "pipeline_kafka.consumers", KAFKA_SETTINGS, cid) == before
    assert scalar(db, "SELECT enabled FROM pipeline_kafka.consumers WHERE id = %s", [cid]) is True
    produce(topic, ["b;2"], partition=1)
    wait_table_rows(db, "t", 2)
    assert query(db, "SELECT id, v, src FROM t ORDER BY id") == [(1, "a", "kept"), (2, "b", "kept")]
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0

    # one argument given: that one changes, with a NOTICE; the rest is kept
    _, notices = _call(db, "SELECT pipeline_kafka.consume_begin(%s, 't', parallelism := 3)", [topic])
    assert notices == [f"consumer {cid}: parallelism 2 -> 3"]
    assert _settings(db, "pipeline_kafka.consumers", KAFKA_SETTINGS, cid) == {**before, "parallelism": 3}
    # every argument given (pipeline_kafka's callers): given = changed
    _, notices = _call(db, "SELECT pipeline_kafka.consume_begin(%s, 't', 'csv', ';', NULL, NULL, 500, 32000000, 1, "
                           "NULL, 250, NULL, NULL, 'dead_letter', NULL, ARRAY['v', 'id'])", [topic])
    assert notices == [f"consumer {cid}: parallelism 3 -> 1"]
    # a new format drops the old format's options unless they are given again
    _, notices = _call(db, "SELECT pipeline_kafka.consume_begin(%s, 't', format := 'text')", [topic])
    assert notices == [f"consumer {cid}: format csv -> text, delimiter ; -> NULL"]
    assert _settings(db, "pipeline_kafka.consumers", "format, delimiter, columns", cid) == \
        {"format": "text", "delimiter": None, "columns": ["v", "id"]}


@pytest.mark.timeout(120)
def test_kinesis_consumer_resumes_as_it_was(fresh_db, stream_factory):
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(1)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int, v text, src text DEFAULT 'kept')")
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv", columns=["v", "id"], parallelism=2,
                                    batchsize=500, start_offset=-2)
    kinesis_put_records(stream, [("k", "a,1")])
    wait_table_rows(db, "t", 1)
    before = _settings(db, "pipeline_kinesis.consumers", KINESIS_SETTINGS, cid)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kinesis.consume_end('local', %s, 't')", [stream])
    again, notices = _call(db, "SELECT pipeline_kinesis.consume_begin('local', %s, 't')", [stream])
    assert (again, notices) == (cid, [])
    assert _settings(db, "pipeline_kinesis.consumers", KINESIS_SETTINGS, cid) == before
    kinesis_put_records(stream, [("k", "b,2")])
    wait_table_rows(db, "t", 2)
    assert query(db, "SELECT id, v, src FROM t ORDER BY id") == [(1, "a", "kept"), (2, "b", "kept")]
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0

    _, notices = _call(db, "SELECT pipeline_kinesis.consume_begin('local', %s, 't', parallelism := 3)", [stream])
    assert notices == [f"consumer {cid}: parallelism 2 -> 3"]
    assert _settings(db, "pipeline_kinesis.consumers", KINESIS_SETTINGS, cid) == {**before, "parallelism": 3}


@pytest.mark.timeout(120)
def test_stream_partitioned_consumer_resumes_as_it_was(fresh_db, topic_factory):
    db = fresh_db
    _kafka_db(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE p (id int, v text)")  # no column list: every column from the message
    topic = topic_factory(1)
    cid, _ = _call(db, "SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, format := 'csv', "
                       "delimiter := ';', parallelism := 2, start_offset := -2)", [topic])
    produce(topic, ["1;a"], key="p")
    wait_table_rows(db, "p", 1)
    before = _settings(db, "pipeline_kafka.consumers", KAFKA_SETTINGS, cid)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end_stream_partitioned(%s)", [topic])
    again, notices = _call(db, "SELECT pipeline_kafka.consume_begin_stream_partitioned(%s)", [topic])
    assert (again, notices) == (cid, [])
    assert _settings(db, "pipeline_kafka.consumers", KAFKA_SETTINGS, cid) == before
    produce(topic, ["2;b"], key="p")
    wait_table_rows(db, "p", 2)
    assert query(db, "SELECT id, v FROM p ORDER BY id") == [(1, "a"), (2, "b")]
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0

    _, notices = _call(db, "SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, parallelism := 3)", [topic])
    assert notices == [f"consumer {cid}: parallelism 2 -> 3"]
    assert _settings(db, "pipeline_kafka.consumers", KAFKA_SETTINGS, cid) == {**before, "parallelism": 3}


@pytest.mark.timeout(120)
def test_old_signatures_work_until_the_update_which_keeps_privileges(topic_factory):
    """0.7.0 changes consume_begin's and preview's SQL signatures (transform text, defaults NULL,
    the action column). A database still at 0.6.0 calls the library through its old definitions
    (transform regprocedure, previews without action) until ALTER EXTENSION UPDATE, and they work;
    the update keeps who may execute the new definitions (REVOKE ... FROM PUBLIC, GRANT to a role:
    README "Restricting consumers to chosen roles")."""
    import pihelpers
    topic = topic_factory(1)
    old_sig = ("pipeline_kafka.consume_begin(text, text, text, text, text, text, integer, integer, integer, bigint, "
               "integer, text, jsonb, text, integer, text[], jsonb, {}, text, text[], text, timestamptz)")
    allowed, other = pihelpers.unique_name("pi_allowed"), pihelpers.unique_name("pi_other")
    with pihelpers.fresh_db(extension=False) as db:
        try:
            with pg_connect(db) as conn:
                conn.execute("CREATE EXTENSION pipeline_ingest VERSION '0.6.0'")
                conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
                conn.execute("CREATE TABLE t (id int, v text)")
                conn.execute("CREATE FUNCTION f(pipeline_kafka.message[]) RETURNS SETOF t LANGUAGE sql "
                             "AS 'SELECT 1, NULL::text'")
                cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', transform := 'f(pipeline_kafka.message[])')",
                                   [topic]).fetchone()[0]
                assert conn.execute("SELECT transform FROM pipeline_kafka.consumers WHERE id = %s",
                                    [cid]).fetchone() == ("public.f(pipeline_kafka.message[])",)
                cur = conn.execute("SELECT * FROM pipeline_kafka.preview(%s, 't', format := 'csv', \"limit\" := 1, "
                                   "start_offset := -1)", [topic])
                assert [d.name for d in cur.description] == ["partition", "offset", "row", "error", "sqlstate"]
                conn.execute(f"CREATE ROLE {allowed}")
                conn.execute(f"CREATE ROLE {other}")
                conn.execute(f"REVOKE EXECUTE ON FUNCTION {old_sig.format('regprocedure')} FROM PUBLIC")
                conn.execute(f"GRANT EXECUTE ON FUNCTION {old_sig.format('regprocedure')} TO {allowed}")
            with pg_connect(db) as conn:
                conn.execute("ALTER EXTENSION pipeline_ingest UPDATE")
                # (0.8.0 appended schema_registry text)
                new = old_sig.format("text")[:-1] + ", text)"
                assert conn.execute(f"SELECT has_function_privilege('{allowed}', '{new}', 'EXECUTE'), "
                                    f"has_function_privilege('{other}', '{new}', 'EXECUTE')").fetchone() == (True, False)
                # a preview (and any other function whose privileges were not changed) keeps PUBLIC's
                assert conn.execute(f"SELECT has_function_privilege('{other}', "
                                    "'pipeline_kafka.preview(text, text, text, text, text, text, text[], jsonb, text, "
                                    "text, text[], text, integer, bigint)', 'EXECUTE')").fetchone() == (True,)
                conn.execute("SELECT pipeline_kafka.consume_drop(%s, 't')", [topic])
        finally:
            with pg_connect("postgres") as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
                conn.execute(f"DROP ROLE IF EXISTS {allowed}")
                conn.execute(f"DROP ROLE IF EXISTS {other}")


@pytest.mark.timeout(120)
def test_a_consumer_taken_over_by_another_owner_keeps_none_of_its_settings(fresh_db, topic_factory, roles):
    """Only the consumer's own owner resumes its settings: when its table is dropped and created
    again by another role, which takes the consumer over with consume_begin, the settings not
    given are the defaults (as before 0.7.0): the old owner's client settings, error policy and
    columns do not pass to the new owner."""
    db = fresh_db
    topic = topic_factory(1)
    victim, other = roles("pi_vic"), roles("pi_oth")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE SCHEMA shared")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA shared TO {victim}, {other}")
    with pg_connect(db, user=victim) as conn:
        conn.execute("CREATE TABLE shared.t (id int, v text)")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'shared.t', format := 'csv', columns := ARRAY['v', 'id'], "
                           "on_error := 'stop', parallelism := 2, config := '{\"fetch.wait.max.ms\": 50}')",
                           [topic]).fetchone()[0]
        conn.execute("DROP TABLE shared.t")
    with pg_connect(db, user=other) as conn:
        conn.execute("CREATE TABLE shared.t (id int, v text)")
        assert conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'shared.t')", [topic]).fetchone()[0] == cid
    got = _settings(db, "pipeline_kafka.consumers", "owner::text, format, columns, on_error, parallelism, config::text", cid)
    assert got == {"owner": other, "format": "text", "columns": None, "on_error": "dead_letter", "parallelism": 1,
                   "config": "{}"}, got
