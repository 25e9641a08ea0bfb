"""Who a consumer writes as, and who sees what it did (issue 11, items 2, 3, 7, 9).

Rows are written with the rights of the target table's owner, never more: creating or changing a
consumer needs the right to SET ROLE to that owner; a table created again under the consumer's
table's name, or given away, is not written into unless its owner is the consumer's; nothing a
table owner's code does (triggers, deferred triggers, settings it leaves behind) runs as the
superuser. A consumer's row, status and errors are for its owner and superusers. Temporary tables
are refused, and a consumer whose table is gone can be stopped and removed.

Every attack runs as a real LOGIN role connecting by itself (the cluster uses trust auth)."""
from __future__ import annotations

import json

import psycopg
import pytest

from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, unique_name, wait_until

# A trigger function that tries to make `role` a superuser and records, in the row, whether it
# could and as whom it ran.
ESCALATE = """
CREATE FUNCTION {schema}.escalate() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
  BEGIN
    EXECUTE 'ALTER ROLE {role} SUPERUSER';
    NEW.v := 'escalated as ' || current_user;
  EXCEPTION WHEN insufficient_privilege THEN
    NEW.v := 'denied as ' || current_user;
  END;
  RETURN NEW;
END $f$;
"""


def _is_superuser(db: str, role: str) -> bool:
    return scalar(db, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))


def _consumer(db: str, cid: int) -> dict:
    cur = query(db, "SELECT owner::text, enabled, last_error, relation::text FROM pipeline_kafka.consumers "
                    "WHERE id = %s", (cid,))
    return dict(zip(("owner", "enabled", "last_error", "relation"), cur[0])) if cur else {}


def _owned_schema(db: str, role: str) -> str:
    """A schema owned by `role`, with a table t (id int, v text) it owns."""
    schema = unique_name("pi_s")
    with pg_connect(db) as conn:
        conn.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
    with pg_connect(db, user=role) as conn:
        conn.execute(f"CREATE TABLE {schema}.t (id int, v text)")
    return schema


@pytest.mark.timeout(120)
def test_table_created_again_by_another_role_is_not_adopted(fresh_db, topic_factory, roles):
    """Item 2: a superuser's consumer; its table is dropped; a role with CREATE on the schema
    creates it again with a trigger that makes it superuser. The consumer stops instead of
    writing, with an error saying why, and skips nothing: once the new owner re-runs
    consume_begin (and drops its trigger), the message lands."""
    topic = topic_factory(1)
    attacker = roles("pi_att")
    schema = unique_name("pi_shared")
    with pg_connect(fresh_db) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {attacker}")
        conn.execute(f"CREATE TABLE {schema}.events (id int, v text)")
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv', start_offset := -2)",
                           (topic, f"{schema}.events")).fetchone()[0]
    assert _consumer(fresh_db, cid)["owner"] == "postgres"
    produce(topic, ["1,first"])
    wait_until(lambda: scalar(fresh_db, f"SELECT count(*) FROM {schema}.events") == 1, timeout=60,
               what="the first row (the consumer works)")
    with pg_connect(fresh_db) as conn:
        conn.execute(f"DROP TABLE {schema}.events")
    with pg_connect(fresh_db, user=attacker) as conn:
        conn.execute(f"CREATE TABLE {schema}.events (id int, v text)")
        conn.execute(ESCALATE.format(schema=schema, role=attacker))
        conn.execute(f"CREATE TRIGGER escalate BEFORE INSERT ON {schema}.events "
                     f"FOR EACH ROW EXECUTE FUNCTION {schema}.escalate()")
    produce(topic, ["2,second"])
    c = wait_until(lambda: (lambda c: c if not c["enabled"] else None)(_consumer(fresh_db, cid)), timeout=60,
                   what="the consumer to stop")
    assert f"was created again with owner {attacker}" in c["last_error"], c
    assert "belongs to postgres" in c["last_error"] and "42501" in c["last_error"], c
    assert not _is_superuser(fresh_db, attacker)
    assert scalar(fresh_db, f"SELECT count(*) FROM {schema}.events") == 0
    assert scalar(fresh_db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', (cid,)) == 1
    # the new owner adopts it explicitly: same consumer, its offsets, written as the attacker
    with pg_connect(fresh_db, user=attacker) as conn:
        conn.execute(f"DROP TRIGGER escalate ON {schema}.events")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        again = conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv')",
                             (topic, f"{schema}.events")).fetchone()[0]
    assert again == cid
    assert any("now belongs to" in n for n in notices), notices
    wait_until(lambda: query(fresh_db, f"SELECT id, v FROM {schema}.events") == [(2, "second")], timeout=60,
               what="the held-back message in the adopted table")
    c = _consumer(fresh_db, cid)
    assert c["owner"] == attacker and c["enabled"] and c["relation"] == f"{schema}.events", c
    assert not _is_superuser(fresh_db, attacker)


@pytest.mark.timeout(120)
def test_superuser_changing_a_consumer_does_not_become_its_owner(fresh_db, topic_factory, roles):
    """Item 3: a superuser re-runs consume_begin (a settings change) on a low-privilege role's
    consumer. The consumer still writes as the table's owner, so the owner's trigger cannot make
    itself superuser; neither can a deferred constraint trigger, which fires at commit."""
    topic = topic_factory(1)
    low = roles("pi_low")
    schema = _owned_schema(fresh_db, low)
    with pg_connect(fresh_db, user=low) as conn:
        conn.execute(ESCALATE.format(schema=schema, role=low))
        conn.execute(f"CREATE TRIGGER escalate BEFORE INSERT ON {schema}.t FOR EACH ROW EXECUTE FUNCTION {schema}.escalate()")
        conn.execute(f"CREATE TABLE {schema}.seen (who text, escalated bool)")
        conn.execute(f"""
            CREATE FUNCTION {schema}.deferred() RETURNS trigger LANGUAGE plpgsql AS $f$
            DECLARE ok bool := true;
            BEGIN
              BEGIN EXECUTE 'ALTER ROLE {low} SUPERUSER';
              EXCEPTION WHEN insufficient_privilege THEN ok := false;
              END;
              INSERT INTO {schema}.seen VALUES (current_user, ok);
              RETURN NULL;
            END $f$""")
        conn.execute(f"CREATE CONSTRAINT TRIGGER deferred AFTER INSERT ON {schema}.t DEFERRABLE INITIALLY DEFERRED "
                     f"FOR EACH ROW EXECUTE FUNCTION {schema}.deferred()")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv', start_offset := -2)",
                           (topic, f"{schema}.t")).fetchone()[0]
    assert _consumer(fresh_db, cid)["owner"] == low
    with pg_connect(fresh_db) as conn:
        assert conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv', batchsize := 10)",
                            (topic, f"{schema}.t")).fetchone()[0] == cid
    assert _consumer(fresh_db, cid)["owner"] == low
    produce(topic, ["1,x"])
    rows = wait_until(lambda: query(fresh_db, f"SELECT id, v FROM {schema}.t"), timeout=60, what="the row")
    assert rows == [(1, f"denied as {low}")]
    wait_until(lambda: query(fresh_db, f"SELECT who, escalated FROM {schema}.seen"), timeout=30,
               what="the deferred trigger's record")
    assert query(fresh_db, f"SELECT who, escalated FROM {schema}.seen") == [(low, False)]
    assert not _is_superuser(fresh_db, low)


@pytest.mark.timeout(120)
def test_only_members_of_the_table_owner_may_consume_into_it(fresh_db, topic_factory, roles):
    """Item 2/3 rule: INSERT on someone else's table is not enough (42501); membership in its
    owner is. A table given to another role (ALTER TABLE OWNER) stops its consumer until a
    member of the new owner runs consume_begin."""
    topic = topic_factory(1)
    low, inserter, member, heir = roles("pi_low"), roles("pi_ins"), roles("pi_mem"), roles("pi_heir")
    schema = _owned_schema(fresh_db, low)
    with pg_connect(fresh_db, user=low) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {inserter}, {member}, {heir}")
        conn.execute(f"GRANT INSERT, SELECT ON {schema}.t TO {inserter}")
    with pg_connect(fresh_db) as conn:
        conn.execute(f"GRANT {low} TO {member}")
    with pg_connect(fresh_db, user=inserter) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv')", (topic, f"{schema}.t"))
        assert f"must be able to SET ROLE {low}" in str(e.value)
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
    with pg_connect(fresh_db, user=member) as conn:
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv', start_offset := -2)",
                           (topic, f"{schema}.t")).fetchone()[0]
    assert _consumer(fresh_db, cid)["owner"] == low
    produce(topic, ["1,a"])
    wait_until(lambda: scalar(fresh_db, f"SELECT count(*) FROM {schema}.t") == 1, timeout=60, what="the first row")
    with pg_connect(fresh_db) as conn:
        conn.execute(f"ALTER TABLE {schema}.t OWNER TO {heir}")
    produce(topic, ["2,b"])
    c = wait_until(lambda: (lambda c: c if not c["enabled"] else None)(_consumer(fresh_db, cid)), timeout=60,
                   what="the consumer to stop")
    assert f"now belongs to {heir}" in c["last_error"] and f"belongs to {low}" in c["last_error"], c
    assert scalar(fresh_db, f"SELECT count(*) FROM {schema}.t") == 1
    with pg_connect(fresh_db, user=heir) as conn:
        assert conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv')",
                            (topic, f"{schema}.t")).fetchone()[0] == cid
    wait_until(lambda: scalar(fresh_db, f"SELECT count(*) FROM {schema}.t") == 2, timeout=60,
               what="the held-back row, written as the new owner")
    assert _consumer(fresh_db, cid)["owner"] == heir


@pytest.mark.timeout(120)
def test_settings_left_by_a_trigger_or_a_caller_do_not_reach_catalog_statements(fresh_db, topic_factory, roles):
    """Catalog statements run as the superuser. A search_path set by the caller of consume_begin,
    or left behind in a worker's session by the owner's trigger, must not let functions of the
    owner's schema (exact-type overloads of format() and unnest() the catalog statements use) run
    in them."""
    topic = topic_factory(1)
    low = roles("pi_low")
    schema = _owned_schema(fresh_db, low)
    with pg_connect(fresh_db, user=low) as conn:
        for sig, ret, body in [("format(text, name, name)", "text", "RETURN 'x';"),
                               ("unnest(integer[])", "SETOF integer", "RETURN NEXT 0;")]:
            conn.execute(f"""
                CREATE FUNCTION {schema}.{sig} RETURNS {ret} LANGUAGE plpgsql AS $f$
                BEGIN
                  BEGIN EXECUTE 'ALTER ROLE {low} SUPERUSER';
                  EXCEPTION WHEN insufficient_privilege THEN NULL;
                  END;
                  {body}
                END $f$""")
        conn.execute(f"""
            CREATE FUNCTION {schema}.leave_path() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN
              PERFORM pg_catalog.set_config('search_path', '{schema}, pg_catalog', false);
              RETURN NEW;
            END $f$""")
        conn.execute(f"CREATE TRIGGER leave_path BEFORE INSERT ON {schema}.t FOR EACH ROW "
                     f"EXECUTE FUNCTION {schema}.leave_path()")
        conn.execute(f"SET search_path = {schema}, pg_catalog")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)",
                           (topic,)).fetchone()[0]
    assert not _is_superuser(fresh_db, low)
    assert scalar(fresh_db, "SELECT relname FROM pipeline_kafka.consumers WHERE id = %s", (cid,)) == f"{schema}.t"
    produce(topic, ["1,a"])
    wait_until(lambda: scalar(fresh_db, f"SELECT count(*) FROM {schema}.t") == 1, timeout=60, what="the first row")
    produce(topic, ["2,b"])  # the next batch's catalog statements run after the trigger's set_config
    wait_until(lambda: scalar(fresh_db, f"SELECT count(*) FROM {schema}.t") == 2, timeout=60, what="the second row")
    assert scalar(fresh_db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', (cid,)) == 2
    assert not _is_superuser(fresh_db, low)


@pytest.mark.timeout(120)
def test_status_and_errors_are_visible_to_the_owner_only(fresh_db, topic_factory, roles):
    """Item 7: last_error quotes message contents; only the consumer's owner (and superusers) see
    it, in consumer_status and in pipeline_kafka.consumers; another role sees none of its rows."""
    topic = topic_factory(1)
    low, other = roles("pi_low"), roles("pi_other")
    schema = _owned_schema(fresh_db, low)
    with pg_connect(fresh_db, user=low) as conn:
        conn.execute(f"CREATE TABLE {schema}.cards (id int)")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv', start_offset := -2, "
                           "on_error := 'stop')", (topic, f"{schema}.cards")).fetchone()[0]
    produce(topic, ["CARD-4111111111111111"])
    c = wait_until(lambda: (lambda c: c if not c["enabled"] else None)(_consumer(fresh_db, cid)), timeout=60,
                   what="the consumer to stop on the bad message")
    assert "CARD-4111111111111111" in c["last_error"], c
    with pg_connect(fresh_db, user=low) as conn:
        mine = conn.execute("SELECT last_error FROM pipeline_kafka.consumer_status WHERE consumer_id = %s",
                            (cid,)).fetchall()
        assert mine and "CARD-4111111111111111" in mine[0][0]
        assert "CARD-4111111111111111" in conn.execute(
            "SELECT last_error FROM pipeline_kafka.consumers WHERE id = %s", (cid,)).fetchone()[0]
    with pg_connect(fresh_db, user=other) as conn:
        seen = {t: conn.execute(f"SELECT * FROM pipeline_kafka.{t}").fetchall()
                for t in ("consumers", "consumer_status", "dead_letters")}
        assert seen == {"consumers": [], "consumer_status": [], "dead_letters": []}
        assert "4111111111111111" not in json.dumps(seen, default=str)
        # nor can it stop, change or remove it
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pipeline_kafka.consume_drop(%s, %s)", (topic, f"{schema}.cards"))
    assert _consumer(fresh_db, cid)["owner"] == low


@pytest.mark.timeout(120)
def test_a_consumer_whose_table_is_gone_can_be_stopped_and_removed(fresh_db, topic_factory, roles):
    """Item 9: consume_end and consume_drop find a consumer by its dropped table's name;
    consume_drop removes it with its offsets and dead letters."""
    topic = topic_factory(1)
    low = roles("pi_low")
    schema = _owned_schema(fresh_db, low)
    with pg_connect(fresh_db, user=low) as conn:
        conn.execute(f"SET search_path = {schema}")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 't', format := 'csv', start_offset := -2)",
                           (topic,)).fetchone()[0]
        produce(topic, ["1,a", "bad", "2,b"])
        wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 1
                   and scalar(fresh_db, f"SELECT count(*) FROM {schema}.t") == 2, timeout=60,
                   what="two rows and a dead letter")
        conn.execute("DROP TABLE t")
        # unqualified (search_path) and qualified names both find it
        conn.execute("SELECT pipeline_kafka.consume_end(%s, 't')", (topic,))
        assert _consumer(fresh_db, cid)["enabled"] is False
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT pipeline_kafka.consume_drop(%s, 'no_such_table')", (topic,))
        conn.execute("SELECT pipeline_kafka.consume_drop(%s, %s)", (topic, f"{schema}.t"))
    for table in ("consumers", "offsets", "dead_letters", "secrets"):
        assert scalar(fresh_db, f"SELECT count(*) FROM pipeline_kafka.{table}") == 0, table


def test_temporary_tables_are_refused(fresh_db):
    """Item 9: a worker cannot see the caller's temporary table: refused at consume_begin."""
    with pg_connect(fresh_db) as conn:
        conn.execute("CREATE TEMP TABLE tmp_target (id int)")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            conn.execute("SELECT pipeline_kafka.consume_begin('any_topic', 'tmp_target')")
        assert "temporary table" in str(e.value)
    assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.consumers") == 0
