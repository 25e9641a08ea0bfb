"""Messages Kafka will never take must not block their topic (issue 19.9).

produce_message counts librdkafka's record overhead (up to 36 bytes besides key, value and
headers) against the producer's message.max.bytes and refuses a message over it at the call
(54000, no outbox row). A message under that limit but over its topic's max.message.bytes is
refused by the broker: the producer moves it to pipeline_kafka.outbox_dead_letters (54000, shown to
its producing role only) and the topic's later messages go out, in order.
"""
from __future__ import annotations

import psycopg
import pytest

from pihelpers import (KAFKA_BOOTSTRAP, consume_all, create_topic, delete_topic, launcher_naptime, pg_connect, query,
                       scalar, unique_name, wait_until)

# Both versions (bytea and text): an untyped literal message resolves to the text one.
PRODUCE_SIG = ("pipeline_kafka.produce_message(text, bytea, integer, bytea, jsonb, timestamptz), "
               "pipeline_kafka.produce_message(text, text, integer, text, jsonb, timestamptz)")


@pytest.fixture(scope="module", autouse=True)
def fast_launcher():
    with launcher_naptime(1):
        yield


@pytest.mark.timeout(60)
def test_a_message_over_the_producer_limit_with_its_overhead_is_refused_at_the_call(fresh_db, topic_factory):
    """1,000,000 bytes of value are within message.max.bytes (1,000,000) only without the
    record's overhead, which librdkafka counts: it would refuse the message forever."""
    topic = topic_factory(1)
    with pg_connect(fresh_db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        # one byte over: 36 bytes of record overhead, a header's name and value and 1 byte of
        # varint for each of their lengths
        for value, key, headers in [(b"v" * 1_000_000, None, None),
                                    (b"v" * (1_000_000 - 36 - 3 + 1), b"key", None),
                                    (b"v" * (1_000_000 - 36 - (4 + 3 + 2) + 1), None, '{"name": "val"}')]:
            with pytest.raises(psycopg.Error) as err:
                conn.execute("SELECT pipeline_kafka.produce_message(%s, %s, key := %s, headers := %s::jsonb)",
                             (topic, value, key, headers))
            assert err.value.sqlstate == "54000", err.value
            assert "exceeds the producer's limit of 1000000 bytes" in str(err.value), err.value
        assert scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0
        # the largest message that fits: 36 bytes of overhead + value = 1,000,000
        conn.execute("SELECT pipeline_kafka.produce_message(%s, %s)", (topic, b"v" * (1_000_000 - 36)))
    # it is delivered; nothing else was queued
    msgs = consume_all(topic, timeout=60, min_messages=1)
    assert [len(m["value"]) for m in msgs] == [1_000_000 - 36]
    wait_until(lambda: scalar(fresh_db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=30,
               what="outbox drained")


@pytest.fixture
def small_topic():
    """A one-partition topic whose max.message.bytes is 10,000 (the producer's limit stays 1,000,000)."""
    topic = unique_name("pi_topic_small")
    create_topic(topic, 1, config={"max.message.bytes": "10000"})
    yield topic
    delete_topic(topic)


@pytest.mark.timeout(180)
def test_a_message_the_broker_refuses_as_too_large_is_dead_lettered_and_the_topic_goes_on(pg_role, small_topic,
                                                                                          fresh_db):
    alice, bob = pg_role(), pg_role()
    topic = small_topic
    db = fresh_db
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute(f'GRANT EXECUTE ON FUNCTION {PRODUCE_SIG} TO "{alice}", "{bob}"')
        conn.execute(f'SET ROLE "{alice}"')
        # one transaction: the big message goes out in one record batch with the others
        with conn.transaction():
            conn.execute("SELECT pipeline_kafka.produce_message(%s, 'n1')", (topic,))
            big_id = conn.execute("SELECT pipeline_kafka.produce_message(%s, %s, key := 'big')",
                                  (topic, b"x" * 20_000)).fetchone()[0]
            conn.execute("SELECT pipeline_kafka.produce_message(%s, 'n2')", (topic,))
            conn.execute("SELECT pipeline_kafka.produce_message(%s, 'n3')", (topic,))
        # a big one alone in its batch, then another normal message
        alone_id = conn.execute("SELECT pipeline_kafka.produce_message(%s, %s)", (topic, b"y" * 12_000)).fetchone()[0]
        conn.execute("SELECT pipeline_kafka.produce_message(%s, 'n4')", (topic,))
        conn.execute("RESET ROLE")

    msgs = consume_all(topic, timeout=90, min_messages=4)
    assert [m["value"] for m in msgs] == [b"n1", b"n2", b"n3", b"n4"], msgs
    wait_until(lambda: scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=30, what="outbox drained")

    letters = query(db, 'SELECT id, topic, key, octet_length(value), sqlstate, produced_by::text, error '
                        'FROM pipeline_kafka.outbox_dead_letters ORDER BY id')
    assert [r[:6] for r in letters] == [(big_id, topic, b"big", 20_000, "54000", alice),
                                        (alone_id, topic, None, 12_000, "54000", alice)], letters
    assert all("too large" in r[6] for r in letters), letters
    # visible to the producing role, not to another plain role
    with pg_connect(db) as conn:
        conn.execute(f'SET ROLE "{alice}"')
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.outbox_dead_letters").fetchone()[0] == 2
        conn.execute(f'SET ROLE "{bob}"')
        assert conn.execute("SELECT count(*) FROM pipeline_kafka.outbox_dead_letters").fetchone()[0] == 0
        assert conn.execute("DELETE FROM pipeline_kafka.outbox_dead_letters").rowcount == 0
        conn.execute(f'SET ROLE "{alice}"')
        assert conn.execute("DELETE FROM pipeline_kafka.outbox_dead_letters WHERE id = %s", (alone_id,)).rowcount == 1
    assert scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox_dead_letters") == 1


@pytest.mark.timeout(120)
def test_a_message_the_producer_refuses_after_its_limit_was_lowered_is_dead_lettered(pg_role, fresh_db, topic_factory):
    """librdkafka's own refusal (MSG_SIZE_TOO_LARGE at produce time): the limit was checked at
    the call, then lowered before the producer sent the message. The emit_tuple trigger's message
    is shown to the table's owner."""
    owner = pg_role()
    topic = topic_factory(1)
    db = fresh_db
    with pg_connect(db) as conn:
        conn.execute("SELECT pipeline_kafka.add_broker(%s)", (KAFKA_BOOTSTRAP,))
        conn.execute(f"""
            CREATE TABLE t (id int PRIMARY KEY, v text);
            ALTER TABLE t OWNER TO "{owner}";
            CREATE TRIGGER to_kafka AFTER INSERT ON t FOR EACH ROW
                EXECUTE FUNCTION pipeline_kafka.emit_tuple('{topic}', '-1', 'id')""")
    with pg_connect(db) as producing, pg_connect(db) as admin:
        with producing.transaction():
            producing.execute("SELECT pipeline_kafka.produce_message(%s, 'before')", (topic,))
            producing.execute("INSERT INTO t VALUES (1, repeat('z', 5000))")
            with admin.transaction():
                admin.execute("SELECT pipeline_kafka.remove_broker(%s)", (KAFKA_BOOTSTRAP,))
                admin.execute("SELECT pipeline_kafka.add_broker(%s, '{\"message.max.bytes\": \"2000\"}')",
                              (KAFKA_BOOTSTRAP,))
            producing.execute("SELECT pipeline_kafka.produce_message(%s, 'after')", (topic,))
    msgs = consume_all(topic, timeout=60, min_messages=2)
    assert [m["value"] for m in msgs] == [b"before", b"after"], msgs
    wait_until(lambda: scalar(db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, timeout=30, what="outbox drained")
    letters = query(db, "SELECT key, sqlstate, produced_by::text, error FROM pipeline_kafka.outbox_dead_letters")
    assert [r[:3] for r in letters] == [(b"1", "54000", owner)], letters
    assert "message.max.bytes" in letters[0][3], letters
