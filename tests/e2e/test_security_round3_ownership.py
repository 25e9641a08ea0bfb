"""Whose rights a write runs with, and who sees what it left (issue 19, items 1, 2 and 10).

1. A stream-partitioned consumer's message key names the table its rows go to: the rows are
   written as that table's owner, and only into tables of a role whose privileges the consumer's
   owner has (42501 dead letter otherwise). A superuser's consumer therefore never runs another
   role's trigger as the superuser.
2. A transform function is pinned (oid and owner) by consume_begin: one dropped and created again
   under the same signature by another role is never called; the consumer stops and says why. The
   owner creating its own function again is adopted.
10. Dead letters stay with the role that owned the consumer when they were written: a role that
   takes the consumer over (its table created again by that role) neither sees nor deletes them,
   and does not get the old owner's last_error.

Every attack runs as a real LOGIN role connecting by itself (the cluster uses trust auth)."""
from __future__ import annotations

import pytest

import pihelpers
from pihelpers import KAFKA_BOOTSTRAP, pg_connect, produce, query, scalar, unique_name, wait_until


def _is_superuser(db: str, role: str) -> bool:
    return scalar(db, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,))


def _consumer(db: str, cid: int) -> dict:
    cur = query(db, "SELECT owner::text, enabled, last_error FROM pipeline_kafka.consumers WHERE id = %s", (cid,))
    return dict(zip(("owner", "enabled", "last_error"), cur[0])) if cur else {}


def _stopped(db: str, cid: int) -> dict | None:
    c = _consumer(db, cid)
    return c if not c["enabled"] else None


def _letters(db: str, **kw) -> dict[str, tuple[str, str]]:
    """value -> (sqlstate, error) of the dead letters the connection's role sees."""
    with pg_connect(db, **kw) as conn:
        rows = conn.execute("SELECT convert_from(value, 'UTF8'), sqlstate, error FROM pipeline_kafka.dead_letters").fetchall()
    return {v: (s, e) for v, s, e in rows}


# --- item 1 ------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_superuser_stream_partitioned_consumer_writes_as_the_tables_owner(fresh_db, topic_factory, roles):
    """The issue's attack: a superuser runs consume_begin_stream_partitioned; a role with CREATE
    on a schema creates a table whose BEFORE INSERT trigger runs ALTER ROLE ... SUPERUSER (and
    grants INSERT to PUBLIC); one message keyed with that table's name. The write runs as the
    table's owner: the trigger fails as the attacker, the message is a dead letter with the
    trigger's SQLSTATE (42501), the attacker is no superuser. A second attacker table whose
    trigger catches the error shows whom it ran as; the superuser's own table gets its row."""
    db = fresh_db
    topic = topic_factory(1)
    attacker = roles("pi_att")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("CREATE SCHEMA app")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA app TO {attacker}")
        conn.execute("CREATE TABLE app.good (id int, v text)")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, format := 'csv', start_offset := -2)",
                           (topic,)).fetchone()[0]
    assert _consumer(db, cid)["owner"] == "postgres"
    with pg_connect(db, user=attacker) as conn:
        conn.execute("CREATE TABLE app.evil (id int, v text)")
        conn.execute("GRANT INSERT ON app.evil TO PUBLIC")
        conn.execute(f"""
            CREATE FUNCTION app.escalate() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN EXECUTE 'ALTER ROLE {attacker} SUPERUSER'; RETURN NEW; END $f$""")
        conn.execute("CREATE TRIGGER escalate BEFORE INSERT ON app.evil FOR EACH ROW EXECUTE FUNCTION app.escalate()")
        conn.execute("CREATE TABLE app.probe (id int, v text)")
        conn.execute(f"""
            CREATE FUNCTION app.probe() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN
              BEGIN
                EXECUTE 'ALTER ROLE {attacker} SUPERUSER';
                NEW.v := 'escalated as ' || current_user;
              EXCEPTION WHEN insufficient_privilege THEN
                NEW.v := 'denied as ' || current_user;
              END;
              RETURN NEW;
            END $f$""")
        conn.execute("CREATE TRIGGER probe BEFORE INSERT ON app.probe FOR EACH ROW EXECUTE FUNCTION app.probe()")
    produce(topic, ["1,evil"], key="app.evil")
    produce(topic, ["2,probe"], key="app.probe")
    produce(topic, ["3,good"], key="app.good")
    wait_until(lambda: scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', (cid,)) == 3,
               timeout=60, what="the three messages to be consumed")
    assert not _is_superuser(db, attacker)
    assert scalar(db, "SELECT count(*) FROM app.evil") == 0
    assert query(db, "SELECT id, v FROM app.probe") == [(2, f"denied as {attacker}")]
    assert query(db, "SELECT id, v FROM app.good") == [(3, "good")]
    letters = _letters(db)
    assert set(letters) == {"1,evil"}, letters
    state, error = letters["1,evil"]
    assert state == "42501" and "superuser" in error.lower() and f"writing as {attacker}" in error, letters
    assert _consumer(db, cid)["enabled"]


@pytest.mark.timeout(120)
def test_stream_partitioned_consumer_writes_only_tables_of_roles_it_has_the_privileges_of(fresh_db, topic_factory, roles):
    """A plain role's stream-partitioned consumer: a victim's table it may INSERT into by a grant,
    but whose owner it is not a member of, is refused (42501 dead letter, no row); its own
    tables and those of a role it is a member of are written, as their owners. A table given
    to the victim between two batches is refused from the next batch on."""
    db = fresh_db
    topic = topic_factory(1)
    owner, victim, group = roles("pi_own"), roles("pi_vic"), roles("pi_grp")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("CREATE SCHEMA s")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA s TO {owner}, {victim}, {group}")
        conn.execute(f"GRANT {group} TO {owner}")
        # records whom a row was written as
        conn.execute("CREATE FUNCTION s.who() RETURNS trigger LANGUAGE plpgsql AS "
                     "$f$ BEGIN NEW.who := current_user; RETURN NEW; END $f$")
    with pg_connect(db, user=victim) as conn:
        conn.execute("CREATE TABLE s.victims (id int, who text)")
        conn.execute(f"GRANT INSERT ON s.victims TO {owner}")
    with pg_connect(db, user=group) as conn:
        conn.execute("CREATE TABLE s.groups (id int, who text)")
    with pg_connect(db, user=owner) as conn:
        conn.execute("CREATE TABLE s.mine (id int, who text)")
        conn.execute("CREATE TABLE s.given (id int, who text)")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin_stream_partitioned(%s, format := 'csv', start_offset := -2)",
                           (topic,)).fetchone()[0]
    with pg_connect(db) as conn:
        for t in ("victims", "groups", "mine", "given"):
            conn.execute(f"CREATE TRIGGER who BEFORE INSERT ON s.{t} FOR EACH ROW EXECUTE FUNCTION s.who()")
    produce(topic, ["1,"], key="s.victims")
    produce(topic, ["2,"], key="s.groups")
    produce(topic, ["3,"], key="s.mine")
    produce(topic, ["4,"], key="s.given")
    wait_until(lambda: scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', (cid,)) == 4,
               timeout=60, what="the first four messages")
    assert scalar(db, "SELECT count(*) FROM s.victims") == 0
    assert query(db, "SELECT id, who FROM s.groups") == [(2, group)]
    assert query(db, "SELECT id, who FROM s.mine") == [(3, owner)]
    assert query(db, "SELECT id, who FROM s.given") == [(4, owner)]
    letters = _letters(db)
    assert set(letters) == {"1,"}, letters
    assert letters["1,"][0] == "42501" and f"belongs to {victim}" in letters["1,"][1], letters
    # ownership is read for every batch
    with pg_connect(db) as conn:
        conn.execute(f"ALTER TABLE s.given OWNER TO {victim}")
    produce(topic, ["5,"], key="s.given")
    wait_until(lambda: scalar(db, 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s', (cid,)) == 5,
               timeout=60, what="the fifth message")
    assert query(db, "SELECT id FROM s.given") == [(4,)]
    letters = _letters(db)
    assert letters["5,"][0] == "42501" and f"belongs to {victim}" in letters["5,"][1], letters
    assert _consumer(db, cid)["enabled"]


# --- item 2 ------------------------------------------------------------------------------------

TRANSFORM = """
CREATE FUNCTION shared.to_events(batch pipeline_kafka.message[]) RETURNS SETOF shared.events LANGUAGE sql AS $f$
  SELECT convert_from(m.value, 'UTF8')::int, {tag}::text FROM unnest(batch) m $f$"""


@pytest.mark.timeout(120)
def test_dropped_transform_replaced_by_another_roles_function_is_not_called(fresh_db, topic_factory, roles):
    """A superuser's consumer with a transform in a schema where the attacker has CREATE. The
    superuser drops the function; the attacker creates one with the same signature that makes it
    superuser and writes a marker. The next message: the attacker's function is not called (no
    superuser, no marker), nothing is written, the consumer stops with a last_error naming the
    function and both owners; its offset stays."""
    db = fresh_db
    topic = topic_factory(1)
    attacker = roles("pi_att")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("CREATE SCHEMA shared")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA shared TO {attacker}")
        conn.execute("CREATE TABLE shared.events (id int, tag text)")
        conn.execute(TRANSFORM.format(tag="'v1'"))
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'shared.events', start_offset := -2, "
                           "transform := 'shared.to_events(pipeline_kafka.message[])')", (topic,)).fetchone()[0]
    produce(topic, ["1"])
    wait_until(lambda: query(db, "SELECT id, tag FROM shared.events") == [(1, "v1")], timeout=60, what="the first row")

    with pg_connect(db) as conn:
        conn.execute("DROP FUNCTION shared.to_events(pipeline_kafka.message[])")
    with pg_connect(db, user=attacker) as conn:
        conn.execute("CREATE TABLE shared.marker (who text)")
        conn.execute("GRANT INSERT ON shared.marker TO PUBLIC")
        conn.execute(f"""
            CREATE FUNCTION shared.to_events(batch pipeline_kafka.message[]) RETURNS void LANGUAGE plpgsql AS $f$
            BEGIN
              INSERT INTO shared.marker VALUES (current_user);
              EXECUTE 'ALTER ROLE {attacker} SUPERUSER';
            END $f$""")
    produce(topic, ["2"])
    offset = 'SELECT "offset" FROM pipeline_kafka.offsets WHERE consumer_id = %s'
    wait_until(lambda: _stopped(db, cid) or scalar(db, offset, (cid,)) == 2, timeout=60,
               what="the consumer to stop (or to consume the message)")
    assert not _is_superuser(db, attacker)
    assert scalar(db, "SELECT count(*) FROM shared.marker") == 0
    c = _consumer(db, cid)
    assert not c["enabled"], c
    assert "transform function shared.to_events(pipeline_kafka.message[]) now belongs to " + attacker in c["last_error"], c
    assert "postgres's when consume_begin ran" in c["last_error"] and "42501" in c["last_error"], c
    assert query(db, "SELECT id, tag FROM shared.events") == [(1, "v1")]
    assert scalar(db, offset, (cid,)) == 1


@pytest.mark.timeout(120)
def test_transform_created_again_by_its_owner_is_adopted_and_a_dropped_one_stops(fresh_db, topic_factory, roles):
    """The owner creating its own function again (a new oid, same signature and owner) is adopted:
    rows keep flowing, the new oid is pinned. A function dropped and not created again stops the
    consumer (42883 in last_error) rather than waiting for whoever creates one."""
    db = fresh_db
    topic = topic_factory(1)
    owner = roles("pi_own")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute(f"CREATE SCHEMA shared AUTHORIZATION {owner}")
    with pg_connect(db, user=owner) as conn:
        conn.execute("CREATE TABLE shared.events (id int, tag text)")
        conn.execute(TRANSFORM.format(tag="'v1'"))
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'shared.events', start_offset := -2, "
                           "transform := 'shared.to_events(pipeline_kafka.message[])')", (topic,)).fetchone()[0]
    produce(topic, ["1"])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM shared.events") == 1, timeout=60, what="the first row")
    assert query(db, "SELECT transform, transform_oid = 'shared.to_events(pipeline_kafka.message[])'::regprocedure, "
                     "transform_owner::text FROM pipeline_kafka.consumers WHERE id = %s", (cid,)) == [
        ("shared.to_events(pipeline_kafka.message[])", True, owner)]
    with pg_connect(db, user=owner) as conn:
        conn.execute("DROP FUNCTION shared.to_events(pipeline_kafka.message[])")
        conn.execute(TRANSFORM.format(tag="'v2'"))
    produce(topic, ["2"])
    wait_until(lambda: scalar(db, "SELECT count(*) FROM shared.events") == 2, timeout=60, what="the second row")
    assert query(db, "SELECT id, tag FROM shared.events ORDER BY id") == [(1, "v1"), (2, "v2")]
    assert scalar(db, "SELECT transform_oid = 'shared.to_events(pipeline_kafka.message[])'::regprocedure "
                      "FROM pipeline_kafka.consumers WHERE id = %s", (cid,)) is True
    assert _consumer(db, cid)["enabled"]

    with pg_connect(db, user=owner) as conn:
        conn.execute("DROP FUNCTION shared.to_events(pipeline_kafka.message[])")
    produce(topic, ["3"])
    c = wait_until(lambda: _stopped(db, cid), timeout=60, what="the consumer to stop")
    assert f"(owner {owner}) was dropped" in c["last_error"] and "42883" in c["last_error"], c
    assert scalar(db, "SELECT count(*) FROM shared.events") == 2


@pytest.mark.timeout(120)
def test_update_pins_existing_transforms(topic_factory):
    """A database created at 0.5.0 with a transform consumer and a dead letter: ALTER EXTENSION
    UPDATE pins the function (oid and owner) found by the stored signature, and the consumer runs
    with it; the dead letter belongs to the consumer's owner (19.10)."""
    topic = topic_factory(1)
    with pihelpers.fresh_db(extension=False) as db:
        with pg_connect(db) as conn:
            conn.execute("CREATE EXTENSION pipeline_ingest VERSION '0.5.0'")
            conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
            conn.execute("CREATE SCHEMA shared")
            conn.execute("CREATE TABLE shared.events (id int, tag text)")
            conn.execute(TRANSFORM.format(tag="'v1'"))
            cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'shared.events', start_offset := -2, "
                               "transform := 'shared.to_events(pipeline_kafka.message[])')", (topic,)).fetchone()[0]
            conn.execute("INSERT INTO pipeline_kafka.dead_letters (consumer_id, topic, partition, \"offset\", error, sqlstate) "
                         "VALUES (%s, %s, 0, 0, 'bad', '22P02')", (cid, topic))
        with pg_connect(db) as conn:
            conn.execute("ALTER EXTENSION pipeline_ingest UPDATE")
        assert query(db, "SELECT transform_oid = 'shared.to_events(pipeline_kafka.message[])'::regprocedure, "
                         "transform_owner::text FROM pipeline_kafka.consumers WHERE id = %s", (cid,)) == [(True, "postgres")]
        assert query(db, "SELECT owner::text FROM pipeline_kafka.dead_letters") == [("postgres",)]
        produce(topic, ["1", "not a number"])
        wait_until(lambda: scalar(db, "SELECT count(*) FROM pipeline_kafka.dead_letters") == 2, timeout=60,
                   what="the messages after the update")
        assert query(db, "SELECT id, tag FROM shared.events") == [(1, "v1")]
        assert query(db, "SELECT owner::text, count(*) FROM pipeline_kafka.dead_letters GROUP BY 1") == [("postgres", 2)]
        with pg_connect(db) as conn:
            conn.execute("SELECT pipeline_kafka.consume_drop(%s, 'shared.events')", (topic,))


# --- item 10 -----------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_taking_over_a_consumer_does_not_hand_over_its_dead_letters_or_last_error(fresh_db, topic_factory, roles):
    """A victim's consumer has a dead letter and a last_error quoting message contents; its table
    is dropped; an attacker with CREATE on the schema creates it again and takes the consumer over
    with consume_begin. The attacker sees none of the victim's dead letters and cannot delete
    them, and last_error is not the victim's; the victim still sees (and may delete) its dead
    letter. Dead letters written after the takeover are the attacker's."""
    db = fresh_db
    topic = topic_factory(1)
    victim, attacker = roles("pi_vic"), roles("pi_att")
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute("CREATE SCHEMA shared")
        conn.execute(f"GRANT USAGE, CREATE ON SCHEMA shared TO {victim}, {attacker}")
    with pg_connect(db, user=victim) as conn:
        conn.execute("CREATE TABLE shared.events (id int, v text)")
        cid = conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'shared.events', format := 'csv', start_offset := -2)",
                           (topic,)).fetchone()[0]
    produce(topic, ["1,ok", "victim-secret-1,x"])
    wait_until(lambda: len(_letters(db)) == 1, timeout=60, what="the victim's dead letter")
    # stop on the next bad message: last_error quotes it
    with pg_connect(db, user=victim) as conn:
        conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'shared.events', format := 'csv', on_error := 'stop')", (topic,))
    produce(topic, ["victim-secret-2,x"])
    c = wait_until(lambda: _stopped(db, cid), timeout=60, what="the consumer to stop on the bad message")
    assert "victim-secret-2" in c["last_error"], c
    with pg_connect(db, user=victim) as conn:
        conn.execute("DROP TABLE shared.events")
    with pg_connect(db, user=attacker) as conn:
        conn.execute("CREATE TABLE shared.events (id int, v text)")
        assert conn.execute("SELECT pipeline_kafka.consume_begin(%s, 'shared.events', format := 'csv')",
                            (topic,)).fetchone()[0] == cid
        # what the attacker sees of the consumer it now owns
        row = conn.execute("SELECT owner::text, coalesce(last_error, '') FROM pipeline_kafka.consumers WHERE id = %s",
                           (cid,)).fetchone()
        assert row[0] == attacker and "victim-secret" not in row[1], row
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.dead_letters").fetchone()[0] == 0
        assert conn.execute("DELETE FROM pipeline_kafka.dead_letters WHERE consumer_id = %s", (cid,)).rowcount == 0
    assert set(_letters(db)) == {"victim-secret-1,x"}
    assert set(_letters(db, user=victim)) == {"victim-secret-1,x"}
    # Dead letters written after the takeover (the held-back message, a new one) are the attacker's.
    produce(topic, ["attacker-bad,y"])
    wait_until(lambda: len(_letters(db, user=attacker)) == 2, timeout=60, what="the attacker's own dead letters")
    assert "attacker-bad,y" in _letters(db, user=attacker)
    assert set(_letters(db, user=victim)) == {"victim-secret-1,x"}
    assert query(db, "SELECT owner::text, count(*) FROM pipeline_kafka.dead_letters GROUP BY 1 ORDER BY 2") == [
        (victim, 1), (attacker, 2)]
