"""consume_begin errors as seen end to end (the api side's pg_regress tests cover every SQLSTATE):
an unknown endpoint or stream is 42704, an unknown relation 42P01; nothing is stored by a failed
call, and a valid call afterwards works."""
from __future__ import annotations

import psycopg
import pytest

from pihelpers import kinesis_add_endpoint, kinesis_put_records, pg_connect, query, scalar, unique_name, wait_until


@pytest.mark.timeout(90)
def test_unknown_endpoint_stream_relation(stream_factory, fresh_db):
    db = fresh_db
    stream, _ = stream_factory(1)

    def sqlstate_of(conn, sql, params=()):
        with pytest.raises(psycopg.Error) as ei:
            conn.execute(sql, params)
        return ei.value.sqlstate

    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (v text)")
        assert sqlstate_of(conn, "SELECT pipeline_kinesis.consume_begin('local', %s, 't')", [stream]) == "42704"
        kinesis_add_endpoint(db)
        assert sqlstate_of(conn, "SELECT pipeline_kinesis.consume_begin('nope', %s, 't')", [stream]) == "42704"
        assert sqlstate_of(conn, "SELECT pipeline_kinesis.consume_begin('local', %s, 't')",
                           [unique_name("pi_missing")]) == "42704"
        assert sqlstate_of(conn, "SELECT pipeline_kinesis.consume_begin('local', %s, 'no_such_table')",
                           [stream]) == "42P01"
        assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.consumers") == 0
        assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.seqnums") == 0
        cid = conn.execute("SELECT pipeline_kinesis.consume_begin('local', %s, 't', start_offset := -2)",
                           [stream]).fetchone()[0]
    assert query(db, "SELECT id, endpoint, stream, relation::text FROM pipeline_kinesis.consumers") == [
        (cid, "local", stream, "t")]
    kinesis_put_records(stream, [("k", "works")])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM t") == 1, timeout=30, what="the valid consumer to run")
    assert query(db, "SELECT v FROM t") == [("works",)]
