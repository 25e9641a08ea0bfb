"""Producing to Kafka from SQL: pipeline_kafka.produce_message and the emit_tuple trigger send a
message if and only if the transaction commits (transactional outbox drained by the database's
producer worker), across broker outages and kill -9 of the postmaster.

"Nothing was sent" is never checked by waiting: a committed marker message is produced to the same
topic after the work that must send nothing, and once the marker has arrived everything produced
before it would have arrived too (the producer sends the outbox in id order; the rollback tests use
one-partition topics), so the absence of the other messages at that point is meaningful.
"""
from __future__ import annotations

import collections
import json
import time
from datetime import datetime, timezone

import psycopg
import pytest

from pihelpers import fresh_db as fresh_db_of
from pihelpers import (KAFKA_BOOTSTRAP, consume_all, kafka_start, kafka_stop, launcher_naptime, pg_connect,
                       pg_kill9_all, pg_kill9_postmaster, pg_start, query, scalar, topic_message_count,
                       unique_name, wait_topic_count, wait_until, watermark_consumer)

# Both versions (bytea and text): an untyped literal message resolves to the text one.
PRODUCE_SIG = ("pipeline_kafka.produce_message(text, bytea, integer, bytea, jsonb, timestamptz), "
               "pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz)")


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module", autouse=True)
def fast_launcher():
    """launcher_naptime = 1 s for this module, so a new database's supervisor and producer start
    within a second or two instead of up to 10 s (60 s when a probe raced CREATE EXTENSION)."""
    with launcher_naptime(1):
        yield


def prepare(db: str) -> None:
    """add_broker. The database's supervisor starts when the first outbox row commits (a database
    with nothing to do holds no worker), and starts the producer."""
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))


def outbox_count(db: str, topic: str) -> int:
    return scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox WHERE topic = %s", (topic,))


def status_row(db: str, topic: str):
    rows = query(db, "SELECT pending, last_error, last_error_at FROM pipeline_kafka.outbox_status WHERE topic = %s",
                 (topic,))
    return rows[0] if rows else None


def produce_marker(db: str, topic: str, value: str = "marker") -> None:
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.produce_message(%s, convert_to(%s, 'UTF8'))", (topic, value))


def values_of(msgs: list[dict]) -> list:
    return [m["value"] for m in msgs]


def emit_trigger(table: str, topic: str, *args: str, when: str = "AFTER", events: str = "INSERT OR UPDATE OR DELETE",
                 level: str = "ROW", name: str = "to_kafka") -> str:
    lits = ", ".join("'" + a.replace("'", "''") + "'" for a in (topic,) + args)
    return (f"CREATE TRIGGER {name} {when} {events} ON {table} FOR EACH {level} "
            f"EXECUTE FUNCTION pipeline_kafka.emit_tuple({lits})")


def assert_sqlstate(conn: psycopg.Connection, sql: str, sqlstate: str, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as ei:
        conn.execute(sql, params)
    assert ei.value.sqlstate == sqlstate, f"{sql!r}: expected {sqlstate}, got {ei.value.sqlstate}: {ei.value}"
    return ei.value


# --------------------------------------------------------------------------- produce_message


@pytest.mark.timeout(150)
def test_produce_message_options(fresh_db, topic_factory):
    db = fresh_db
    t3 = topic_factory(3)
    t1 = topic_factory(1)
    with pg_connect(db) as conn:
        # Before any broker is configured.
        assert_sqlstate(conn, "SELECT pipeline_kafka.produce_message(%s, 'x')", "55000", (t1,))
    prepare(db)
    with pg_connect(db) as conn:
        # Invalid arguments: 22023, before anything is queued.
        assert_sqlstate(conn, "SELECT pipeline_kafka.produce_message('', 'x')", "22023")
        assert_sqlstate(conn, "SELECT pipeline_kafka.produce_message(%s, 'x', partition := -2)", "22023", (t1,))
        assert_sqlstate(conn, "SELECT pipeline_kafka.produce_message(%s, 'x', headers := '[\"a\"]')", "22023", (t1,))
        assert_sqlstate(conn, "SELECT pipeline_kafka.produce_message(%s, 'x', headers := '{\"a\": 1}')", "22023", (t1,))
        assert outbox_count(db, t1) == 0

        # First message of a fresh database: latency from COMMIT to the topic.
        t0 = time.monotonic()
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'first')", (t1,))
        wait_topic_count(t1, 1, timeout=60, interval=0.02)
        print(f"first message: committed -> in topic in {time.monotonic() - t0:.3f}s")

        binary = bytes(range(256))
        wall0 = datetime.now(timezone.utc).timestamp() * 1000
        ids = {}
        with conn.transaction():
            def pm(name, sql_args, params):
                ids[name] = conn.execute(f"SELECT pipeline_kafka.produce_message({sql_args})", params).fetchone()[0]

            pm("plain", "%s, 'plain'", (t3,))
            for i in range(3):
                pm(f"k1-{i}", "%s, %s, key := 'k1'", (t3, f"k1-{i}".encode()))
            pm("k1-unassigned", "%s, 'k1-unassigned', partition := -1, key := 'k1'", (t3,))
            pm("p2", "%s, 'p2', partition := 2", (t3,))
            pm("p2-null", "%s, 'p2-null', partition := NULL", (t3,))
            pm("headers", "%s, 'headers', headers := %s::jsonb", (t3, '{"source": "app", "trace": "abc", "empty": null}'))
            pm("ts", "%s, 'ts', \"timestamp\" := '2021-03-04 05:06:07.891+00'", (t3,))
            pm("tombstone", "%s, NULL, key := 'gone'", (t3,))
            pm("binary", "%s, %s, key := %s", (t3, binary, b"\x00\xff"))
            pm("all", "%s, 'all', 0, 'kall', '{\"h\": \"v\"}', '2020-01-02 03:04:05+00'", (t3,))
            # Before COMMIT the messages are outbox rows of this transaction.
            in_tx = {r[0] for r in conn.execute("SELECT id FROM pipeline_kafka.outbox WHERE topic = %s", (t3,))}
            assert in_tx == set(ids.values())
            # Order on one partition: 50 messages of one transaction keep their order.
            for i in range(50):
                conn.execute("SELECT pipeline_kafka.produce_message(%s, %s)", (t1, f"seq-{i:02d}".encode()))
        order = [ids[k] for k in ids]
        assert order == sorted(order) and len(set(order)) == len(order), ids

    msgs = consume_all(t3, timeout=60, min_messages=len(ids))
    wall1 = datetime.now(timezone.utc).timestamp() * 1000
    assert len(msgs) == len(ids), msgs
    by_value = {m["value"]: m for m in msgs}
    assert set(by_value) == {b"plain", b"k1-0", b"k1-1", b"k1-2", b"k1-unassigned", b"p2", b"p2-null", b"headers",
                             b"ts", None, binary, b"all"}, msgs

    plain = by_value[b"plain"]
    assert plain["key"] is None and not plain["headers"]
    assert wall0 - 5000 <= plain["timestamp"] <= wall1 + 5000, (wall0, plain["timestamp"], wall1)

    k1 = [by_value[v] for v in (b"k1-0", b"k1-1", b"k1-2", b"k1-unassigned")]
    assert {m["key"] for m in k1} == {b"k1"}
    assert len({m["partition"] for m in k1}) == 1, k1            # same key -> same partition
    assert [m["offset"] for m in k1] == sorted(m["offset"] for m in k1)  # and in produce order

    assert by_value[b"p2"]["partition"] == 2 and by_value[b"p2"]["key"] is None

    h = by_value[b"headers"]
    assert sorted(h["headers"]) == sorted([("source", b"app"), ("trace", b"abc"), ("empty", None)]), h["headers"]

    assert by_value[b"ts"]["timestamp"] == int(datetime(2021, 3, 4, 5, 6, 7, 891000, tzinfo=timezone.utc).timestamp() * 1000)

    tomb = by_value[None]
    assert tomb["key"] == b"gone"

    assert by_value[binary]["key"] == b"\x00\xff"

    a = by_value[b"all"]
    assert (a["partition"], a["key"], a["headers"], a["timestamp"]) == \
        (0, b"kall", [("h", b"v")], int(datetime(2020, 1, 2, 3, 4, 5, tzinfo=timezone.utc).timestamp() * 1000))

    seq = consume_all(t1, timeout=60, min_messages=51)
    assert values_of(seq) == [b"first"] + [f"seq-{i:02d}".encode() for i in range(50)]

    # Delivered rows leave the outbox; no error is recorded.
    wait_until(lambda: outbox_count(db, t3) == 0 and outbox_count(db, t1) == 0, timeout=30,
               what="outbox drained")
    assert status_row(db, t3) is None and status_row(db, t1) is None


@pytest.mark.timeout(120)
def test_message_sent_only_after_commit(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(1)
    prepare(db)
    with pg_connect(db) as open_tx, pg_connect(db) as other:
        open_tx.execute("BEGIN")
        open_tx.execute("SELECT pipeline_kafka.produce_message(%s, 'open')", (topic,))
        # Another transaction commits (and wakes the producer) while the first one is still open.
        other.execute("SELECT pipeline_kafka.produce_message(%s, 'marker')", (topic,))
        msgs = consume_all(topic, timeout=60, min_messages=1)
        # The marker has arrived: the uncommitted message (an earlier outbox id) was not sent.
        assert values_of(msgs) == [b"marker"], msgs
        open_tx.execute("COMMIT")
    msgs = consume_all(topic, timeout=60, min_messages=2)
    assert values_of(msgs) == [b"marker", b"open"], msgs


# --------------------------------------------------------------------------- emit_tuple


@pytest.mark.timeout(150)
def test_emit_tuple_insert_update_delete_key_partitioning(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(3)
    fixed = topic_factory(3)
    prepare(db)
    with pg_connect(db) as conn:
        conn.execute("""CREATE TABLE orders (id int PRIMARY KEY, customer text, amount numeric(10,2), paid boolean,
                                             tags text[], meta jsonb, created timestamptz)""")
        conn.execute(emit_trigger("orders", topic, "-1", "id"))
        conn.execute("CREATE TABLE fixed (id int PRIMARY KEY, v text)")
        conn.execute(emit_trigger("fixed", fixed, "1", "id"))

        conn.execute("""INSERT INTO orders
                        SELECT i, 'cust "' || i || '" é' || chr(10), i * 1.5, i % 2 = 0, ARRAY['a', 'b' || i],
                               jsonb_build_object('n', i, 'nested', jsonb_build_object('x', i)),
                               timestamptz '2024-01-01 00:00:00+00' + i * interval '1 hour'
                        FROM generate_series(1, 40) i""")
        conn.execute("INSERT INTO orders (id) VALUES (41)")  # NULLs everywhere but the key
        inserted = dict(conn.execute("SELECT id, row_to_json(o)::text FROM orders o").fetchall())
        conn.execute("UPDATE orders SET amount = amount + 1, paid = NOT coalesce(paid, false) WHERE id <= 20")
        updated = dict(conn.execute("SELECT id, row_to_json(o)::text FROM orders o WHERE id <= 20").fetchall())
        conn.execute("DELETE FROM orders WHERE id > 30")

        conn.execute("INSERT INTO fixed SELECT i, 'v' || i FROM generate_series(1, 30) i")
        conn.execute("UPDATE fixed SET v = v || '!' WHERE id <= 5")
        conn.execute("DELETE FROM fixed WHERE id > 25")

    expected_total = 41 + 20 + 11
    msgs = consume_all(topic, timeout=60, min_messages=expected_total)
    assert len(msgs) == expected_total, len(msgs)
    per_key = collections.defaultdict(list)
    for m in msgs:  # sorted by (partition, offset): per key, in offset order
        per_key[m["key"]].append(m)
    assert set(per_key) == {str(i).encode() for i in range(1, 42)}, sorted(per_key)
    for i in range(1, 42):
        ms = per_key[str(i).encode()]
        assert len({m["partition"] for m in ms}) == 1, (i, ms)  # the same key always lands in one partition
        want = [inserted[i].encode()]
        if i <= 20:
            want.append(updated[i].encode())
        if i > 30:
            want.append(None)                                   # DELETE: tombstone keyed by the id
        assert values_of(ms) == want, (i, ms)
    # The value is exactly row_to_json of the row (and valid JSON with the row's columns).
    assert json.loads(per_key[b"7"][0]["value"])["customer"] == 'cust "7" é\n'
    assert json.loads(per_key[b"41"][0]["value"]) == {"id": 41, "customer": None, "amount": None, "paid": None,
                                                      "tags": None, "meta": None, "created": None}
    # 41 keys spread over the 3 partitions by the partitioner.
    assert len({m["partition"] for m in msgs}) > 1, msgs

    fixed_msgs = consume_all(fixed, timeout=60, min_messages=30 + 5 + 5)
    assert len(fixed_msgs) == 40
    assert {m["partition"] for m in fixed_msgs} == {1}, fixed_msgs  # explicit partition '1'
    assert sorted(int(m["key"]) for m in fixed_msgs if m["value"] is None) == list(range(26, 31))
    assert sum(1 for m in fixed_msgs if m["value"] and m["value"].endswith(b'!"}')) == 5


@pytest.mark.timeout(120)
def test_emit_tuple_rolled_back_transaction_sends_nothing(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(1)
    prepare(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute(emit_trigger("t", topic, "-1", "id"))
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 1000) i")
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.outbox").fetchone()[0] == 1000  # the trigger fired
        conn.execute("ROLLBACK")
        assert outbox_count(db, topic) == 0
    produce_marker(db, topic)
    msgs = consume_all(topic, timeout=60, min_messages=1)
    # The committed marker has arrived, so none of the 1000 rolled-back rows was sent.
    assert values_of(msgs) == [b"marker"], msgs[:5]
    assert scalar(db, "SELECT count(*) FROM t") == 0
    wait_until(lambda: outbox_count(db, topic) == 0, timeout=30, what="outbox drained")


@pytest.mark.timeout(120)
def test_rolled_back_savepoint_sends_nothing(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(1)
    prepare(db)
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute(emit_trigger("t", topic, "-1", "id"))
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 10) i")
        conn.execute("SAVEPOINT s1")
        conn.execute("INSERT INTO t SELECT i, 'v' || i FROM generate_series(11, 20) i")
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'dropped-with-savepoint')", (topic,))
        conn.execute("ROLLBACK TO SAVEPOINT s1")
        conn.execute("INSERT INTO t SELECT i, 'v' || i FROM generate_series(21, 25) i")
        conn.execute("SAVEPOINT s2")
        conn.execute("INSERT INTO t SELECT i, 'v' || i FROM generate_series(26, 30) i")
        conn.execute("RELEASE SAVEPOINT s2")
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'kept')", (topic,))
        conn.execute("COMMIT")
        expected = [r[0].encode() for r in conn.execute("SELECT row_to_json(t)::text FROM t ORDER BY id")]
    produce_marker(db, topic)
    kept = 10 + 5 + 5 + 1
    msgs = consume_all(topic, timeout=60, min_messages=kept + 1)
    # The marker has arrived after the kept messages; the rolled-back savepoint's 10 rows and its
    # produce_message (produced before the marker) must be absent.
    assert values_of(msgs) == expected + [b"kept", b"marker"], values_of(msgs)
    assert [m["key"] for m in msgs[:20]] == [str(i).encode() for i in list(range(1, 11)) + list(range(21, 31))]


@pytest.mark.timeout(120)
def test_emit_tuple_misuse_errors(fresh_db, topic_factory):
    """A misused emit_tuple trigger is refused when it is created (0.7.0; before, CREATE TRIGGER
    succeeded and the first INSERT or DELETE failed), with the SQLSTATE it raises when it fires; a
    key column dropped after the trigger was created is still an error when it fires."""
    db = fresh_db
    topic = topic_factory(1)
    prepare(db)
    with pg_connect(db) as conn:
        cases = [
            # (table, trigger definition, sqlstate, words of the error)
            ("t_before", dict(when="BEFORE", events="INSERT"), "09000", "AFTER trigger"),
            ("t_stmt", dict(events="INSERT", level="STATEMENT"), "09000", "FOR EACH ROW"),
            ("t_trunc", dict(events="TRUNCATE", level="STATEMENT"), "09000", "TRUNCATE"),
            ("t_nokey", dict(args=("-1", "no_such_column"), events="INSERT"), "42703",
             'key column "no_such_column" does not exist'),
            ("t_syscol", dict(args=("-1", "ctid"), events="INSERT"), "42703", 'key column "ctid" does not exist'),
            ("t_badpart", dict(args=("first",), events="INSERT"), "09000", 'got "first"'),
            ("t_negpart", dict(args=("-2",), events="INSERT"), "09000", 'got "-2"'),
            ("t_delnokey", dict(events="DELETE"), "09000", "needs a key column"),
            ("t_delnokey2", dict(args=("-1", ""), events="INSERT OR DELETE"), "09000", "needs a key column"),
            ("t_badtopic", dict(topic="bad topic!", events="INSERT"), "09000", "is not valid"),
            ("t_dottopic", dict(topic="..", events="INSERT"), "09000", "not a legal Kafka topic name"),
            ("t_longtopic", dict(topic="a" * 250, events="INSERT"), "09000", "longer than 249 bytes"),
            ("t_notopic", dict(topic="", events="INSERT"), "09000", "needs a topic"),
            ("t_fiveargs", dict(args=("-1", "id", "json", "extra"), events="INSERT"), "09000", "at most four arguments"),
            ("t_badformat", dict(args=("-1", "id", "xml"), events="INSERT"), "09000", "format must be 'json' or 'avro'"),
        ]
        for table, trig, state, words in cases:
            conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
            args = trig.pop("args", ())
            t = trig.pop("topic", topic)
            err = assert_sqlstate(conn, emit_trigger(table, t, *args, **trig), state)
            assert "emit_tuple" in str(err) and words in str(err), (table, err)
            assert scalar(db, "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass", (table,)) == 0, table
        # No arguments at all.
        conn.execute("CREATE TABLE t_noargs (id int)")
        assert_sqlstate(conn, "CREATE TRIGGER x AFTER INSERT ON t_noargs FOR EACH ROW "
                              "EXECUTE FUNCTION pipeline_kafka.emit_tuple()", "09000")
        # CREATE OR REPLACE TRIGGER is checked too, and the old trigger stays.
        conn.execute("CREATE TABLE t_replace (id int PRIMARY KEY, v text)")
        conn.execute(emit_trigger("t_replace", topic, "0", "id", events="INSERT OR DELETE"))
        assert_sqlstate(conn, emit_trigger("t_replace", topic, "0", "nope", events="INSERT OR DELETE")
                        .replace("CREATE TRIGGER", "CREATE OR REPLACE TRIGGER"), "42703")
        # Legal triggers are accepted: partitions '-1', ' 2 ', '+3' and '', a key column named in
        # mixed case, and triggers of other functions whatever their arguments.
        conn.execute('CREATE TABLE t_ok (id int PRIMARY KEY, "Key" text)')
        for i, (part, key) in enumerate([("-1", "id"), (" 2 ", "Key"), ("+3", ""), ("", "id")]):
            conn.execute(emit_trigger("t_ok", topic, part, key, events="INSERT OR UPDATE" if key == "" else
                                      "INSERT OR UPDATE OR DELETE", name=f"ok{i}"))
        conn.execute("CREATE FUNCTION other_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER other BEFORE DELETE ON t_ok FOR EACH STATEMENT "
                     "EXECUTE FUNCTION other_trigger('bad topic!', 'first', 'no_such_column', 'x')")
        for i in range(4):
            conn.execute(f"DROP TRIGGER ok{i} ON t_ok")
        # A key column dropped after the trigger was created: an error when it fires.
        conn.execute("CREATE TABLE t_dropped (id int PRIMARY KEY, k text)")
        conn.execute(emit_trigger("t_dropped", topic, "-1", "k", events="INSERT"))
        conn.execute("ALTER TABLE t_dropped DROP COLUMN k")
        err = assert_sqlstate(conn, "INSERT INTO t_dropped VALUES (1)", "42703")
        assert "emit_tuple" in str(err), err
        assert scalar(db, "SELECT count(*) FROM t_dropped") == 0
        assert outbox_count(db, topic) == 0
    produce_marker(db, topic)
    msgs = consume_all(topic, timeout=60, min_messages=1)
    # The marker has arrived: none of the failed statements sent anything.
    assert values_of(msgs) == [b"marker"], msgs


@pytest.mark.timeout(120)
def test_produce_requires_execute_privilege(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(1)
    prepare(db)
    role = unique_name("pi_producer")
    with pg_connect() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with pg_connect(db) as su:
            su.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
            su.execute(f"ALTER TABLE t OWNER TO {role}")
        with pg_connect(db, user=role) as conn:
            assert_sqlstate(conn, "SELECT pipeline_kafka.produce_message(%s, 'denied')", "42501", (topic,))
            assert_sqlstate(conn, emit_trigger("t", topic, "-1", "id", events="INSERT"), "42501")
        with pg_connect(db) as su:
            su.execute(f"GRANT EXECUTE ON FUNCTION {PRODUCE_SIG} TO {role}")
            su.execute(f"GRANT EXECUTE ON FUNCTION pipeline_kafka.emit_tuple() TO {role}")
        with pg_connect(db, user=role) as conn:
            conn.execute("SELECT pipeline_kafka.produce_message(%s, 'granted')", (topic,))
            # The creation check runs for a plain role too (its function's EXECUTE is revoked).
            assert_sqlstate(conn, emit_trigger("t", topic, events="DELETE"), "09000")
            assert_sqlstate(conn, "SELECT pipeline_kafka.emit_tuple_check()", "42501")
            conn.execute(emit_trigger("t", topic, "-1", "id", events="INSERT"))
            conn.execute("INSERT INTO t VALUES (7, 'row')")
            # The outbox contents stay private; its status view is public.
            assert_sqlstate(conn, "SELECT * FROM pipeline_kafka.outbox", "42501")
            conn.execute("SELECT * FROM pipeline_kafka.outbox_status").fetchall()
        msgs = consume_all(topic, timeout=60, min_messages=2)
        assert [(m["key"], m["value"]) for m in msgs] == [(None, b"granted"), (b"7", b'{"id":7,"v":"row"}')], msgs
    finally:
        with pg_connect(db) as su:
            su.execute(f"DROP OWNED BY {role}")
        with pg_connect() as conn:
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.timeout(120)
def test_produce_message_takes_text(pg_role, fresh_db, topic_factory):
    """produce_message(topic, 'x'::text, key := 'k'::text) sends the text's UTF-8 bytes; the bytea
    version is unchanged; an untyped literal resolves to the text version (its characters, so a
    literal written as a bytea escape goes out as those characters); both are revoked from PUBLIC."""
    topic = topic_factory(1)
    role = pg_role()
    db = fresh_db
    prepare(db)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'héllo'::text, key := 'k€y'::text)", [topic])
        conn.execute("SELECT pipeline_kafka.produce_message(%s, %s::text)", [topic, "from a text value"])
        conn.execute("SELECT pipeline_kafka.produce_message(%s, NULL::text, key := 'gone'::text)", [topic])
        conn.execute("SELECT pipeline_kafka.produce_message(%s, '\\x00ff'::bytea)", [topic])
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'untyped')", [topic])
        conn.execute("SELECT pipeline_kafka.produce_message(%s, '\\x41')", [topic])
        conn.execute(f'SET ROLE "{role}"')
        assert_sqlstate(conn, "SELECT pipeline_kafka.produce_message(%s, 'x'::text)", "42501", [topic])
        conn.execute("RESET ROLE")
    msgs = consume_all(topic, timeout=60, min_messages=6)
    assert [(m["key"], m["value"]) for m in msgs] == [
        ("k€y".encode(), "héllo".encode()),
        (None, b"from a text value"),
        (b"gone", None),
        (None, b"\x00\xff"),
        (None, b"untyped"),
        (None, b"\\x41"),
    ], msgs


@pytest.mark.timeout(120)
def test_update_grants_the_text_version_to_the_bytea_versions_grantees(pg_role):
    """After ALTER EXTENSION UPDATE from 0.6.0, a role granted produce_message(bytea) may call it
    with an untyped literal (which now resolves to the text version); other roles still may not."""
    granted, other = pg_role(), pg_role()
    text_sig = "pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz)"
    with fresh_db_of(extension=False) as db:
        with pg_connect(db) as conn:
            conn.execute("CREATE EXTENSION pipeline_ingest VERSION '0.6.0'")
            conn.execute("GRANT EXECUTE ON FUNCTION pipeline_kafka.produce_message(text, bytea, integer, bytea, "
                         f'jsonb, timestamptz) TO "{granted}"')
            conn.execute("ALTER EXTENSION pipeline_ingest UPDATE")
            assert conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE'), "
                                "has_function_privilege(%s, %s, 'EXECUTE')",
                                [granted, text_sig, other, text_sig]).fetchone() == (True, False)


# --------------------------------------------------------------------------- outages and crashes


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_broker_outage_10k_delivered_once(fresh_db, topic_factory):
    db = fresh_db
    topic = topic_factory(3)
    prepare(db)
    n = 10_000
    kafka_stop()
    t_down = time.monotonic()
    with pg_connect(db) as conn:
        for lo in (1, 5001):
            with conn.transaction():
                conn.execute("SELECT count(pipeline_kafka.produce_message(%s, convert_to('m-' || i, 'UTF8'), "
                             "key := convert_to((i %% 97)::text, 'UTF8'))) FROM generate_series(%s::int, %s::int) i",
                             (topic, lo, lo + 4999))
    pending, _, _ = status_row(db, topic)
    assert pending == n  # the broker is down: nothing can have been acknowledged
    row = wait_until(lambda: (lambda r: r if r and r[1] else None)(status_row(db, topic)), timeout=90,
                     what="outbox_status.last_error while the broker is down")
    print(f"last_error after {time.monotonic() - t_down:.1f}s: {row[1]!r} at {row[2]}")
    assert row[0] == n and row[2] is not None
    kafka_start()
    t_up = time.monotonic()
    wait_topic_count(topic, n, timeout=150, interval=0.2)
    print(f"10k messages delivered {time.monotonic() - t_up:.1f}s after the broker came back")
    msgs = consume_all(topic, timeout=90, min_messages=n)
    values = values_of(msgs)
    assert len(values) == n and len(set(values)) == n, (len(values), len(set(values)))
    assert set(values) == {f"m-{i}".encode() for i in range(1, n + 1)}
    # Recovered: the outbox is empty and the error is cleared.
    wait_until(lambda: status_row(db, topic) is None, timeout=60,
               what="outbox_status row gone (no pending, last_error cleared)")


def _make_emitting_table(db: str, topic: str) -> None:
    with pg_connect(db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n numeric)")
        conn.execute(emit_trigger("t", topic, "-1", "id", events="INSERT"))


def _expected_rows(db: str) -> dict[bytes, bytes]:
    return {str(r[0]).encode(): r[1].encode() for r in query(db, "SELECT id, row_to_json(t)::text FROM t")}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_postmaster_with_pending_outbox(fresh_db, topic_factory):
    """Committed, undelivered messages survive a crash: the broker is down so none can be delivered
    before the kill; after the restart all 10k arrive, exactly once (none was ever acknowledged)."""
    db = fresh_db
    topic = topic_factory(3)
    prepare(db)
    _make_emitting_table(db, topic)
    n = 10_000
    kafka_stop()
    with pg_connect(db) as conn:
        conn.execute("INSERT INTO t SELECT i, 'row ' || i, i / 7.0 FROM generate_series(1, %s) i", (n,))
    t_kill = time.monotonic()
    pg_kill9_postmaster()
    print(f"kill -9 postmaster: all its processes gone after {time.monotonic() - t_kill:.1f}s")
    pg_start()
    assert outbox_count(db, topic) == n, "committed outbox rows must survive the crash"
    expected = _expected_rows(db)
    assert len(expected) == n
    kafka_start()
    t_up = time.monotonic()
    wait_topic_count(topic, n, timeout=150, interval=0.2)
    print(f"after crash + broker restart: 10k delivered {time.monotonic() - t_up:.1f}s after the broker came back")
    wait_until(lambda: outbox_count(db, topic) == 0, timeout=60, what="outbox drained after the crash")
    msgs = consume_all(topic, timeout=90, min_messages=n)
    assert len(msgs) == n, f"{len(msgs)} messages for {n} rows (duplicates: {len(msgs) - len(set(values_of(msgs)))})"
    assert {m["key"]: m["value"] for m in msgs} == expected
    assert len(set(values_of(msgs))) == n


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_crash_during_delivery(fresh_db, topic_factory):
    """A machine-crash-like kill -9 of the postmaster and all its processes at once while 10k
    committed rows are being delivered (broker up): after the restart every row arrives; a message
    may arrive twice only if it had been acknowledged before the crash (it is in the topic when
    every PostgreSQL process is gone).

    pg_kill9_postmaster alone does not reach the ack-to-delete window: the producer worker keeps
    running after its postmaster died, finishes its round and deletes the delivered rows before it
    notices; so every process is frozen and killed at once here."""
    db = fresh_db
    topic = topic_factory(3)
    prepare(db)
    _make_emitting_table(db, topic)
    n = 10_000
    counter = watermark_consumer()
    try:
        topic_message_count(topic, counter)  # connected before the commit, so the first poll is quick
        with pg_connect(db) as conn:
            conn.execute("INSERT INTO t SELECT i, 'row ' || i, i / 7.0 FROM generate_series(1, %s) i", (n,))
        # Kill as soon as delivery has visibly started (the first acknowledged messages are in the topic).
        seen = wait_until(lambda: topic_message_count(topic, counter), timeout=60, interval=0.005,
                          what=f"first message in {topic}")
        pg_kill9_all()
    finally:
        counter.close()
    before = consume_all(topic, timeout=60)
    print(f"kill -9 when the topic held >= {seen} messages; {len(before)} of {n} in the topic once PostgreSQL was dead")
    pg_start()
    expected = _expected_rows(db)
    assert len(expected) == n
    wait_until(lambda: outbox_count(db, topic) == 0, timeout=150, interval=0.2, what="outbox drained after the crash")
    msgs = consume_all(topic, timeout=90, min_messages=n)
    counts = collections.Counter((m["key"], m["value"]) for m in msgs)
    dups = {kv: c for kv, c in counts.items() if c > 1}
    print(f"after restart: {len(msgs)} messages, {len(counts)} distinct, {len(dups)} duplicated "
          f"({sum(c - 1 for c in dups.values())} extra copies)")
    assert dict((k, v) for k, v in counts) == expected
    before_set = {(m["key"], m["value"]) for m in before}
    assert all(c == 2 for c in dups.values()), dups
    assert set(dups) <= before_set, "a message not acknowledged before the crash arrived twice"
