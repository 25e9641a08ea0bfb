"""Security review 3 (issue 19), items 3 and 5: views that filter rows for their caller leak
nothing to a leaky function, and no stored or given time can stop the database's consumers.

3. `pipeline_kafka.consumer_status`, `pipeline_kafka.consumer_lag` and
   `pipeline_kinesis.consumer_status` filter another role's consumers out with pg_has_role; a cheap
   function in the caller's WHERE that prints its argument ran before that filter (no
   security_barrier) and printed the victim's topic, group id and last_error. The set-returning
   functions behind them (partition_status, shard_status) returned every role's consumers.
5. `consume_begin(..., start_time := '294250-01-01+00')` was stored, overflowed a bigint in every
   later read of the consumers table, and so stopped every consumer of the database (the
   supervisor's read failed), and even consume_drop. Times are range-checked at the call (22008),
   and a value stored before that check is read clamped.

Every attack runs as a real LOGIN role connecting by itself (the cluster uses trust auth)."""
from __future__ import annotations

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, kinesis_add_endpoint, kinesis_consume_begin, pg_connect, produce, query, scalar,
                       unique_name, wait_until)

# A function that costs next to nothing (so the planner evaluates it before the view's own
# filter unless the view is a barrier) and tells the caller every value it is given.
LEAK = """
CREATE FUNCTION {schema}.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $f$
BEGIN
  RAISE NOTICE 'leaked: %', $1;
  RETURN true;
END $f$;
"""


def _schema_of(db: str, role: str) -> str:
    schema = unique_name("pi_s")
    with pg_connect(db) as conn:
        conn.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
    return schema


def _notices(db: str, role: str, sql: str) -> list[str]:
    """Runs `sql` as `role`; the NOTICE texts it raised."""
    seen: list[str] = []
    with pg_connect(db, user=role) as conn:
        conn.add_notice_handler(lambda d: seen.append(d.message_primary))
        conn.execute(sql).fetchall()
    return seen


@pytest.mark.timeout(120)
def test_status_views_are_barriers_to_a_leaky_function(fresh_db, roles, topic_factory, stream_factory):
    db = fresh_db
    victim, attacker = roles("pi_victim"), roles("pi_attacker")
    vs, ats = _schema_of(db, victim), _schema_of(db, attacker)
    topic = topic_factory(1)
    stream, _ = stream_factory(1)
    secret_group = unique_name("secret_group")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    kinesis_add_endpoint(db)
    with pg_connect(db, user=victim) as conn:
        conn.execute(f"CREATE TABLE {vs}.t (id int, v text)")
        kid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv', group_id := %s)",
                           (topic, f"{vs}.t", secret_group)).fetchone()[0]
        sid = kinesis_consume_begin(conn, "local", stream, f"{vs}.t", format="csv")
    with pg_connect(db, user=attacker) as conn:
        conn.execute(LEAK.format(schema=ats))
        conn.execute(f"GRANT USAGE ON SCHEMA {ats} TO PUBLIC")  # the victim calls it too, below
    # The victim's consumer runs (its worker published its partition, the offsets row exists).
    produce(topic, ["1,a"])
    wait_until(lambda: scalar(db, f"SELECT count(*) FROM {vs}.t") >= 1, timeout=60, what="the victim's row")
    wait_until(lambda: scalar(db, "SELECT count(*) FROM pipeline_kafka.partition_status() WHERE consumer_id = %s",
                              (kid,)) >= 1, timeout=30, what="the victim's worker in shared memory")
    # The victim's Kinesis worker listed its shard (a row in pipeline_kinesis.consumer_lag).
    wait_until(lambda: scalar(db, "SELECT count(*) FROM pipeline_kinesis.seqnums WHERE consumer_id = %s", (sid,)) >= 1,
               timeout=30, what="the victim's shard in seqnums")
    with pg_connect(db) as conn:  # a last_error quoting message contents, as a failed batch leaves one
        conn.execute("UPDATE pipeline_kafka.consumers SET last_error = 'secret message contents' WHERE id = %s", (kid,))
        conn.execute("UPDATE pipeline_kinesis.consumers SET last_error = 'secret record contents' WHERE id = %s", (sid,))

    for sql in [
        f"SELECT 1 FROM pipeline_kafka.consumer_status WHERE {ats}.leak(last_error)",
        f"SELECT 1 FROM pipeline_kafka.consumer_status WHERE {ats}.leak(topic)",
        f"SELECT 1 FROM pipeline_kafka.consumer_lag WHERE {ats}.leak(group_id)",
        f"SELECT 1 FROM pipeline_kafka.consumer_lag WHERE {ats}.leak(topic)",
        f"SELECT 1 FROM pipeline_kinesis.consumer_status WHERE {ats}.leak(last_error)",
        f"SELECT 1 FROM pipeline_kinesis.consumer_status WHERE {ats}.leak(stream)",
        f"SELECT 1 FROM pipeline_kinesis.consumer_lag WHERE {ats}.leak(stream)",
    ]:
        leaked = _notices(db, attacker, sql)
        assert leaked == [], f"{sql}: {leaked}"
        assert query(db, sql.replace(f"{ats}.leak", "pg_catalog.length").replace(")", ") > 0", 1)) != [], \
            "the superuser sees the rows (the query itself is right)"
    # The victim still sees its own rows through the same views.
    assert f"leaked: {topic}" in _notices(db, victim, f"SELECT 1 FROM pipeline_kafka.consumer_status WHERE {ats}.leak(topic)")
    # The functions behind the views return only the caller's consumers.
    with pg_connect(db, user=attacker) as conn:
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.partition_status()").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pipeline_kinesis.shard_status()").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.consumer_watermarks()").fetchone()[0] == 0
    with pg_connect(db, user=victim) as conn:
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.partition_status() WHERE consumer_id = %s",
                            (kid,)).fetchone()[0] == 1
    # Every view of the extension that filters for its caller is a barrier.
    unguarded = query(db, """
        SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('pipeline_kafka', 'pipeline_kinesis') AND c.relkind = 'v'
          AND pg_get_viewdef(c.oid) LIKE '%pg_has_role%'
          AND NOT coalesce('security_barrier=true' = ANY (c.reloptions), false)""")
    assert unguarded == []


def _raises(db: str, sql: str, params=(), user=None) -> str:
    with pg_connect(db, user=user) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute(sql, params)
    assert "backtrace" not in str(e.value).lower() and "panicked" not in str(e.value).lower(), str(e.value)
    return e.value.sqlstate


@pytest.mark.timeout(120)
def test_times_out_of_range_are_refused_at_the_call(fresh_db, topic_factory, stream_factory):
    db = fresh_db
    topic = topic_factory(1)
    stream, _ = stream_factory(1)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("CREATE TABLE t (id int, v text)")
    kinesis_add_endpoint(db)
    far = "294250-01-01 00:00:00+00"
    assert _raises(db, "SELECT pipeline_kafka.consume_begin(%s, 't', start_time := %s)", (topic, far)) == "22008"
    assert _raises(db, "SELECT pipeline_kafka.consume_begin(%s, 't', start_time := '10000-01-01+00')", (topic,)) \
        == "22008"
    assert _raises(db, "SELECT pipeline_kinesis.consume_begin('local', %s, 't', start_time := %s)", (stream, far)) \
        == "22008"
    assert _raises(db, "SELECT pipeline_kinesis.consume_begin('local', %s, 't', start_time := 'infinity')",
                   (stream,)) == "22023"
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.consumers") == 0
    assert _raises(db, "SELECT * FROM pipeline_kinesis.preview('local', %s, 't', start_time := %s)", (stream, far)) \
        == "22008"
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv')", (topic,))
    assert _raises(db, "SELECT pipeline_kafka.seek(%s, 't', start_time := %s)", (topic, far)) == "22008"
    # A Kafka timestamp is milliseconds since 1970.
    assert _raises(db, "SELECT pipeline_kafka.produce_message(%s, 'x'::bytea, \"timestamp\" := %s)", (topic, far)) \
        == "22008"
    assert _raises(db, "SELECT pipeline_kafka.produce_message(%s, 'x'::bytea, \"timestamp\" := '1960-01-01+00')",
                   (topic,)) == "22008"
    assert _raises(db, "SELECT pipeline_kafka.produce_message(%s, 'x'::bytea, \"timestamp\" := 'infinity')",
                   (topic,)) == "22023"
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0
    # The extremes that are allowed still work.
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.seek(%s, 't', start_time := '9999-12-31 23:00:00+00')", (topic,))


@pytest.mark.timeout(180)
def test_a_stored_extreme_time_stops_no_other_consumer(fresh_db, topic_factory, stream_factory):
    """A start_time stored before the check (0.5.0 accepted it; here written by the superuser
    straight into the catalog) leaves every other consumer running, and every function working."""
    db = fresh_db
    poisoned, healthy = topic_factory(1), topic_factory(1)
    stream, _ = stream_factory(1)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("CREATE TABLE p (id int, v text)")
        conn.execute("CREATE TABLE h (id int, v text)")
        conn.execute("CREATE TABLE k (id int, v text)")
    kinesis_add_endpoint(db)
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'p', format := 'csv', start_offset := -2)", (poisoned,))
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 'p')", (poisoned,))
        kid = kinesis_consume_begin(conn, "local", stream, "k", format="csv")
        conn.execute("SELECT pipeline_kinesis.consume_end('local', %s, 'k')", (stream,))
        conn.execute("UPDATE pipeline_kafka.consumers SET start_time = '294250-01-01+00' WHERE topic = %s", (poisoned,))
        conn.execute("UPDATE pipeline_kinesis.consumers SET start_time = '294250-01-01+00' WHERE id = %s", (kid,))
    # Every read of the consumers works: start all, status, a new consumer, stop, drop.
    with pg_connect(db) as conn:
        assert conn.execute("SELECT pipeline_kafka.consume_begin()").fetchone()[0] == 1
        assert conn.execute("SELECT pipeline_kinesis.consume_begin()").fetchone()[0] == 1
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'h', format := 'csv', start_offset := -2)", (healthy,))
    produce(healthy, [f"{i},h" for i in range(50)])
    produce(poisoned, [f"{i},p" for i in range(5)])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM h") == 50, timeout=90,
               what="the healthy consumer's rows beside the poisoned one")
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumer_status WHERE topic = %s", (poisoned,)) >= 1
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.consume_end()")
        conn.execute("SELECT pipeline_kafka.consume_drop(%s, 'p')", (poisoned,))
        conn.execute("SELECT pipeline_kinesis.consume_drop('local', %s, 'k')", (stream,))
        conn.execute("SELECT pipeline_kafka.consume_drop(%s, 'h')", (healthy,))
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
    assert scalar(db, "SELECT count(*) FROM pipeline_kinesis.consumers") == 0
