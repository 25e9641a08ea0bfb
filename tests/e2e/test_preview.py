"""pipeline_kafka.preview: what the next messages would become (rows as JSON, or the error each
would raise with its SQLSTATE), read through the worker's own write path, without writing
anything, without storing an offset and without a consumer; its bounds (limit, start_offset,
broker wait, statement_timeout) and who may call it.

Every wait is bounded; the "nothing was written" assertions follow a preview that returned the
rows (the positive marker that the messages were read and written inside the preview).
"""
from __future__ import annotations

import time

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar


def _setup(db: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE SEQUENCE s")
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text CHECK (v <> 'BAD'), n bigint DEFAULT nextval('s'))")
        conn.execute("""CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF NEW.v = 'boom' THEN RAISE EXCEPTION 'no boom here'; END IF;
            NEW.v := upper(NEW.v); RETURN NEW; END $$""")
        conn.execute("CREATE TRIGGER boom BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION boom()")
        conn.execute("INSERT INTO t (id, v) VALUES (100, 'existing')")


def _preview(db: str, topic: str, relation: str = "t", **kw) -> list[tuple]:
    args = "".join(f', "{k}" := %s' for k in kw)
    return query(db, f'SELECT "partition", "offset", "row", error, sqlstate '
                     f"FROM pipeline_kafka.preview(%s, %s{args})", [topic, relation, *kw.values()])


@pytest.mark.timeout(120)
def test_preview_rows_and_errors(fresh_db, topic_factory):
    """Each message's rows as JSON through defaults and triggers, or its error: bad value (22P02),
    CHECK (23514), duplicate key against a row already in the table and against an earlier
    previewed message of the same batch (23505), a trigger (its own SQLSTATE). Nothing stays in
    the table, no consumer or offset exists afterwards."""
    db = fresh_db
    _setup(db)
    topic = topic_factory(1)
    produce(topic, [
        "1,one",             # 0: a row (trigger upper-cases v; n from the sequence default)
        "x,two",             # 1: 22P02
        "2,bad",             # 2: CHECK 23514 (on the trigger's 'BAD')
        "100,dup",           # 3: duplicate of the row already there: 23505
        "3,three\n4,four",   # 4: two rows from one message
        "3,again",           # 5: duplicate of message 4's row, as in one batch: 23505
        "5,boom",            # 6: the trigger's error
    ])
    rows = _preview(db, topic, format="csv", columns=["id", "v"])
    by_offset: dict[int, list[tuple]] = {}
    for r in rows:
        assert r[0] == 0
        by_offset.setdefault(r[1], []).append(r)
    assert sorted(by_offset) == list(range(7)), rows
    (r0,) = by_offset[0]
    assert r0[2]["id"] == 1 and r0[2]["v"] == "ONE" and isinstance(r0[2]["n"], int) and r0[3] is None
    assert [r[4] for r in by_offset[1]] == ["22P02"]
    assert [r[4] for r in by_offset[2]] == ["23514"]
    assert [r[4] for r in by_offset[3]] == ["23505"]
    assert sorted((r[2]["id"], r[2]["v"]) for r in by_offset[4]) == [(3, "THREE"), (4, "FOUR")]
    assert [r[4] for r in by_offset[5]] == ["23505"]
    (r6,) = by_offset[6]
    assert r6[4] == "P0001" and "no boom here" in r6[3] and r6[2] is None

    # nothing written, nothing stored, no consumer
    assert query(db, "SELECT id, v FROM t") == [(100, "EXISTING")]
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.offsets") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0

    # limit and start_offset
    assert [(r[1], r[2]["id"] if r[2] else None) for r in _preview(db, topic, format="csv", columns=["id", "v"], limit=1)] == [(0, 1)]
    got = _preview(db, topic, format="csv", columns=["id", "v"], start_offset=4, limit=2)
    assert sorted({r[1] for r in got}) == [4, 5]
    # past the end: nothing (not the partition over from its beginning)
    assert _preview(db, topic, format="csv", columns=["id", "v"], start_offset=1000) == []

    # a json preview of the same relation: fields by name
    jtopic = topic_factory(1)
    produce(jtopic, ['{"id": 7, "v": "seven"}', '{"id": 8, "v": "bad"}', "not json"])
    got = _preview(db, jtopic, format="json")
    assert [(r[1], r[2]["v"] if r[2] else None, r[4]) for r in got] == [
        (0, "SEVEN", None), (1, None, "23514"), (2, None, "22032")]
    assert query(db, "SELECT id FROM t") == [(100,)]


@pytest.mark.timeout(120)
def test_preview_bounds(fresh_db, topic_factory):
    """An empty topic gives no rows (not an error) within broker_timeout; start_offset -1 waits
    for new messages only that long; statement_timeout cancels the wait (57014); limit outside
    1..1000 and start_offset < -2 are 22023; an unknown topic 42704; no broker 55000."""
    db = fresh_db
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int, v text)")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM pipeline_kafka.preview('x', 't')")
        assert e.value.sqlstate == "55000"
    _setup_broker_only(db)
    topic = topic_factory(2)
    with pg_connect(db) as conn:
        conn.execute("SET pipeline_ingest.broker_timeout = 1000")
        started = time.monotonic()
        assert conn.execute("SELECT * FROM pipeline_kafka.preview(%s, 't')", [topic]).fetchall() == []
        assert time.monotonic() - started < 10
        produce(topic, ["1\ta"], partition=1)
        # -1: only messages written from now on; none come within broker_timeout
        assert conn.execute("SELECT * FROM pipeline_kafka.preview(%s, 't', start_offset := -1)", [topic]).fetchall() == []
        got = conn.execute('SELECT "partition", "offset", "row" FROM pipeline_kafka.preview(%s, \'t\')', [topic]).fetchall()
        assert got == [(1, 0, {"id": 1, "v": "a"})]
        conn.execute("SET pipeline_ingest.broker_timeout = 60000")
        conn.execute("SET statement_timeout = 700")
        started = time.monotonic()
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM pipeline_kafka.preview(%s, 't', start_offset := -1)", [topic])
        assert e.value.sqlstate == "57014"
        assert time.monotonic() - started < 10
    for sql, state in [
        ("SELECT * FROM pipeline_kafka.preview(%s, 't', \"limit\" := 0)", "22023"),
        ("SELECT * FROM pipeline_kafka.preview(%s, 't', \"limit\" := 1001)", "22023"),
        ("SELECT * FROM pipeline_kafka.preview(%s, 't', start_offset := -3)", "22023"),
        ("SELECT * FROM pipeline_kafka.preview(%s || '_none', 't')", "42704"),
        ("SELECT * FROM pipeline_kafka.preview(%s, 'no_such_table')", "42P01"),
        ("SELECT * FROM pipeline_kafka.preview(%s, NULL)", "22004"),
    ]:
        with pg_connect(db) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, [topic])
            assert e.value.sqlstate == state, sql


def _setup_broker_only(db: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])


@pytest.mark.timeout(120)
def test_preview_privileges(pg_role, fresh_db, topic_factory):
    """Who may preview: as consume_begin, a role that can SET ROLE to the table's owner (42501
    otherwise, also with INSERT on the table); the rows are written and read as the owner, so a
    trigger runs with the owner's rights, not the caller's."""
    owner, member, outsider = pg_role(), pg_role(), pg_role()
    db = fresh_db
    _setup_broker_only(db)
    topic = topic_factory(1)
    produce(topic, ["1\ta"])
    with pg_connect(db) as conn:
        conn.execute(f'GRANT {owner} TO {member}')
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {owner}, {member}, {outsider}")
        conn.execute("CREATE TABLE t (id int, v text, who text DEFAULT current_user)")
        conn.execute(f"ALTER TABLE t OWNER TO {owner}")
        conn.execute(f"GRANT INSERT, SELECT ON t TO {outsider}")
        conn.execute(f"SET ROLE {member}")
        got = conn.execute('SELECT "row" FROM pipeline_kafka.preview(%s, \'t\', columns := \'{id,v}\')', [topic]).fetchall()
        assert got == [({"id": 1, "v": "a", "who": owner},)]
        conn.execute("RESET ROLE")
        conn.execute(f"SET ROLE {outsider}")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM pipeline_kafka.preview(%s, 't')", [topic])
        assert e.value.sqlstate == "42501"
    assert scalar(db, "SELECT count(*) FROM t") == 0


@pytest.mark.timeout(120)
def test_kinesis_preview(fresh_db, stream_factory):
    """pipeline_kinesis.preview: records of every shard from TRIM_HORIZON (or a time), each as its
    rows or its error with the shard and sequence number; nothing written, no consumer, no
    sequence number stored; LATEST with no new records gives no rows within broker_timeout."""
    from pihelpers import kinesis_add_endpoint, kinesis_put_records
    db = fresh_db
    stream, shards = stream_factory(2)
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE k (id int PRIMARY KEY, v text)")
    put = kinesis_put_records(stream, [("a", "1\tone"), ("b", "x\ttwo"), ("c", "3\tthree"), ("d", "4\tfour")])
    rows = query(db, "SELECT shard_id, sequence_number, sub_sequence, \"row\", sqlstate "
                     "FROM pipeline_kinesis.preview('local', %s, 'k')", [stream])
    assert sorted((r[0], r[1]) for r in rows) == sorted(put)
    by_seq = {r[1]: r for r in rows}
    assert by_seq[put[0][1]][3] == {"id": 1, "v": "one"} and by_seq[put[0][1]][2] is None
    assert by_seq[put[1][1]][3] is None and by_seq[put[1][1]][4] == "22P02"
    assert {by_seq[s][3]["id"] for _, s in (put[2], put[3])} == {3, 4}
    assert scalar(db, "SELECT count(*) FROM k") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.consumers") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.seqnums") == 0
    assert len(query(db, "SELECT * FROM pipeline_kinesis.preview('local', %s, 'k', \"limit\" := 2)", [stream])) == 2
    # a time before every record: all of them (a time in the future Kinesis refuses: 22023 below)
    assert len(query(db, "SELECT * FROM pipeline_kinesis.preview('local', %s, 'k', start_time := now() - interval '1 hour')",
                     [stream])) == 4
    with pg_connect(db) as conn:
        conn.execute("SET pipeline_ingest.broker_timeout = 1000")
        assert conn.execute("SELECT * FROM pipeline_kinesis.preview('local', %s, 'k', start_offset := -1)",
                            [stream]).fetchall() == []
    for sql, state in [
        ("SELECT * FROM pipeline_kinesis.preview('nope', %s, 'k')", "42704"),
        ("SELECT * FROM pipeline_kinesis.preview('local', %s || 'x', 'k')", "42704"),
        ("SELECT * FROM pipeline_kinesis.preview('local', %s, 'k', start_offset := 0)", "22023"),
        ("SELECT * FROM pipeline_kinesis.preview('local', %s, 'k', start_time := now() + interval '1 hour')", "22023"),
        ("SELECT * FROM pipeline_kinesis.preview('local', %s, 'k', start_offset := -2, start_time := now())", "22023"),
    ]:
        with pg_connect(db) as conn:
            with pytest.raises(psycopg.Error) as e:
                conn.execute(sql, [stream])
            assert e.value.sqlstate == state, sql


@pytest.mark.timeout(120)
def test_preview_action_says_what_each_message_became(fresh_db, topic_factory):
    """The action column (issue 24.10): a message whose row a later message of the batch replaces
    is `replaced`, not a bare `row NULL, error NULL` like a tombstone (`deleted`) or an empty
    message (`skipped`); `inserted` with its row, `error` with its error."""
    db = fresh_db
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE u (id int PRIMARY KEY, v text)")
    topic = topic_factory(1)
    produce(topic, ['{"id": 1, "v": "a"}'], key="1")    # 0: replaced by 2
    produce(topic, ['{"id": 2, "v": "b"}'], key="2")    # 1: inserted
    produce(topic, ['{"id": 1, "v": "c"}'], key="1")    # 2: inserted (replaces 0)
    produce(topic, [None], key="2")                      # 3: tombstone: deleted (and 1 with it: replaced)
    produce(topic, ['{"id": "x"}'], key="3")             # 4: error
    rows = query(db, 'SELECT "offset", action, "row", sqlstate FROM pipeline_kafka.preview(%s, \'u\', format := \'json\', '
                     "mode := 'upsert', key_format := 'text')", [topic])
    assert rows == [
        (0, "replaced", None, None),
        (1, "replaced", None, None),
        (2, "inserted", {"id": 1, "v": "c"}, None),
        (3, "deleted", None, None),
        (4, "error", None, "22P02"),
    ], rows
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE a (v text)")
    produce(topic, ["", "x"], key="9")
    rows = query(db, 'SELECT "offset", action, "row" FROM pipeline_kafka.preview(%s, \'a\', start_offset := 5)', [topic])
    assert rows == [(5, "skipped", None), (6, "inserted", {"v": "x"})], rows


@pytest.mark.timeout(120)
def test_preview_of_a_consumer_uses_its_stored_settings(pg_role, fresh_db, topic_factory):
    """preview(consumer_id) (issue 24.10) previews with the consumer's stored settings (csv, its
    column list) instead of repeating them, from its stored offsets (or start_offset); nothing is
    written or stored; only who may manage the consumer may (42501), an unknown id is 42704."""
    db = fresh_db
    outsider = pg_role()
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", [KAFKA_BOOTSTRAP])
        conn.execute("CREATE TABLE c (v text, id int)")
    topic = topic_factory(1)
    produce(topic, ["1;one", "2;two"])
    with pg_connect(db) as conn:
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'c', format := 'csv', delimiter := ';', "
                           "columns := ARRAY['id', 'v'], start_offset := 1)", [topic]).fetchone()[0]
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 'c')", [topic])
        offsets = conn.execute('SELECT "partition", "offset" FROM pipeline_kafka.offsets').fetchall()
    assert offsets == [(0, 1)]
    got = query(db, 'SELECT "offset", action, "row" FROM pipeline_kafka.preview(%s)', [cid])
    assert got == [(1, "inserted", {"id": 2, "v": "two"})], got
    got = query(db, 'SELECT "offset", "row" FROM pipeline_kafka.preview(%s, start_offset := -2)', [cid])
    assert got == [(0, {"id": 1, "v": "one"}), (1, {"id": 2, "v": "two"})], got
    assert scalar(db, "SELECT count(*) FROM c") == 0
    assert query(db, 'SELECT "partition", "offset" FROM pipeline_kafka.offsets') == offsets
    with pg_connect(db) as conn:
        conn.execute(f"SET ROLE {outsider}")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM pipeline_kafka.preview(%s)", [cid])
        assert e.value.sqlstate == "42501"
        conn.execute("RESET ROLE")
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT * FROM pipeline_kafka.preview(%s)", [cid + 100])
        assert e.value.sqlstate == "42704"


@pytest.mark.timeout(120)
def test_kinesis_preview_of_a_consumer_and_metadata_columns(fresh_db, stream_factory):
    """pipeline_kinesis.preview(consumer_id) uses the consumer's stored settings (here csv and
    metadata columns), and Kinesis previews fill metadata columns (shard, sequence number,
    partition key, arrival time, stream) as the consumer does."""
    from pihelpers import kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records
    db = fresh_db
    stream, _ = stream_factory(1)
    kinesis_add_endpoint(db)
    meta = ('{"stream": "st", "shard_id": "sh", "sequence_number": "seq", "partition_key": "pk", '
            '"arrival_time": "at"}')
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE k (id int, v text, st text, sh text, seq text, pk text, at timestamptz)")
        cid = kinesis_consume_begin(conn, "local", stream, "k", format="csv", columns=["id", "v"], metadata=meta)
        conn.execute("SELECT pipeline_kinesis.consume_end('local', %s, 'k')", [stream])
    put = kinesis_put_records(stream, [("key1", "1,one")])
    rows = query(db, 'SELECT shard_id, sequence_number, action, "row" FROM pipeline_kinesis.preview(%s)', [cid])
    assert len(rows) == 1, rows
    shard, seq, action, row = rows[0]
    assert (shard, seq) == put[0] and action == "inserted"
    assert {k: row[k] for k in ("id", "v", "st", "sh", "seq", "pk")} == \
        {"id": 1, "v": "one", "st": stream, "sh": shard, "seq": seq, "pk": "key1"}
    assert row["at"] is not None
    assert scalar(db, "SELECT count(*) FROM k") == 0


@pytest.mark.timeout(120)
def test_preview_holds_at_most_max_batch_bytes_of_messages(fresh_db, topic_factory):
    """A preview reads its messages into the caller's backend: at most max_batch_bytes of them, as a
    worker's batch (before 0.8.0, up to 1000 messages of any size: a gigabyte for a plain role), with
    a NOTICE when that cut it short; the first message is shown whatever its size."""
    from pihelpers import server_setting
    db = fresh_db
    _setup_broker_only(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE big (v text)")
    topic = topic_factory()
    produce(topic, ["x" * 20_000 for _ in range(10)])
    with server_setting("pipeline_ingest.max_batch_bytes", "64kB", "64kB"):
        notices: list[str] = []
        with pg_connect(db) as conn:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
            rows = conn.execute("SELECT \"offset\", error FROM pipeline_kafka.preview(%s, 'big', \"limit\" := 10)",
                                [topic]).fetchall()
        # 3 messages of 20,000 bytes fit in 64kB, the 4th would not
        assert rows == [(0, None), (1, None), (2, None)]
        assert any("preview stopped after 3 messages" in n and "max_batch_bytes" in n for n in notices), notices
    # the default (256MB) takes all ten
    assert len(query(db, "SELECT * FROM pipeline_kafka.preview(%s, 'big', \"limit\" := 10)", [topic])) == 10
