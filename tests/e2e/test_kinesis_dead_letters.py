"""Bad Kinesis records never stall a consumer and are never lost: each one lands in
pipeline_kinesis.dead_letters (raw bytes, shard, sequence number, partition key, error,
SQLSTATE) in the same transaction as its batch's good rows and checkpoints; or is skipped, or
stops the consumer, per on_error."""
from __future__ import annotations

import pytest

from pihelpers import (kinesis_add_endpoint, kinesis_consume_begin, pipeline_diag, kinesis_put_records,
                       kinesis_seqnums, kinesis_status, pg_connect, query, scalar, wait_until)

TABLE = """
CREATE TABLE target (id int PRIMARY KEY, amount int CHECK (amount >= 0), name text NOT NULL);
CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.name = 'boom' THEN RAISE EXCEPTION 'no boom allowed' USING ERRCODE = 'P0001'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_boom BEFORE INSERT ON target FOR EACH ROW EXECUTE FUNCTION refuse_boom();
"""

GOOD = [f"{i},{i * 10},name{i}".encode() for i in range(1, 41)]
# (record, expected SQLSTATE): one of each kind of bad data
BAD = [
    (b"101,notanumber,x", "22P02"),        # a value of the wrong type
    (b"102,5", "22P04"),                    # missing column
    (b"103,5,x,extra", "22P04"),            # extra column
    (b"104,5,\xff\xfe", "22021"),           # invalid UTF-8
    (b"105,-1,negative", "23514"),          # CHECK violation
    (b"106,5,", "23502"),                   # NOT NULL violation (unquoted empty = NULL in csv)
    (b"1,5,duplicate", "23505"),            # unique violation (id 1 is a good record)
    (b"107,5,boom", "P0001"),               # error raised by a trigger
    (b'108,5,"unterminated', "22P04"),      # would swallow the next record
]


def _interleaved() -> list[tuple[str, bytes]]:
    """(partition key, data): good and bad records mixed, bad ones after the first good ones (so
    id 1 exists first), each bad record with its own partition key."""
    recs = [(f"good-{i}", m) for i, m in enumerate(GOOD[:5])]
    for i, (bad, _) in enumerate(BAD):
        recs.append((f"bad-{i}", bad))
        recs.extend((f"good-{5 + i * 3 + j}", m) for j, m in enumerate(GOOD[5 + i * 3: 8 + i * 3]))
    recs.extend((f"good-{5 + len(BAD) * 3 + j}", m) for j, m in enumerate(GOOD[5 + len(BAD) * 3:]))
    assert sorted(m for _, m in recs if m in GOOD) == sorted(GOOD)
    return recs


def _setup(db: str, stream: str, **opts) -> int:
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute(TABLE)
        return kinesis_consume_begin(conn, "local", stream, "target", format="csv", start_offset=-2,
                                     batchsize=1000, **opts)


@pytest.mark.timeout(120)
def test_every_bad_kind_is_dead_lettered_with_its_bytes(stream_factory, fresh_db, log_mark):
    db = fresh_db
    stream, shards = stream_factory(2)
    recs = _interleaved()
    sent = kinesis_put_records(stream, recs)
    where = {m: s for (_, m), s in zip(recs, sent)}
    cid = _setup(db, stream)
    try:
        total = wait_until(lambda: (n := scalar(db, "SELECT (SELECT count(*) FROM target) + "
                                                    "(SELECT count(*) FROM pipeline_kinesis.dead_letters)"))
                           >= len(recs) and n, timeout=60, what="every record in the table or the dead letters")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{pipeline_diag(db, log_mark)}") from None
    assert total == len(recs)
    assert sorted(r[0] for r in query(db, "SELECT id FROM target")) == list(range(1, 41))
    letters = query(db, "SELECT consumer_id, stream, shard_id, sequence_number, partition_key, data, sqlstate, "
                        "error, failed_at FROM pipeline_kinesis.dead_letters")
    assert len(letters) == len(BAD)
    by_data = {bytes(r[5]): r for r in letters}
    for i, (bad, sqlstate) in enumerate(BAD):
        row = by_data[bad]
        assert row[:5] == (cid, stream, where[bad][0], where[bad][1], f"bad-{i}"), (bad, row)
        assert row[6] == sqlstate, (bad, row)
        assert row[7] and row[8], row
    # the checkpoints moved past every record, good or bad, in both shards
    last: dict[str, str] = {}
    for shard, seq in sent:
        last[shard] = seq
    assert {s: v[0] for s, v in kinesis_seqnums(db, cid).items()} == last
    assert scalar(db, "SELECT last_error FROM pipeline_kinesis.consumers WHERE id = %s", [cid]) is None
    wait_until(lambda: (rows := kinesis_status(db, cid)) and sum(r["dead_letters"] for r in rows) == len(BAD)
               and sum(r["rows"] for r in rows) == len(GOOD), timeout=15,
               what="rows and dead letters counted in consumer_status")


@pytest.mark.timeout(120)
def test_json_bad_records(stream_factory, fresh_db, log_mark):
    db = fresh_db
    stream, _ = stream_factory(1)
    recs = [b'{"id": 1, "amount": 1, "name": "a"}', b"{not json", b"[1, 2]", b'{"unrelated": true}',
            b'[{"id": 2, "amount": 2, "name": "b"}, {"id": 3, "amount": 3, "name": "c"}]',
            b'{"id": 4, "amount": "lots", "name": "d"}', b'{"id": 5, "amount": 5, "name": "e"}']
    kinesis_put_records(stream, [(f"k{i}", m) for i, m in enumerate(recs)])
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute(TABLE)
        kinesis_consume_begin(conn, "local", stream, "target", format="json", start_offset=-2)
    try:
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 4
                   and scalar(db, "SELECT count(*) FROM target") == 4, timeout=60, what="4 rows and 4 dead letters")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{pipeline_diag(db, log_mark)}") from None
    assert [r[0] for r in query(db, "SELECT id FROM target ORDER BY id")] == [1, 2, 3, 5]
    letters = {bytes(r[0]): r[1] for r in query(db, "SELECT data, sqlstate FROM pipeline_kinesis.dead_letters")}
    assert letters == {b"{not json": "22032", b"[1, 2]": "22P02", b'{"unrelated": true}': "22P02",
                       b'{"id": 4, "amount": "lots", "name": "d"}': "22P02"}


@pytest.mark.timeout(120)
def test_skip_policy_moves_on(stream_factory, fresh_db, log_mark):
    db = fresh_db
    stream, _ = stream_factory(1)
    recs = _interleaved()
    sent = kinesis_put_records(stream, recs)
    cid = _setup(db, stream, on_error="skip")
    try:
        wait_until(lambda: kinesis_seqnums(db, cid).get(sent[-1][0], (None,))[0] == sent[-1][1], timeout=60,
                   what="the checkpoint past every record")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{pipeline_diag(db, log_mark)}") from None
    assert sorted(r[0] for r in query(db, "SELECT id FROM target")) == list(range(1, 41))
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0
    assert scalar(db, "SELECT last_error FROM pipeline_kinesis.consumers WHERE id = %s", [cid]) is None


@pytest.mark.timeout(120)
def test_stop_policy_disables_the_consumer(stream_factory, fresh_db, log_mark):
    """on_error 'stop': the batch holding a bad record rolls back (no rows, no checkpoint past it,
    no dead letter), the consumer is disabled with the error in last_error; after the bad data is
    dealt with (here: the table accepts it), consume_begin continues from the checkpoint."""
    db = fresh_db
    stream, [shard] = stream_factory(1)
    recs = [("a", b"1,10,one"), ("b", b"2,20,two"), ("c", b"3,notanumber,three"), ("d", b"4,40,four")]
    kinesis_put_records(stream, recs)
    cid = _setup(db, stream, on_error="stop")
    try:
        wait_until(lambda: scalar(db, "SELECT NOT enabled FROM pipeline_kinesis.consumers WHERE id = %s", [cid]),
                   timeout=60, what="the consumer to be disabled")
    except AssertionError as exc:
        raise AssertionError(f"{exc}{pipeline_diag(db, log_mark)}") from None
    err = scalar(db, "SELECT last_error FROM pipeline_kinesis.consumers WHERE id = %s", [cid])
    assert err and "notanumber" in err, err
    assert scalar(db, "SELECT count(*) FROM target") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0
    assert kinesis_seqnums(db, cid).get(shard, (None,))[0] is None
    wait_until(lambda: scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                  "AND backend_type = 'pipeline_kinesis consumer'", [db]) == 0,
               timeout=10, what="the worker to exit")
    assert all(r["state"] == "stopped" for r in kinesis_status(db, cid))

    with pg_connect(db) as conn:
        conn.execute("ALTER TABLE target DROP CONSTRAINT target_amount_check")
        conn.execute("ALTER TABLE target ALTER COLUMN amount TYPE text")
        kinesis_consume_begin(conn, "local", stream, "target", format="csv", on_error="stop")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM target") == 4, timeout=60, what="4 rows after the fix")
    assert query(db, "SELECT id, amount FROM target ORDER BY id") == [
        (1, "10"), (2, "20"), (3, "notanumber"), (4, "40")]
