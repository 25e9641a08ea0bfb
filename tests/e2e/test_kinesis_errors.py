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


@pytest.mark.timeout(60)
def test_stream_check_is_cancelled_by_statement_timeout(fresh_db):
    """An endpoint that accepts connections and never answers holds consume_begin's stream check
    up to pipeline_ingest.broker_timeout; a statement timeout (or a cancel) ends it at once with
    57014, as it ends any other statement."""
    import socket
    import threading
    import time

    db = fresh_db
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except OSError:
                pass

    t = threading.Thread(target=accept_and_stay_silent, daemon=True)
    t.start()
    try:
        with pg_connect(db) as conn:
            conn.execute("CREATE TABLE t (v text)")
            conn.execute("SELECT pipeline_kinesis.add_endpoint('silent', 'us-east-1', NULL, %s)",
                         [f"http://127.0.0.1:{port}"])
            conn.execute("SET pipeline_ingest.broker_timeout = 30000")
            conn.execute("SET statement_timeout = '700ms'")
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pipeline_kinesis.consume_begin('silent', 'anything', 't')")
            took = time.monotonic() - t0
        assert held, "the endpoint was reached (the call really waited on it)"
        assert took < 5, f"cancelled after {took:.1f} s, not within the statement timeout"
        assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.consumers") == 0
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        listener.close()
