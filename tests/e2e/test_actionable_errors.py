"""Errors a user can act on (issue 24, item 8).

- `auto.offset.reset` (under every name, with every value) is managed by the extension: refused
  with 22023 and a HINT naming start_offset / start_time, for superusers too, at consume_begin,
  add_broker and preview, and by the worker re-checking stored settings.
- Errors raised by the extension carry the file and line that raised them (LOCATION), not the
  error helper's.
"""
from __future__ import annotations

import json
import pathlib

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, scalar, wait_until

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
START_HINT = "the extension decides where a consumer starts: use start_offset or start_time"


def error_of(conn: psycopg.Connection, sql: str, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as ei:
        conn.execute(sql, params)
    return ei.value


def test_auto_offset_reset_is_refused_with_a_hint_at_every_call(pg_role, fresh_db):
    role = pg_role()
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (a int)")
        conn.execute(f'ALTER TABLE t OWNER TO "{role}"')
        for name in ("auto.offset.reset", "topic.auto.offset.reset"):
            for value in ("smallest", "earliest", "beginning", "largest", "latest", "end"):
                setting = json.dumps({name: value})
                for who in ("postgres", role):
                    conn.execute(f'SET ROLE "{who}"')
                    e = error_of(conn, "SELECT pipeline_kafka.consume_begin('topic', 't', config := %s)", [setting])
                    conn.execute("RESET ROLE")
                    assert e.sqlstate == "22023", (who, setting, e)
                    assert e.diag.message_primary == f'setting "{name}" is managed by pipeline_ingest and cannot be set'
                    assert e.diag.message_hint == START_HINT
                e = error_of(conn, "SELECT pipeline_kafka.add_broker('127.0.0.1:9', %s)", [setting])
                assert (e.sqlstate, e.diag.message_hint) == ("22023", START_HINT), e
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.brokers") == 0
        # A broker entry stored without the check (by an older release): preview refuses it too.
        conn.execute("INSERT INTO pipeline_kafka.brokers VALUES (%s, '{\"auto.offset.reset\": \"latest\"}')",
                     [KAFKA_BOOTSTRAP])
        e = error_of(conn, "SELECT * FROM pipeline_kafka.preview('topic', 't')")
        assert (e.sqlstate, e.diag.message_hint) == ("22023", START_HINT), e


@pytest.mark.timeout(120)
def test_worker_refuses_a_stored_auto_offset_reset(fresh_db, topic_factory):
    """A superuser's consumer whose stored settings hold auto.offset.reset (written without the
    check) is stopped by its worker, with the hint in last_error."""
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE t (a int)")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't')", [topic]).fetchone()[0]
        conn.execute("UPDATE pipeline_kafka.consumers SET config = '{\"auto.offset.reset\": \"latest\"}', "
                     "generation = generation + 1 WHERE id = %s", [cid])
    error = wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers "
                                                "WHERE id = %s AND NOT enabled", [cid]),
                       timeout=60, what="the consumer to be stopped")
    assert 'setting "auto.offset.reset" is managed by pipeline_ingest' in error, error
    assert START_HINT in error, error


def test_error_location_is_where_the_error_was_raised(fresh_db):
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (a int)")
        for sql, words in [
            ("SELECT pipeline_kafka.consume_begin('topic', 't', format := 'bogus')", "Format::parse"),
            ("SELECT pipeline_kafka.consume_begin('topic', 't', mode := 'merge')", "Spec::check"),
            ("SELECT pipeline_kafka.consume_end(NULL, 't')", None),
        ]:
            e = error_of(conn, sql)
            path = e.diag.source_file
            assert path and path != "error.rs", (sql, path, e.diag.source_line)
            matches = [p for p in SRC.rglob(path)]
            assert matches, (sql, path)
            line = int(e.diag.source_line)
            text = "\n".join(p.read_text().splitlines()[line - 1] for p in matches)
            assert "raise" in text or "required" in text or "invalid" in text, (sql, path, line, text)
            if words:
                # the raising call (or the line just around it) is the one of this error
                window = "\n".join("\n".join(p.read_text().splitlines()[line - 3:line + 2]) for p in matches)
                assert words in window, (sql, path, line, window)


def test_transform_without_argument_types_says_how_to_name_it(fresh_db):
    """`transform := 'graph'` (a name without argument types) is 22023 saying how to name the
    function, for both systems and for previews, not PostgreSQL's regprocedure input error
    `22P02 expected a left parenthesis`; a named function that does not exist stays 42883."""
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (a int)")
        calls = [
            ("SELECT pipeline_kafka.consume_begin('topic', 't', transform := 'graph')", "pipeline_kafka.message[]"),
            ("SELECT * FROM pipeline_kafka.preview('topic', 't', transform := 'graph')", "pipeline_kafka.message[]"),
            ("SELECT pipeline_kinesis.consume_begin('local', 's', 't', transform := 'graph')", "pipeline_kinesis.record[]"),
            ("SELECT * FROM pipeline_kinesis.preview('local', 's', 't', transform := 'graph')", "pipeline_kinesis.record[]"),
        ]
        for sql, array in calls:
            e = error_of(conn, sql)
            assert e.sqlstate == "22023", (sql, e)
            assert e.diag.message_primary == f"transform must name a function with its argument types, e.g. 'graph({array})'"
        e = error_of(conn, "SELECT pipeline_kafka.consume_begin('topic', 't', transform := 'graph(pipeline_kafka.message[])')")
        assert e.sqlstate == "42883", e
