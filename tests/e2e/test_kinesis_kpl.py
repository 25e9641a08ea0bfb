"""KPL-aggregated records, end to end, with aggregates the tests build themselves
(pihelpers.kpl_aggregate): de-aggregated into one message per user record, in order, mixed with
plain records; a corrupt MD5 makes the record a plain record; a bad user record is a dead letter
of its own (with its sub-sequence and partition key); a kill -9 of the postmaster between the
batches of one large aggregate loses and repeats no user record.

Most streams have one shard, so every user record's hash key lies in the shard's range; one test
puts an aggregate into one of two shards with user records routed (by explicit hash key or
partition key) to both: those of the other shard are skipped, as the KCL does, counted in
consumer_status.skipped_records and logged; with config kpl_records_outside_shard "keep" they are
ingested.
"""
from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pihelpers import (kinesis_add_endpoint, kinesis_consume_begin, pipeline_diag, kinesis_hash_key,
                       kinesis_put_records, kinesis_seqnums, kinesis_shards, kpl_aggregate, log_since,
                       pg_connect, pg_kill9_postmaster, pg_start, query, scalar, wait_table_rows, wait_until)


@pytest.mark.timeout(120)
def test_plain_and_aggregated_records_mixed(stream_factory, fresh_db, log_mark):
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(1)
    n = iter(range(1, 10_000))

    def rec(src: str) -> bytes:
        return f"{next(n)},{src}".encode()

    records = [
        ("plain-1", rec("plain")),
        ("outer-1", kpl_aggregate([("a", rec("agg1")), ("b", rec("agg1")), ("a", rec("agg1"))])),
        ("plain-2", rec("plain")),
        # an empty user record holds no rows; a user record may hold several lines
        ("outer-2", kpl_aggregate([("c", b""), ("d", rec("agg2") + b"\n" + rec("agg2")), ("c", rec("agg2"))])),
        ("outer-3", kpl_aggregate([("e", rec("agg3"))])),
        ("outer-4", kpl_aggregate([(f"key-{i % 9}", rec("agg4")) for i in range(200)])),
        ("plain-3", rec("plain")),
    ]
    expected = next(n) - 1
    kinesis_put_records(stream, records)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id bigserial, n int, src text)")
        kinesis_consume_begin(conn, "local", stream, "t", format="csv", columns=["n", "src"], start_offset=-2,
                              batchsize=50)
    wait_table_rows(db, "t", expected, log_mark=log_mark)
    # one row per user record (per line), in the order of the records and of their user records
    assert [r[0] for r in query(db, "SELECT n FROM t ORDER BY id")] == list(range(1, expected + 1))
    assert query(db, "SELECT src, count(*) FROM t GROUP BY 1 ORDER BY 1") == [
        ("agg1", 3), ("agg2", 3), ("agg3", 1), ("agg4", 200), ("plain", 3)]
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0


@pytest.mark.timeout(120)
def test_corrupt_md5_is_a_plain_record_and_bad_user_records_are_dead_letters(stream_factory, fresh_db,
                                                                             log_mark):
    """json: a good aggregate gives its rows; the same aggregate with a corrupt digest is one plain
    record, invalid JSON, so one dead letter holding the whole record's raw bytes; a bad user
    record in a good aggregate is a dead letter with its own data, partition key and sub-sequence."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, [shard] = stream_factory(1)
    users = [("u0", b'{"id": 1}'), ("u1", b'{"id": 2}'), ("u2", b'{"id": "two"}'), ("u3", b'{"id": 3}')]
    good = kpl_aggregate(users)
    corrupt = kpl_aggregate([("v0", b'{"id": 100}'), ("v1", b'{"id": 101}')], corrupt_md5=True)
    sent = kinesis_put_records(stream, [("outer-good", good), ("outer-corrupt", corrupt),
                                        ("plain", b'{"id": 4}')])
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE j (id int)")
        cid = kinesis_consume_begin(conn, "local", stream, "j", format="json", start_offset=-2)
    try:
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") >= 2
                   and scalar(db, "SELECT count(*) FROM j") >= 4, timeout=60, what="4 rows and 2 dead letters")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{pipeline_diag(db, log_mark)}") from None
    assert [r[0] for r in query(db, "SELECT id FROM j ORDER BY id")] == [1, 2, 3, 4]
    letters = {r[5]: r for r in query(
        db, "SELECT consumer_id, stream, shard_id, sequence_number, sub_sequence, partition_key, data, "
            "sqlstate, error FROM pipeline_kinesis.dead_letters")}
    assert sorted(letters) == ["outer-corrupt", "u2"], letters
    bad_user, plain = letters["u2"], letters["outer-corrupt"]
    assert bad_user[:5] == (cid, stream, shard, sent[0][1], 2), bad_user
    assert bytes(bad_user[6]) == b'{"id": "two"}' and bad_user[7] == "22P02" and bad_user[8], bad_user
    assert plain[:4] == (cid, stream, shard, sent[1][1]), plain
    assert bytes(plain[6]) == corrupt, "the dead letter must hold the record's raw bytes"
    assert plain[7] and plain[7].startswith("22") and plain[8], plain


def _aggregate_across_two_shards(stream_factory) -> tuple[str, dict, list[tuple[str, str]]]:
    """A 2-shard stream holding, in its low shard, an aggregate whose user records route (by
    explicit hash key or partition key) to the low or the high shard, then a plain marker record.
    Returns (stream, low shard, [(shard, seqnum) of the aggregate, of the marker])."""
    stream, _ = stream_factory(2)
    low, high = kinesis_shards(stream)
    assert low["end_hash"] < high["start_hash"]
    keys = [f"key-{i}" for i in range(200)]
    low_key = next(k for k in keys if kinesis_hash_key(k) <= low["end_hash"])
    high_key = next(k for k in keys if kinesis_hash_key(k) >= high["start_hash"])
    agg = kpl_aggregate([
        ("a", "1,low-by-hash-key", low["start_hash"]),
        ("b", "2,high-by-hash-key", high["end_hash"]),
        (low_key, "3,low-by-partition-key"),
        (high_key, "4,high-by-partition-key"),
        ("e", "5,low-by-hash-key", low["end_hash"]),
    ])
    sent = kinesis_put_records(stream, [("outer", agg, low["start_hash"]), ("marker", "6,marker", low["start_hash"])])
    assert [s for s, _ in sent] == [low["shard_id"]] * 2
    return stream, low, sent


def _skipped_records(db: str, cid: int, shard_id: str) -> int:
    return scalar(db, "SELECT skipped_records FROM pipeline_kinesis.consumer_status "
                      "WHERE consumer_id = %s AND shard_id = %s", [cid, shard_id])


@pytest.mark.timeout(120)
def test_user_records_outside_the_shard_hash_range_are_skipped_counted_and_logged(stream_factory, fresh_db,
                                                                                  log_mark):
    """By default (config kpl_records_outside_shard "skip", as the KCL): only the low shard's user
    records become rows, in order; the 2 others are counted in consumer_status.skipped_records of
    the shard and logged in one line naming the shard, the count and the setting."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, low, sent = _aggregate_across_two_shards(stream_factory)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id bigserial, n int, what text)")
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv", columns=["n", "what"],
                                    start_offset=-2)
    # the marker follows the aggregate in the same shard
    wait_table_rows(db, "t", 4, log_mark=log_mark)
    assert query(db, "SELECT n, what FROM t ORDER BY id") == [
        (1, "low-by-hash-key"), (3, "low-by-partition-key"), (5, "low-by-hash-key"), (6, "marker")]
    assert kinesis_seqnums(db, cid)[low["shard_id"]][0] == sent[1][1]
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0
    wait_until(lambda: _skipped_records(db, cid, low["shard_id"]) == 2, timeout=10,
               what="2 skipped records in consumer_status")
    # after those of 0.5.0 (0.7.0 appends warning, rows_per_second, relation_name after it)
    columns = [r[0] for r in query(db, "SELECT attname FROM pg_attribute WHERE attrelid = "
                                       "'pipeline_kinesis.consumer_status'::regclass AND attnum > 0 ORDER BY attnum")]
    at = columns.index("last_error")
    assert columns[at:at + 3] == ["last_error", "last_error_at", "skipped_records"]
    lines = [line for line in log_since(log_mark).splitlines() if "outside the shard's range" in line]
    assert len(lines) == 1, lines
    assert f"consumer {cid}: skipped 2 KPL user record(s) of shard {low['shard_id']}" in lines[0]
    assert "kpl_records_outside_shard" in lines[0]


@pytest.mark.timeout(120)
def test_user_records_outside_the_shard_are_kept_with_the_config_option(stream_factory, fresh_db, log_mark):
    """config kpl_records_outside_shard "keep" (producers aggregating without the KPL, which never
    send a user record again): every user record of the aggregate becomes a row, in order, and
    none is counted as skipped."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, low, sent = _aggregate_across_two_shards(stream_factory)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id bigserial, n int, what text)")
        cid = kinesis_consume_begin(conn, "local", stream, "t", format="csv", columns=["n", "what"],
                                    start_offset=-2, config=Jsonb({"kpl_records_outside_shard": "keep"}))
    wait_table_rows(db, "t", 6, log_mark=log_mark)
    assert query(db, "SELECT n, what FROM t ORDER BY id") == [
        (1, "low-by-hash-key"), (2, "high-by-hash-key"), (3, "low-by-partition-key"),
        (4, "high-by-partition-key"), (5, "low-by-hash-key"), (6, "marker")]
    assert kinesis_seqnums(db, cid)[low["shard_id"]][0] == sent[1][1]
    assert _skipped_records(db, cid, low["shard_id"]) == 0
    assert "outside the shard's range" not in log_since(log_mark)


def test_kpl_records_outside_shard_setting_is_checked(fresh_db):
    """Only "skip" and "keep": anything else is refused (22023) when the consumer is made."""
    db = fresh_db
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (n int)")
        for bad in ("Keep", "drop", True, None):
            with pytest.raises(psycopg.Error) as e:
                with conn.transaction():
                    kinesis_consume_begin(conn, "local", "s", "t", config=Jsonb({"kpl_records_outside_shard": bad}))
            assert e.value.sqlstate == "22023", e.value
            assert "kpl_records_outside_shard must be" in str(e.value)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill9_in_the_middle_of_an_aggregate(stream_factory, fresh_db, log_mark):
    """One Kinesis record holding 500 user records, between two plain records, batchsize 100. A
    trigger makes the batch holding user record 250 wait on an advisory lock the test holds, so the
    postmaster is killed while the aggregate is partly committed (200 user records in, with batches
    of 100). After the restart every user record is in the table once, in order."""
    db = fresh_db
    kinesis_add_endpoint(db)
    stream, _ = stream_factory(1)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id bigserial, n int)")
        conn.execute("""
            CREATE FUNCTION hold_at_250() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.n = 250 THEN
                    PERFORM pg_advisory_xact_lock_shared(4242);
                END IF;
                RETURN NEW;
            END $$""")
        conn.execute("CREATE TRIGGER hold BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION hold_at_250()")
    agg = kpl_aggregate([(f"user-{i % 17}", str(i)) for i in range(1, 501)])
    sent = kinesis_put_records(stream, [("before", "0"), ("outer", agg), ("after", "501")])
    assert len({s for s, _ in sent}) == 1

    holder = pg_connect(db)
    try:
        holder.execute("SELECT pg_advisory_lock(4242)")
        with pg_connect(db) as conn:
            cid = kinesis_consume_begin(conn, "local", stream, "t", format="text", columns=["n"], start_offset=-2,
                                        batchsize=100)

        def blocked():
            waiting = scalar(db, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 "
                                 "AND NOT granted")
            return waiting and scalar(db, "SELECT count(*) FROM t")

        try:
            committed = wait_until(blocked, timeout=60, what="the batch holding user record 250 to wait on the lock")
        except AssertionError as exc:
            raise AssertionError(f"{exc}{pipeline_diag(db, log_mark)}") from None
        # Batches of at most 100 messages: the plain record and some user records of the aggregate
        # are committed (with the checkpoint inside the aggregate), the batch holding 250 waits.
        assert 1 < committed < 250, committed
        assert [r[0] for r in query(db, "SELECT n FROM t ORDER BY id")] == list(range(committed))
        # the checkpoint points inside the aggregate: its sequence number and the index of the last
        # user record committed (user record i has index i - 1; row "0" is the plain record before)
        assert list(kinesis_seqnums(db, cid).values()) == [(sent[1][1], committed - 2, False)]
        pg_kill9_postmaster()
    finally:
        holder.close()
    pg_start()  # the lock died with its session
    wait_table_rows(db, "t", 502, log_mark=log_mark)
    assert [r[0] for r in query(db, "SELECT n FROM t ORDER BY id")] == list(range(502))
