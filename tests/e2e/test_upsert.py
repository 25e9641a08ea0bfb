"""mode 'upsert': INSERT ... ON CONFLICT (key columns) DO UPDATE, the last message of a key in a
batch winning; a tombstone (NULL value) deletes the row of its key (parsed from the message key
with key_format); a value after a tombstone in the same batch re-creates the row. Bad values and
errors of the final INSERT (constraints, triggers) are dead-lettered message by message, the rest
committed. Kinesis: the partition key is the message key."""
from __future__ import annotations

import pytest

import psycopg

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, kinesis_put_records, pg_connect,
                       produce, query, scalar, wait_until)


def _begin(conn, topic: str, relation: str, **kw) -> int:
    conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    names = list(kw)
    args = "".join(f", {n} := %s" for n in names)
    return conn.execute(f"SELECT pipeline_kafka.consume_begin(%s, %s, start_offset := -2, mode := 'upsert'{args})",
                        [topic, relation] + [kw[n] for n in names]).fetchone()[0]


def _committed(db: str, cid: int, n: int) -> None:
    wait_until(lambda: scalar(db, 'SELECT coalesce(sum("offset"), 0) FROM pipeline_kafka.offsets WHERE consumer_id = %s',
                              [cid]) == n, timeout=60, what=f"{n} messages committed")


def _send(topic: str, messages: list[tuple]) -> None:
    """(key, value) pairs in this order (value None = tombstone), one partition."""
    for key, value in messages:
        produce(topic, [value], key=key, partition=0)


@pytest.mark.timeout(120)
def test_last_message_of_a_key_wins_within_and_across_batches(fresh_db, topic_factory):
    topic = topic_factory(1)
    _send(topic, [(None, "1,a,1"), (None, "1,b,2"), (None, "2,x,1"), (None, "1,c,3"), (None, "2,y,2\n3,z,1\n2,w,3")])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text, n int, at timestamptz DEFAULT now())")
        cid = _begin(conn, topic, "t", format="csv", columns=["id", "v", "n"])
    _committed(fresh_db, cid, 5)
    assert query(fresh_db, "SELECT id, v, n, at IS NOT NULL FROM t ORDER BY id") == [
        (1, "c", 3, True), (2, "w", 3, True), (3, "z", 1, True)]
    # a later batch updates, never duplicates
    _send(topic, [(None, "2,later,9")])
    _committed(fresh_db, cid, 6)
    assert query(fresh_db, "SELECT id, v, n FROM t ORDER BY id") == [(1, "c", 3), (2, "later", 9), (3, "z", 1)]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_tombstones_delete_and_a_later_value_recreates(fresh_db, topic_factory):
    topic = topic_factory(1)
    _send(topic, [
        ("1", '{"id": 1, "v": "a"}'),
        ("2", '{"v": "b"}'),            # the key column comes from the message key
        ("1", None),                    # deletes 1
        ("3", '{"id": 3, "v": "c"}'),
        ("3", None),
        ("3", '{"v": "c2"}'),           # re-created after its tombstone, same batch
        ("9", None),                    # a tombstone of a key never seen: nothing to delete
    ])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        cid = _begin(conn, topic, "t", format="json")
    _committed(fresh_db, cid, 7)
    assert query(fresh_db, "SELECT id, v FROM t ORDER BY id") == [(2, "b"), (3, "c2")]
    _send(topic, [("2", None)])
    _committed(fresh_db, cid, 8)
    assert query(fresh_db, "SELECT id, v FROM t ORDER BY id") == [(3, "c2")]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("key_format,keys,value_format", [
    ("json", ['{"a": 1, "b": "x"}', '{"b": "y", "a": 2}'], "csv"),
    ("csv", ["1,x", '2,"y"'], "csv"),
    ("text", ["1\tx", "2\ty"], "text"),
])
def test_key_formats_with_a_composite_key(fresh_db, topic_factory, key_format, keys, value_format):
    topic = topic_factory(1)
    sep = "," if value_format == "csv" else "\t"
    _send(topic, [
        (keys[0], sep.join(["1", "x", "first"])),
        (keys[1], sep.join(["2", "y", "second"])),
        (keys[0], sep.join(["1", "x", "updated"])),
        (keys[1], None),                  # deletes (2, 'y')
    ])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (a int, b text, v text, UNIQUE (b, a))")
        cid = _begin(conn, topic, "t", format=value_format, key_columns=["a", "b"], key_format=key_format)
    _committed(fresh_db, cid, 4)
    assert query(fresh_db, "SELECT a, b, v FROM t ORDER BY a") == [(1, "x", "updated")]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_json_values_take_missing_key_fields_from_a_json_key(fresh_db, topic_factory):
    topic = topic_factory(1)
    _send(topic, [
        ('{"a": 5, "b": "q"}', '{"v": "from key"}'),
        ('{"a": 6, "b": "r"}', '{"a": 6, "b": "r", "v": "own"}'),
        (None, '{"v": "no key anywhere"}'),         # a row without its key: bad message
    ])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (a int, b text, v text, PRIMARY KEY (a, b))")
        cid = _begin(conn, topic, "t", format="json", key_format="json")
    _committed(fresh_db, cid, 3)
    assert query(fresh_db, "SELECT a, b, v FROM t ORDER BY a") == [(5, "q", "from key"), (6, "r", "own")]
    assert query(fresh_db, 'SELECT "offset", sqlstate FROM pipeline_kafka.dead_letters') == [(2, "23502")]


@pytest.mark.timeout(120)
def test_bad_values_and_errors_of_the_final_insert_are_dead_lettered_one_by_one(fresh_db, topic_factory):
    topic = topic_factory(1)
    msgs = [(None, "1,5"), (None, "2,-1"), (None, "3,13"), (None, "x,1"), (None, "4,7"), (None, "1,6"),
            ("7", None), (None, "5,1")]
    _send(topic, msgs)
    with pg_connect(fresh_db) as conn:
        conn.execute("""
            CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v >= 0));
            CREATE FUNCTION no13() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.v = 13 THEN RAISE EXCEPTION 'unlucky' USING ERRCODE = 'P0001'; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER no13 BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION no13();""")
        cid = _begin(conn, topic, "t", format="csv")
    _committed(fresh_db, cid, len(msgs))
    assert query(fresh_db, "SELECT id, v FROM t ORDER BY id") == [(1, 6), (4, 7), (5, 1)]
    letters = query(fresh_db, 'SELECT "offset", sqlstate, value FROM pipeline_kafka.dead_letters ORDER BY "offset"')
    assert [(r[0], r[1], bytes(r[2])) for r in letters] == [(1, "23514", b"2,-1"), (2, "P0001", b"3,13"),
                                                            (3, "22P02", b"x,1")]


@pytest.mark.timeout(120)
def test_kinesis_upsert_by_partition_key(stream_factory, fresh_db):
    stream, _ = stream_factory(1)
    kinesis_add_endpoint(fresh_db)
    kinesis_put_records(stream, [("1", '{"v": "a"}'), ("2", '{"v": "b"}'), ("1", '{"v": "c"}')])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        kinesis_consume_begin(conn, "local", stream, "t", start_offset=-2, format="json", mode="upsert")
    wait_until(lambda: query(fresh_db, "SELECT id, v FROM t ORDER BY id") == [(1, "c"), (2, "b")], timeout=60,
               what="two upserted rows, the last value of key 1")
    kinesis_put_records(stream, [("2", '{"v": "b2"}')])
    wait_until(lambda: query(fresh_db, "SELECT id, v FROM t ORDER BY id") == [(1, "c"), (2, "b2")], timeout=60,
               what="key 2 updated")
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kinesis.dead_letters") == 0


@pytest.mark.timeout(120)
def test_the_owner_gets_no_more_than_rows_in_the_staging_table(pg_role, fresh_db, topic_factory):
    """The owner's trigger runs while the staged rows are applied, as the owner: it can read the
    worker's staging table but not alter it or attach a trigger to it (it is not the owner)."""
    alice = pg_role()
    topic = topic_factory(1)
    _send(topic, [(None, "1,a")])
    with pg_connect(fresh_db) as conn:
        conn.execute(f"""
            CREATE TABLE t (id int PRIMARY KEY, v text);
            CREATE TABLE probe (what text, result text);
            CREATE FUNCTION poke() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE stg text;
            BEGIN
              SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) INTO stg
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relnamespace = pg_my_temp_schema() AND c.relkind = 'r' AND c.relname LIKE 'pipeline_ingest_upsert_%';
              INSERT INTO probe VALUES ('found', (stg IS NOT NULL)::text);
              BEGIN
                EXECUTE format('ALTER TABLE %s ADD COLUMN x int', stg);
                INSERT INTO probe VALUES ('alter', 'done');
              EXCEPTION WHEN OTHERS THEN INSERT INTO probe VALUES ('alter', SQLSTATE);
              END;
              BEGIN
                EXECUTE format('CREATE TRIGGER sneak BEFORE DELETE ON %s FOR EACH ROW EXECUTE FUNCTION poke()', stg);
                INSERT INTO probe VALUES ('trigger', 'done');
              EXCEPTION WHEN OTHERS THEN INSERT INTO probe VALUES ('trigger', SQLSTATE);
              END;
              RETURN NEW;
            END $$;
            CREATE TRIGGER poke BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION poke();
            ALTER TABLE t OWNER TO "{alice}";
            ALTER TABLE probe OWNER TO "{alice}";
            ALTER FUNCTION poke() OWNER TO "{alice}";""")
        cid = _begin(conn, topic, "t", format="csv")
    _committed(fresh_db, cid, 1)
    assert query(fresh_db, "SELECT id, v FROM t") == [(1, "a")]
    assert query(fresh_db, "SELECT what, result FROM probe ORDER BY what") == [
        ("alter", "42501"), ("found", "true"), ("trigger", "42501")]


@pytest.mark.parametrize("sql,sqlstate", [
    ("CREATE TABLE t (id int, v text)", "42P10"),                                    # no primary key
    ("CREATE TABLE t (id int, v text); CREATE INDEX ON t (id)", "42P10"),            # not unique
    ("CREATE TABLE t (id int, v text); CREATE UNIQUE INDEX ON t (id) WHERE id > 0", "42P10"),  # partial
    ("CREATE TABLE t (id int PRIMARY KEY, v text)", None),
])
def test_key_columns_need_a_unique_index(fresh_db, sql, sqlstate):
    """Checked by consume_begin before any broker is asked (none is configured here: 55000 is
    how far a valid call gets)."""
    with pg_connect(fresh_db) as conn:
        conn.execute(sql)
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT pipeline_kafka.consume_begin('topic', 't', mode := 'upsert', key_columns := ARRAY['id'])")
        assert err.value.sqlstate == (sqlstate or "55000"), err.value


# --------------------------------------------------------------------------- identity columns, domains (issue 19.8)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("identity,value_format", [("BY DEFAULT", "json"), ("ALWAYS", "json"), ("ALWAYS", "csv")])
def test_a_non_key_identity_column_is_generated_on_insert_and_kept_on_update(fresh_db, topic_factory, identity,
                                                                            value_format):
    """Columns a value does not fill get their defaults, identity included (was: every message a
    23502 dead letter BY DEFAULT, 428C9 retried forever ALWAYS); an update leaves it alone."""
    topic = topic_factory(1)
    if value_format == "json":
        first = [("1", '{"id": 1, "v": "a"}'), ("2", '{"v": "b"}'), ("3", '{"id": 3, "v": "c"}')]
        update = [("1", '{"id": 1, "v": "a2"}'), ("4", '{"id": 4, "v": "d"}')]
    else:
        first = [(None, "1,a"), (None, "2,b"), (None, "3,c")]
        update = [(None, "1,a2"), (None, "4,d")]
    _send(topic, first)
    with pg_connect(fresh_db) as conn:
        conn.execute(f"CREATE TABLE t (id int PRIMARY KEY, gid bigint GENERATED {identity} AS IDENTITY, v text)")
        kw = {"columns": ["id", "v"]} if value_format == "csv" else {}
        cid = _begin(conn, topic, "t", format=value_format, **kw)
    _committed(fresh_db, cid, 3)
    rows = query(fresh_db, "SELECT id, gid, v FROM t ORDER BY id")
    assert [(r[0], r[2]) for r in rows] == [(1, "a"), (2, "b"), (3, "c")], rows
    gids = {r[0]: r[1] for r in rows}
    assert None not in gids.values() and len(set(gids.values())) == 3, rows
    _send(topic, update)
    _committed(fresh_db, cid, 5)
    rows = query(fresh_db, "SELECT id, gid, v FROM t ORDER BY id")
    assert [(r[0], r[2]) for r in rows] == [(1, "a2"), (2, "b"), (3, "c"), (4, "d")], rows
    assert {r[0]: r[1] for r in rows if r[0] != 4} == gids, rows       # the update kept the generated ids
    assert rows[3][1] is not None and rows[3][1] not in gids.values(), rows
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_a_generated_always_identity_key_takes_the_messages_key(fresh_db, topic_factory):
    """A key column that is GENERATED ALWAYS AS IDENTITY: the message's key is written
    (OVERRIDING SYSTEM VALUE, as COPY does in append mode) - was 428C9 on every batch, forever."""
    topic = topic_factory(1)
    _send(topic, [
        ("10", '{"id": 10, "v": "a"}'),
        ("11", '{"v": "b"}'),                # the key from the message key
        ("12", '{"v": "c"}'),
        ("12", None),                        # deletes 12
        ("11", '{"v": "b2"}'),
    ])
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)")
        cid = _begin(conn, topic, "t", format="json")
    _committed(fresh_db, cid, 5)
    assert query(fresh_db, "SELECT id, v FROM t ORDER BY id") == [(10, "a"), (11, "b2")]
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 0


@pytest.mark.timeout(120)
def test_a_tombstone_deletes_a_row_whose_other_column_is_a_not_null_domain(fresh_db, topic_factory):
    """The staging table does not hold the relation's NOT NULL domains for columns a tombstone
    leaves empty (was: the tombstone a 23502 dead letter, the row kept). Domains still hold for
    values, with their defaults: at the final INSERT, message by message."""
    topic = topic_factory(1)
    _send(topic, [("1", '{"id": 1, "v": "a"}'), ("2", '{"id": 2, "v": "b"}')])
    with pg_connect(fresh_db) as conn:
        conn.execute("""
            CREATE DOMAIN short AS varchar(3) COLLATE "C";
            CREATE DOMAIN nn_text AS short NOT NULL;
            CREATE DOMAIN pos_int AS int DEFAULT 5 CHECK (VALUE > 0);
            CREATE TABLE t (id int PRIMARY KEY, v nn_text, w pos_int)""")
        cid = _begin(conn, topic, "t", format="json")
    _committed(fresh_db, cid, 2)
    _send(topic, [
        ("1", None),                              # deletes 1
        ("3", '{"id": 3, "v": "c", "w": -1}'),    # the domain's CHECK: 23514
        ("4", '{"id": 4}'),                       # NULL for the NOT NULL domain: 23502
        ("5", '{"id": 5, "v": "e"}'),             # w: the domain's default
        ("6", '{"id": 6, "v": "long"}'),          # over the base type's varchar(3): 22001
    ])
    _committed(fresh_db, cid, 7)
    assert query(fresh_db, "SELECT id, v, w FROM t ORDER BY id") == [(2, "b", 5), (5, "e", 5)]
    assert query(fresh_db, 'SELECT "offset", sqlstate FROM pipeline_kafka.dead_letters ORDER BY "offset"') == [
        (3, "23514"), (4, "23502"), (6, "22001")]
