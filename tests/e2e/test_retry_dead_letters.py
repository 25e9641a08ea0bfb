"""Issue 24.6: a consumer's dead letters can be retried once the table (or the settings) is fixed.
pipeline_kafka.retry_dead_letters(topic, relation) and pipeline_kinesis.retry_dead_letters(endpoint,
stream, relation) put them through the consumer's current settings, oldest first, as the table's
owner, in the caller's transaction: those that become rows leave the dead letters, the others stay
with their new error; they return how many became rows. Only who may manage the consumer may."""
from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records, pg_connect,
                       produce, query, scalar, wait_until)

# The table lacks the third column the messages carry: every message is a dead letter (22P04)
# until it is added. `seen` records, per row written, its id and the role the trigger ran as.
TABLE = """
CREATE TABLE {t} (id int, amount numeric);
CREATE TABLE {t}_seen (n bigserial, id int, by_role text);
CREATE FUNCTION {t}_note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {t}_seen (id, by_role) VALUES (NEW.id, current_user);
  RETURN NEW;
END $$;
CREATE TRIGGER note AFTER INSERT ON {t} FOR EACH ROW EXECUTE FUNCTION {t}_note();
"""


def _letters(db: str, cid: int) -> list[tuple]:
    return query(db, 'SELECT "partition", "offset", convert_from(value, \'UTF8\'), sqlstate, error '
                     'FROM pipeline_kafka.dead_letters WHERE consumer_id = %s ORDER BY "partition", "offset"', (cid,))


def _kafka_consumer(conn, topic: str, table: str, broker: bool = True, **kw) -> int:
    """consume_begin from the beginning, csv unless a transform is given (and add_broker first)."""
    if broker:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    if "transform" not in kw:
        kw.setdefault("format", "csv")
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s, start_offset := -2{args})",
                        [topic, table] + [kw[n] for n in names]).fetchone()[0]


def _wait_letters(db: str, cid: int, n: int, table: str = "pipeline_kafka.dead_letters") -> None:
    wait_until(lambda: scalar(db, f"SELECT count(*) FROM {table} WHERE consumer_id = %s", (cid,)) == n,
               timeout=60, what=f"{n} dead letters")


@pytest.mark.timeout(120)
def test_letters_become_rows_after_the_table_is_fixed_oldest_first(fresh_db, topic_factory):
    topic = topic_factory(2)
    good0 = ["1,10.5,a", "2,20,b", "3,30,c"]
    good1 = ["4,40,d", "5,50,e"]
    produce(topic, good1, partition=1)
    produce(topic, good0[:2] + ["x,1,bad"] + good0[2:], partition=0)
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(t="charges"))
        cid = _kafka_consumer(conn, topic, "charges")
    _wait_letters(fresh_db, cid, 6)
    before = _letters(fresh_db, cid)
    assert {r[3] for r in before} == {"22P04"}, before
    assert scalar(fresh_db, "SELECT count(*) FROM charges") == 0
    failed_at = scalar(fresh_db, 'SELECT failed_at FROM pipeline_kafka.dead_letters WHERE "offset" = 2 AND "partition" = 0')

    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE charges ADD COLUMN name text")
        assert conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 'charges')", (topic,)).fetchone()[0] == 5
    # rows present, in partition/offset order, and the letters that became rows are gone
    assert query(fresh_db, "SELECT id, amount, name FROM charges ORDER BY id") == [
        (1, 10.5, "a"), (2, 20, "b"), (3, 30, "c"), (4, 40, "d"), (5, 50, "e")]
    assert [r[0] for r in query(fresh_db, "SELECT id FROM charges_seen ORDER BY n")] == [1, 2, 3, 4, 5]
    # the one that still fails stays, with its new error (a bad integer now, not a missing column)
    after = _letters(fresh_db, cid)
    assert [(r[0], r[1], r[2], r[3]) for r in after] == [(0, 2, "x,1,bad", "22P02")], after
    assert 'invalid input syntax for type integer: "x"' in after[0][4]
    assert scalar(fresh_db, "SELECT failed_at FROM pipeline_kafka.dead_letters WHERE consumer_id = %s", (cid,)) > failed_at
    # nothing is left to retry but the bad one: a second retry ingests nothing, and the worker
    # never reads the retried messages again (they lie behind its committed offsets)
    assert scalar(fresh_db, "SELECT pipeline_kafka.retry_dead_letters(%s, 'charges')", (topic,)) == 0
    produce(topic, ["6,60,f"], partition=0)
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM charges") == 6, timeout=60, what="the new message")
    assert scalar(fresh_db, "SELECT count(*) FROM charges") == 6
    assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM charges") == 6


@pytest.mark.timeout(120)
def test_max_and_a_rolled_back_retry(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ["1,1,a", "2,2,b", "3,3,c"])
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(t="t"))
        cid = _kafka_consumer(conn, topic, "t")
    _wait_letters(fresh_db, cid, 3)
    with pg_connect(fresh_db, autocommit=False) as conn:
        conn.execute("ALTER TABLE t ADD COLUMN name text")
        conn.commit()
        # in the caller's transaction: rolled back, nothing happened
        assert conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't')", (topic,)).fetchone()[0] == 3
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.dead_letters").fetchone()[0] == 3
        # max: the oldest first
        assert conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't', max := 2)", (topic,)).fetchone()[0] == 2
        conn.commit()
        assert conn.execute("SELECT id FROM t ORDER BY id").fetchall() == [(1,), (2,)]
        assert conn.execute('SELECT "offset" FROM pipeline_kafka.dead_letters').fetchall() == [(2,)]
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't', max := -1)", (topic,))
        conn.rollback()
        with pytest.raises(psycopg.errors.NullValueNotAllowed):
            conn.execute("SELECT pipeline_kafka.retry_dead_letters(NULL, 't')")
        conn.rollback()
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT pipeline_kafka.retry_dead_letters('no_such_topic', 't')")


@pytest.mark.timeout(120)
def test_two_concurrent_retries_ingest_each_letter_once(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, [f"{i},{i},n{i}" for i in range(20)])
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(t="t"))
        cid = _kafka_consumer(conn, topic, "t")
    _wait_letters(fresh_db, cid, 20)
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE t ADD COLUMN name text")
    with pg_connect(fresh_db, autocommit=False) as first, pg_connect(fresh_db, autocommit=False) as second:
        assert first.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't')", (topic,)).fetchone()[0] == 20
        # the first has not committed: its letters are locked, the second skips them
        second.execute("SET lock_timeout = '5s'")
        assert second.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't')", (topic,)).fetchone()[0] == 0
        second.commit()
        first.commit()
    assert scalar(fresh_db, "SELECT count(*) FROM t") == 20
    assert scalar(fresh_db, "SELECT count(DISTINCT id) FROM t") == 20
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_only_who_may_manage_the_consumer_may_retry_and_rows_are_written_as_the_owner(fresh_db, topic_factory, roles):
    topic = topic_factory(1)
    owner, hostile = roles("pi_own"), roles("pi_hostile")
    produce(topic, ["1,1,a", "2,2,b"])
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute(TABLE.format(t="owned"))
        cid = _kafka_consumer(conn, topic, "owned", broker=False)
        # INSERT on the table and EXECUTE on the function are not enough
        conn.execute(f"GRANT INSERT, SELECT ON owned TO {hostile}")
    with pg_connect(fresh_db) as conn:
        conn.execute("GRANT EXECUTE ON FUNCTION pipeline_kafka.retry_dead_letters(text, text, bigint) "
                     f"TO {hostile}")
    _wait_letters(fresh_db, cid, 2)
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("ALTER TABLE owned ADD COLUMN name text")
    with pg_connect(fresh_db, user=hostile) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 'owned')", (topic,))
        assert "must be a member of the role that owns the consumer" in str(e.value)
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 2
    assert scalar(fresh_db, "SELECT count(*) FROM owned") == 0
    # a superuser may; the rows are written as the table's owner (its trigger sees it), not as
    # the superuser
    assert scalar(fresh_db, "SELECT pipeline_kafka.retry_dead_letters(%s, 'owned')", (topic,)) == 2
    assert query(fresh_db, "SELECT id, by_role FROM owned_seen ORDER BY n") == [(1, owner), (2, owner)]


@pytest.mark.timeout(120)
def test_the_owner_retries_its_own_and_the_trigger_runs_as_it(fresh_db, topic_factory, roles):
    topic = topic_factory(1)
    owner = roles("pi_own")
    produce(topic, ["7,7,a"])
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute(TABLE.format(t="mine"))
        cid = _kafka_consumer(conn, topic, "mine", broker=False)
    _wait_letters(fresh_db, cid, 1)
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("ALTER TABLE mine ADD COLUMN name text")
        assert conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 'mine')", (topic,)).fetchone()[0] == 1
    assert query(fresh_db, "SELECT id, by_role FROM mine_seen") == [(7, owner)]


TRANSFORM = """
CREATE TABLE doubled (n int CHECK (n < 100));
CREATE FUNCTION double_it(batch pipeline_kafka.message[]) RETURNS SETOF doubled LANGUAGE sql AS $$
  SELECT 2 * convert_from(m.value, 'UTF8')::int FROM unnest(batch) m $$;
"""


@pytest.mark.timeout(120)
def test_a_transform_consumers_letters_go_through_the_transform(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ["1", "60", "2", "70"])
    with pg_connect(fresh_db) as conn:
        conn.execute(TRANSFORM)
        cid = _kafka_consumer(conn, topic, "doubled", transform="double_it(pipeline_kafka.message[])")
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM doubled") == 2
               and scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 2,
               timeout=60, what="2 rows and 2 dead letters")
    assert {r[3] for r in _letters(fresh_db, cid)} == {"23514"}
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE doubled DROP CONSTRAINT doubled_n_check, ADD CHECK (n < 130)")
        assert conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 'doubled')", (topic,)).fetchone()[0] == 1
    assert [r[0] for r in query(fresh_db, "SELECT n FROM doubled ORDER BY n")] == [2, 4, 120]
    left = _letters(fresh_db, cid)
    assert [(r[2], r[3]) for r in left] == [("70", "23514")], left


@pytest.mark.timeout(120)
def test_on_error_stop_retries_nothing_while_one_still_fails(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ["1,1,a", "x,2,b"])
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(t="t"))
        cid = _kafka_consumer(conn, topic, "t")
    _wait_letters(fresh_db, cid, 2)
    with pg_connect(fresh_db, autocommit=False) as conn:
        conn.execute("ALTER TABLE t ADD COLUMN name text")
        # (no start_offset: the stored offsets stay, the worker reads nothing again)
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', on_error := 'stop')", (topic,))
        conn.commit()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't')", (topic,))
        assert "the dead letter at partition 0 offset 1 still fails" in str(e.value)
        conn.rollback()
    assert scalar(fresh_db, "SELECT count(*) FROM t") == 0
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 2


@pytest.mark.timeout(120)
def test_statement_timeout_interrupts_a_retry(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, [f"{i},{i},n{i}" for i in range(400)])
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(t="t"))
        cid = _kafka_consumer(conn, topic, "t")
    _wait_letters(fresh_db, cid, 400)
    with pg_connect(fresh_db, autocommit=False) as conn:
        conn.execute("ALTER TABLE t ADD COLUMN name text")
        conn.execute("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ "
                     "BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$")
        conn.execute("CREATE TRIGGER slow BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION slow()")
        conn.commit()
        conn.execute("SET statement_timeout = '1s'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't')", (topic,))
        conn.rollback()
    assert scalar(fresh_db, "SELECT count(*) FROM t") == 0
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters WHERE sqlstate = '22P04'") == 400


@pytest.mark.timeout(120)
def test_kinesis_letters_become_rows_after_the_table_is_fixed(fresh_db, stream_factory, roles):
    stream, _ = stream_factory(1)
    owner, hostile = roles("pi_own"), roles("pi_hostile")
    kinesis_add_endpoint(fresh_db)
    with pg_connect(fresh_db) as conn:
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute(TABLE.format(t="k"))
        cid = kinesis_consume_begin(conn, "local", stream, "k", format="csv", start_offset=-2)
    kinesis_put_records(stream, [("a", b"1,1,a"), ("b", b"x,2,b"), ("c", b"3,3,c")])
    _wait_letters(fresh_db, cid, 3, "pipeline_kinesis.dead_letters")
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute("ALTER TABLE k ADD COLUMN name text")
    with pg_connect(fresh_db, user=hostile) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pipeline_kinesis.retry_dead_letters('local', %s, 'k')", (stream,))
    with pg_connect(fresh_db, user=owner) as conn:
        assert conn.execute("SELECT pipeline_kinesis.retry_dead_letters('local', %s, 'k')",
                            (stream,)).fetchone()[0] == 2
    assert query(fresh_db, "SELECT id, by_role FROM k_seen ORDER BY n") == [(1, owner), (3, owner)]
    left = query(fresh_db, "SELECT convert_from(data, 'UTF8'), partition_key, sqlstate FROM pipeline_kinesis.dead_letters")
    assert left == [("x,2,b", "b", "22P02")]


@pytest.mark.timeout(120)
def test_stream_partitioned_letters_go_to_the_table_their_key_names_now(fresh_db, topic_factory, roles):
    topic = topic_factory(1)
    owner = roles("pi_own")
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
        # a superuser's stream-partitioned consumer: rows go in as each table's owner
        cid = conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, format := 'csv', "
                           "start_offset := -2)", (topic,)).fetchone()[0]
    produce(topic, ["1,one", "2,two"], key="later")
    _wait_letters(fresh_db, cid, 2)
    assert {r[3] for r in _letters(fresh_db, cid)} == {"42P01"}
    with pg_connect(fresh_db, user=owner) as conn:
        conn.execute(TABLE.format(t="later").replace("amount numeric", "name text"))
    with pg_connect(fresh_db, user=owner) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pipeline_kafka.retry_dead_letters_stream_partitioned(%s)", (topic,))
    assert scalar(fresh_db, "SELECT pipeline_kafka.retry_dead_letters_stream_partitioned(%s)", (topic,)) == 2
    assert query(fresh_db, "SELECT id, name FROM later ORDER BY id") == [(1, "one"), (2, "two")]
    assert query(fresh_db, "SELECT by_role FROM later_seen") == [(owner,), (owner,)]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_upsert_and_metadata_settings_apply_to_a_retry(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ['{"id": 1, "name": "a"}', '{"id": 2, "name": "blocked"}', '{"id": 1, "name": "b"}'],
            keys=["1", "2", "1"])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text CONSTRAINT ok CHECK (name <> 'blocked'), "
                     "off bigint)")
        cid = _kafka_consumer(conn, topic, "customers", format="json", mode="upsert",
                              metadata=Jsonb({"offset": "off"}))
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 1
               and query(fresh_db, "SELECT id, name, off FROM customers") == [(1, "b", 2)],
               timeout=60, what="the upserted row and one dead letter")
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE customers DROP CONSTRAINT ok")
        assert conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 'customers')", (topic,)).fetchone()[0] == 1
    # the letter's offset fills the metadata column, the upsert writes its key's row
    assert query(fresh_db, "SELECT id, name, off FROM customers ORDER BY id") == [(1, "b", 2), (2, "blocked", 1)]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters WHERE consumer_id = %s", (cid,)) == 0


@pytest.mark.timeout(120)
def test_on_error_skip_drops_a_letter_that_still_fails_with_a_warning(fresh_db, topic_factory):
    topic = topic_factory(1)
    produce(topic, ["1,1,a", "x,2,b"])
    with pg_connect(fresh_db) as conn:
        conn.execute(TABLE.format(t="t"))
        cid = _kafka_consumer(conn, topic, "t")
    _wait_letters(fresh_db, cid, 2)
    with pg_connect(fresh_db) as conn:
        conn.execute("ALTER TABLE t ADD COLUMN name text")
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', on_error := 'skip')", (topic,))
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(f"{d.severity_nonlocalized}: {d.message_primary}"))
        assert conn.execute("SELECT pipeline_kafka.retry_dead_letters(%s, 't')", (topic,)).fetchone()[0] == 1
    assert any(n.startswith("WARNING: skipped the dead letter at partition 0 offset 1") for n in notices), notices
    assert query(fresh_db, "SELECT id FROM t") == [(1,)]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0
