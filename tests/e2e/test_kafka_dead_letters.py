"""Bad messages never stall a consumer and are never lost: each one lands in
pipeline_kafka.dead_letters (raw bytes, partition, offset, error, SQLSTATE) in the same transaction
as the good rows of its batch and the offsets; or is skipped / stops the consumer, per on_error.
Errors that are not about the data (a revoked privilege) are retried, never dead-lettered."""
from __future__ import annotations

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, wait_until

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
# (message, expected SQLSTATE): one of each kind of bad data
BAD = [
    (b"101,notanumber,x", "22P02"),        # a value of the wrong type
    (b"102,5", "22P04"),                    # missing column
    (b"103,5,x,extra", "22P04"),            # extra column
    (b"104,5,\xff\xfe", "22021"),           # invalid UTF-8
    (b"105,-1,negative", "23514"),          # CHECK violation
    (b"106,5,", "23502"),                   # NOT NULL violation (unquoted empty = NULL in csv)
    (b"1,5,duplicate", "23505"),            # unique violation (id 1 is a good message)
    (b"107,5,boom", "P0001"),               # error raised by a trigger
    (b'108,5,"unterminated', "22P04"),      # would swallow the next message
]


def _setup(conn, topic: str, **opts) -> int:
    conn.execute(TABLE)
    conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    extra = "".join(f", {k} := %({k})s" for k in opts)
    return conn.execute(
        f"SELECT pipeline_kafka.consume_begin(%(topic)s, 'target', format := 'csv', start_offset := -2, "
        f"batchsize := 1000{extra})", dict(topic=topic, **opts)).fetchone()[0]


def _interleaved():
    """Good and bad messages mixed: bad ones after the first good ones (so id 1 exists first)."""
    msgs = list(GOOD[:5])
    for i, (bad, _) in enumerate(BAD):
        msgs.append(bad)
        msgs.extend(GOOD[5 + i * 3: 8 + i * 3])
    msgs.extend(GOOD[5 + len(BAD) * 3:])
    assert sorted(m for m in msgs if m in GOOD) == sorted(GOOD)
    return msgs


@pytest.mark.timeout(120)
def test_every_bad_kind_is_dead_lettered_with_its_bytes(fresh_db, topic_factory):
    topic = topic_factory(1)
    msgs = _interleaved()
    sent = produce(topic, msgs)  # before consume_begin: all land in one batch
    offset_of = {m: off for m, (_, off) in zip(msgs, sent)}
    with pg_connect(fresh_db) as conn:
        cid = _setup(conn, topic)
        total = wait_until(lambda: (n := scalar(fresh_db, "SELECT (SELECT count(*) FROM target) + "
                                                 "(SELECT count(*) FROM pipeline_kafka.dead_letters)")) >= len(msgs)
                           and n, timeout=60, what="every message in the table or the dead letters")
        assert total == len(msgs)
        assert scalar(fresh_db, "SELECT count(*) FROM target") == len(GOOD)
        assert sorted(r[0] for r in query(fresh_db, "SELECT id FROM target")) == list(range(1, 41))
        letters = query(fresh_db, "SELECT consumer_id, topic, partition, \"offset\", value, sqlstate, error "
                                  "FROM pipeline_kafka.dead_letters ORDER BY \"offset\"")
        assert len(letters) == len(BAD)
        by_value = {bytes(r[4]): r for r in letters}
        for bad, sqlstate in BAD:
            row = by_value[bad]
            assert row[0] == cid and row[1] == topic and row[2] == 0
            assert row[3] == offset_of[bad], (bad, row)
            assert row[5] == sqlstate, (bad, row)
            assert row[6], row
        # the batch committed its offset past every message, good or bad
        assert scalar(fresh_db, "SELECT \"offset\" FROM pipeline_kafka.offsets WHERE consumer_id = %s",
                      (cid,)) == len(msgs)
        assert scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", (cid,)) is None


@pytest.mark.timeout(120)
def test_json_bad_messages(fresh_db, topic_factory):
    topic = topic_factory(1)
    msgs = [b'{"id": 1, "amount": 1, "name": "a"}', b"{not json", b"[1, 2]", b'{"unrelated": true}',
            b'[{"id": 2, "amount": 2, "name": "b"}, {"id": 3, "amount": 3, "name": "c"}]',
            b'{"id": 4, "amount": "lots", "name": "d"}', b'{"id": 5, "amount": 5, "name": "e"}']
    produce(topic, msgs)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE)
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'target', format := 'json', start_offset := -2)", (topic,))
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 4
                   and scalar(fresh_db, "SELECT count(*) FROM target") == 4,
                   timeout=60, what="4 rows and 4 dead letters")
        assert [r[0] for r in query(fresh_db, "SELECT id FROM target ORDER BY id")] == [1, 2, 3, 5]
        letters = {bytes(r[0]): r[1] for r in query(fresh_db, "SELECT value, sqlstate FROM pipeline_kafka.dead_letters")}
        assert letters == {b"{not json": "22032", b"[1, 2]": "22P02", b'{"unrelated": true}': "22P02",
                           b'{"id": 4, "amount": "lots", "name": "d"}': "22P02"}


@pytest.mark.timeout(120)
def test_skip_policy_logs_and_moves_on(fresh_db, topic_factory):
    topic = topic_factory(1)
    msgs = _interleaved()
    produce(topic, msgs)
    with pg_connect(fresh_db) as conn:
        cid = _setup(conn, topic, on_error="skip")
        wait_until(lambda: scalar(fresh_db, "SELECT \"offset\" FROM pipeline_kafka.offsets WHERE consumer_id = %s",
                                  (cid,)) == len(msgs), timeout=60, what="offset past every message")
        assert scalar(fresh_db, "SELECT count(*) FROM target") == len(GOOD)
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_stop_policy_stops_with_the_error_and_keeps_nothing_of_the_batch(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, GOOD[:10])
    with pg_connect(fresh_db) as conn:
        cid = _setup(conn, topic, on_error="stop")
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM target") == 10, timeout=60, what="first 10 rows")
        produce(topic, GOOD[10:15] + [BAD[4][0]] + GOOD[15:20])
        wait_until(lambda: scalar(fresh_db, "SELECT NOT enabled FROM pipeline_kafka.consumers WHERE id = %s", (cid,)),
                   timeout=60, what="the consumer to stop itself")
        err = scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", (cid,))
        assert "23514" in err and "offset 15" in err, err
        # nothing of the failing batch was kept, the offset stayed before it
        assert scalar(fresh_db, "SELECT count(*) FROM target") == 10
        assert scalar(fresh_db, "SELECT \"offset\" FROM pipeline_kafka.offsets WHERE consumer_id = %s", (cid,)) == 10
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                            "'pipeline_kafka consumer' AND datname = current_database()") == 0,
                   timeout=10, what="the worker to exit")


@pytest.mark.timeout(120)
def test_max_dead_letters_stops_the_consumer(fresh_db, topic_factory):
    topic = topic_factory(1)
    msgs = _interleaved()
    produce(topic, msgs)
    with pg_connect(fresh_db) as conn:
        cid = _setup(conn, topic, max_dead_letters=3)
        wait_until(lambda: scalar(fresh_db, "SELECT NOT enabled FROM pipeline_kafka.consumers WHERE id = %s", (cid,)),
                   timeout=60, what="the consumer to stop itself")
        err = scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", (cid,))
        assert "max_dead_letters" in err, err
        assert scalar(fresh_db, "SELECT count(*) FROM target") == 0
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
        # raising the cap and starting again ingests everything
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'target', format := 'csv', max_dead_letters := 100)", (topic,))
        wait_until(lambda: scalar(fresh_db, "SELECT (SELECT count(*) FROM target) + "
                                            "(SELECT count(*) FROM pipeline_kafka.dead_letters)") == len(msgs),
                   timeout=60, what="every message accounted for after the restart")
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == len(BAD)


@pytest.mark.timeout(120)
def test_non_data_errors_are_retried_not_dead_lettered(fresh_db, topic_factory):
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE ROLE pi_dl_owner LOGIN")
        try:
            conn.execute(TABLE)
            # consumers write as their table's owner: the role owns the table, then loses INSERT on it
            conn.execute("GRANT USAGE ON SCHEMA public TO pi_dl_owner; ALTER TABLE target OWNER TO pi_dl_owner")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            conn.execute("SET ROLE pi_dl_owner")
            cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'target', format := 'csv', "
                               "start_offset := -2)", (topic,)).fetchone()[0]
            conn.execute("RESET ROLE")
            conn.execute("REVOKE INSERT ON target FROM pi_dl_owner")
            produce(topic, GOOD[:20])
            wait_until(lambda: "permission denied" in (scalar(
                fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", (cid,)) or ""),
                timeout=60, what="the permission error to show")
            assert scalar(fresh_db, "SELECT count(*) FROM target") == 0
            assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
            conn.execute("GRANT INSERT ON target TO pi_dl_owner")
            wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM target") == 20, timeout=90,
                       what="all rows once the privilege is back")
            assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM target") == 20
            assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
        finally:
            conn.execute("SELECT pipeline_kafka.consume_end()")
            conn.execute("DROP OWNED BY pi_dl_owner")
            conn.execute("DROP ROLE pi_dl_owner")


@pytest.mark.timeout(60)
def test_dead_letters_visible_to_owner_only(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, [BAD[0][0], GOOD[0]])
    with pg_connect(fresh_db) as conn:
        _setup(conn, topic)
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 1,
                   timeout=60, what="the dead letter")
        conn.execute("CREATE ROLE pi_dl_other")
        try:
            conn.execute("SET ROLE pi_dl_other")
            assert conn.execute("SELECT count(*) FROM pipeline_kafka.dead_letters").fetchone()[0] == 0
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO pipeline_kafka.dead_letters (consumer_id, topic, partition, \"offset\", "
                             "error, sqlstate) VALUES (1, 't', 0, 0, 'e', 's')")
        finally:
            conn.execute("RESET ROLE")
            conn.execute("DROP ROLE pi_dl_other")


@pytest.mark.timeout(120)
def test_dropped_table_is_retried_then_adopted_when_created_again(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, GOOD[:10])
    with pg_connect(fresh_db) as conn:
        cid = _setup(conn, topic)
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM target") == 10, timeout=60, what="10 rows")
        conn.execute("DROP TABLE target")
        produce(topic, GOOD[10:20])
        err = wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                        (cid,)), timeout=60, what="the missing table to show")
        assert "no longer exists" in err and "42P01" in err, err
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
        assert scalar(fresh_db, "SELECT \"offset\" FROM pipeline_kafka.offsets WHERE consumer_id = %s", (cid,)) == 10
        conn.execute(TABLE.split(";")[0])  # the table again (without the trigger)
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM target") == 10, timeout=60,
                   what="the 10 messages produced while the table was missing")
        assert sorted(r[0] for r in query(fresh_db, "SELECT id FROM target")) == list(range(11, 21))
        assert scalar(fresh_db, "SELECT relation::text FROM pipeline_kafka.consumers WHERE id = %s", (cid,)) == "target"
        wait_until(lambda: scalar(fresh_db, "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s",
                                  (cid,)) is None, timeout=30, what="the error to clear")
