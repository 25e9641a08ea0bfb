"""Kinesis endpoint outage, end to end: a private kinesalite (own port, LevelDB store, so the
shared one the other tests use is untouched) is stopped for 20 s in the middle of a stream and
started again on the same port with the same data. Meanwhile consumer_status shows the error;
afterwards ingestion resumes by itself and every record is in the table exactly once."""
from __future__ import annotations

import time

import pytest
from psycopg.types.json import Jsonb

from pihelpers import (kinesis_add_endpoint, kinesis_consume_begin, pipeline_diag, kinesis_put_records, kinesis_status,
                       pg_connect, scalar, unique_name, wait_table_rows, wait_until)

OUTAGE_S = 20.0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kinesalite_down_for_20s_mid_stream(own_kinesalite, fresh_db, log_mark):
    db = fresh_db
    k = own_kinesalite.client()
    stream = unique_name("pi_outage")
    k.create_stream(StreamName=stream, ShardCount=2)
    wait_until(lambda: k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"]
               == "ACTIVE", timeout=30, what="stream ACTIVE")
    kinesis_add_endpoint(db, "private", own_kinesalite.url)
    first, second = 6000, 2000
    kinesis_put_records(stream, [(f"k{i % 23}", f"{i},first") for i in range(first)], client=k)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (i int, phase text)")
        # small batches so that the outage lands mid-stream; a short backoff cap so that the
        # worker notices the restarted endpoint soon
        cid = kinesis_consume_begin(conn, "private", stream, "t", format="csv", start_offset=-2, batchsize=100,
                                    config=Jsonb({"retry_max_ms": 2000}))

    def rows() -> int:
        return scalar(db, "SELECT count(*) FROM t")

    wait_until(lambda: rows() >= 500, timeout=60, interval=0.05, what="ingestion to start")
    own_kinesalite.stop()
    stopped_at = time.monotonic()
    at_stop = rows()

    def error_shown():
        st = kinesis_status(db, cid)
        return [r for r in st if r["state"] == "error" and r["last_error"]]

    try:
        shown = wait_until(error_shown, timeout=OUTAGE_S - 2, what="consumer_status to show the outage")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{pipeline_diag(db, log_mark)}") from None
    print(f"error shown after {time.monotonic() - stopped_at:.1f}s: {shown[0]['last_error']!r}")
    # The outage lasts 20 s whatever the consumer does: this is the scenario, not a guess.
    wait_until(lambda: time.monotonic() - stopped_at >= OUTAGE_S, timeout=OUTAGE_S + 1, interval=0.5,
               what="the end of the outage")
    assert rows() < first, "the outage did not land mid-stream"
    own_kinesalite.start()
    kinesis_put_records(stream, [(f"k{i % 23}", f"{i},second") for i in range(first, first + second)], client=k)

    wait_table_rows(db, "t", first + second, timeout=120, log_mark=log_mark)
    assert scalar(db, "SELECT count(DISTINCT i) FROM t") == first + second
    assert at_stop < first

    def recovered():
        st = kinesis_status(db, cid)
        return st if st and all(r["state"] == "running" and r["last_error"] is None for r in st) else None

    try:
        wait_until(recovered, timeout=30, what="consumer_status to be running without an error again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{pipeline_diag(db, log_mark)}") from None
