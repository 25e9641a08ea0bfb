"""Errors a user can act on (issue 24, item 8).

- `transform := 'graph'` (no argument types) fails in regprocedure's input, before the extension's
  code runs: the message says what to write instead (22P02), PostgreSQL's own text is the DETAIL.
- `auto.offset.reset` (under every name, with every value) is managed by the extension: refused
  with 22023 and a HINT naming start_offset / start_time, for superusers too, at consume_begin,
  add_broker and preview, and by the worker re-checking stored settings.
- Errors raised by the extension carry the file and line that raised them (LOCATION), not the
  error helper's.
- `produce_message` takes a text message and key (sent as their UTF-8 bytes).
"""
from __future__ import annotations

import json
import pathlib

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, consume_all, pg_connect, scalar, wait_until
from pihelpers import fresh_db as new_database

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
START_HINT = "the extension decides where a consumer starts: use start_offset or start_time"


def test_error_location_is_where_the_error_was_raised(fresh_db):
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (a int)")
        for sql, words in [
            ("SELECT pipeline_kafka.consume_begin('topic', 't', format := 'bogus')", "Format::parse"),
            ("SELECT pipeline_kafka.consume_begin('topic', 't', mode := 'merge')", "mode must be"),
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
