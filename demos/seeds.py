"""The four seed scenarios (../shared/seeds) as runnable demos: `make demo-<name>` runs one against the
project's services (PostgreSQL with the extension preloaded, the local Kafka broker), and
tests/e2e/test_seed_demos.py runs the same functions with assertions on what they return.

  memgraph      Memgraph's Kafka streams: messages "1" and "1 2" become rows of `nodes` and `edges`
                through a transform; the stream is previewed first (Memgraph's TEST STREAM), started,
                shown in the status view and stopped.
  moviefriends  Neo4j's "update 1M nodes with Kafka": 1M `userId,amount,timestamp` charges, one
                daily_charge row per user kept by upsert; a second wave for the same users updates
                rather than duplicates. Prints the time each wave took.
  kstreams      Kafka Streams interactive queries: a compacted `customer` topic upserted into a table
                (tombstones delete), an `order` topic appended, and a view of order counts per
                customer (left join) queried right after customers are updated and deleted.
  pathway       Pathway's Kafka connectors: csv values (a header message first), a running sum kept by
                a transform, each new sum written back to a topic as JSON by emit_tuple, only for
                committed transactions; the reader of the output topic sees each sum once.

Usage: python demos/seeds.py NAME [--users N]   (environment from scripts/env.sh)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any, Callable, Iterable, Optional

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:29092")

Log = Callable[[str], None]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def connect(db: str) -> psycopg.Connection:
    return psycopg.connect(dbname=db, host=os.environ.get("PGHOST", "127.0.0.1"),
                           port=int(os.environ.get("PGPORT", "28815")), user=os.environ.get("PGUSER", "postgres"),
                           autocommit=True)


def rows(db: str, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
    with connect(db) as c:
        return c.execute(sql, tuple(params)).fetchall()


def one(db: str, sql: str, params: Iterable[Any] = ()) -> Any:
    r = rows(db, sql, params)
    return r[0][0] if r else None


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def recreate_topic(name: str, partitions: int = 1, config: Optional[dict] = None) -> None:
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    if name in admin.list_topics(timeout=10).topics:
        for f in admin.delete_topics([name], operation_timeout=30).values():
            f.result(30)
        wait_for(f"topic {name} to go", lambda: name not in admin.list_topics(timeout=10).topics, 30)
    for f in admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=30).values():
        f.result(30)


def produce(topic: str, messages: Iterable[tuple[Optional[bytes], Optional[bytes]]]) -> int:
    """Sends (key, value) pairs in order to partition 0 and waits until all are acknowledged."""
    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 20, "queue.buffering.max.messages": 500000,
                  "enable.idempotence": True})
    n = 0
    for key, value in messages:
        while True:
            try:
                p.produce(topic, value=value, key=key, partition=0)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 10000 == 0:
            p.poll(0)
    if p.flush(60) != 0:
        raise RuntimeError(f"{topic}: not every message was acknowledged")
    return n


def read_topic(topic: str, expect: int, timeout: float = 30.0) -> list[bytes]:
    """Every value of partition 0 from its beginning, waiting until at least `expect` arrived."""
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"demo-reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < expect and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                out.append(m.value())
        # Anything beyond what was expected (a duplicate would show here).
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                out.append(m.value())
    finally:
        c.close()
    return out


def setup_database(db: str) -> None:
    """(Re)creates `db` with the extension and the local broker."""
    with connect("postgres") as c:
        c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{db}"')
    with connect(db) as c:
        c.execute("CREATE EXTENSION pipeline_ingest")
        c.execute("SELECT pipeline_kafka.add_broker(%s)", (BOOTSTRAP,))


# ---------------------------------------------------------------------------------------------
# memgraph

MEMGRAPH_SQL = """
CREATE TABLE nodes (id text PRIMARY KEY);
CREATE TABLE edges (from_id text NOT NULL, to_id text NOT NULL);
-- Memgraph's transform script, in SQL: a message with one number creates a node, with two an edge.
CREATE FUNCTION graph_stream(batch pipeline_kafka.message[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m pipeline_kafka.message;
    ids text[];
BEGIN
    FOREACH m IN ARRAY batch LOOP
        ids := regexp_split_to_array(btrim(convert_from(m.value, 'UTF8')), '\\s+');
        IF cardinality(ids) = 1 THEN
            INSERT INTO nodes VALUES (ids[1]) ON CONFLICT DO NOTHING;
        ELSIF cardinality(ids) = 2 THEN
            INSERT INTO edges VALUES (ids[1], ids[2]);
        ELSE
            RAISE EXCEPTION 'a message is "id" or "from_id to_id", not %', convert_from(m.value, 'UTF8')
                USING ERRCODE = '22P02';
        END IF;
    END LOOP;
END $$;
"""


def memgraph(db: str, topic: str, log: Log = _log) -> dict:
    with connect(db) as c:
        c.execute(MEMGRAPH_SQL)
    recreate_topic(topic)
    produce(topic, [(None, b"1"), (None, b"1 2"), (None, b"2")])
    out: dict[str, Any] = {}
    log("TEST STREAM: pipeline_kafka.preview shows what the transform would do, writing nothing")
    out["preview"] = rows(db, "SELECT \"partition\", \"offset\", row, error, sqlstate FROM pipeline_kafka.preview("
                              "%s, 'nodes', transform := 'graph_stream(pipeline_kafka.message[])', \"limit\" := 10)",
                          (topic,))
    for r in out["preview"]:
        log(f"  preview: {r}")
    out["rows_after_preview"] = one(db, "SELECT (SELECT count(*) FROM nodes) + (SELECT count(*) FROM edges)")
    log("START STREAM: consume_begin with the transform")
    out["consumer_id"] = one(db, "SELECT pipeline_kafka.consume_begin(%s, 'nodes', start_offset := -2, "
                                 "transform := 'graph_stream(pipeline_kafka.message[])')", (topic,))
    wait_for("3 messages", lambda: one(db, "SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets "
                                           "WHERE consumer_id = %s", (out["consumer_id"],)) == 3, 60)
    out["status"] = rows(db, "SELECT topic, relation::text, state, messages FROM pipeline_kafka.consumer_status "
                             "WHERE consumer_id = %s", (out["consumer_id"],))
    log(f"SHOW STREAMS: {out['status']}")
    out["nodes"] = [r[0] for r in rows(db, "SELECT id FROM nodes ORDER BY id")]
    out["edges"] = rows(db, "SELECT from_id, to_id FROM edges ORDER BY 1, 2")
    log(f"nodes {out['nodes']}, edges {out['edges']}")
    log("STOP STREAM: consume_end")
    with connect(db) as c:
        c.execute("SELECT pipeline_kafka.consume_end(%s, 'nodes')", (topic,))
    out["state_after_stop"] = one(db, "SELECT state FROM pipeline_kafka.consumer_status WHERE consumer_id = %s",
                                  (out["consumer_id"],))
    log(f"after STOP STREAM: {out['state_after_stop']}")
    return out


# ---------------------------------------------------------------------------------------------
# moviefriends

def moviefriends(db: str, topic: str, users: int = 1_000_000, log: Log = _log) -> dict:
    first = 1_000_000  # the seed's user ids start at 1,000,000
    with connect(db) as c:
        c.execute("CREATE TABLE users (user_id bigint PRIMARY KEY)")
        c.execute("INSERT INTO users SELECT g FROM generate_series(%s::bigint, %s::bigint) g", (first, first + users - 1))
        # One DailyCharge per user (the seed's MERGE): user_id is the key of the upsert.
        c.execute("CREATE TABLE daily_charge (user_id bigint PRIMARY KEY REFERENCES users, amount numeric(10,2) NOT NULL, "
                  "charged_at double precision NOT NULL)")
    recreate_topic(topic)
    out: dict[str, Any] = {"waves": []}
    with connect(db) as c:
        out["consumer_id"] = c.execute(
            "SELECT pipeline_kafka.consume_begin(%s, 'daily_charge', format := 'csv', start_offset := -2, "
            "batchsize := 50000, mode := 'upsert')", (topic,)).fetchone()[0]
    total = 0
    for wave in (1, 2):
        # userId,amount,timestamp (the seed's message), amounts differing per wave
        t0 = time.monotonic()
        now = time.time()
        n = produce(topic, ((None, f"{first + i},{(i * 7 + wave * 13) % 5000 / 100:.2f},{now + i / 1e6:.6f}".encode())
                            for i in range(users)))
        produced = time.monotonic() - t0
        total += n
        wait_for(f"wave {wave} committed", lambda: one(db, "SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets "
                                                           "WHERE consumer_id = %s", (out["consumer_id"],)) == total,
                 max(120, users / 2000))
        took = time.monotonic() - t0
        count, amount_ok = rows(db, "SELECT count(*), count(*) FILTER (WHERE amount = "
                                    "round((((user_id - %s) * 7 + %s) %% 5000) / 100.0, 2)) FROM daily_charge",
                                (first, wave * 13))[0]
        out["waves"].append({"wave": wave, "messages": n, "produce_s": produced, "total_s": took, "rows": count,
                             "rows_with_this_waves_amount": amount_ok})
        log(f"wave {wave}: {n} charges produced in {produced:.1f} s, all committed {took:.1f} s after the first was sent "
            f"({n / took:,.0f} msg/s); daily_charge has {count} rows, {amount_ok} with this wave's amount")
    return out


# ---------------------------------------------------------------------------------------------
# kstreams

KSTREAMS_SQL = """
CREATE TABLE customers (id text PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (customer_id text, food text NOT NULL, "offset" bigint PRIMARY KEY);
-- The Kafka Streams topology: orders LEFT JOIN customers, grouped by the order's key, counted.
CREATE VIEW order_counts AS
    SELECT o.customer_id, c.name, count(*) AS orders
    FROM orders o LEFT JOIN customers c ON c.id = o.customer_id
    GROUP BY o.customer_id, c.name;
"""


def kstreams(db: str, customer_topic: str, order_topic: str, log: Log = _log) -> dict:
    with connect(db) as c:
        c.execute(KSTREAMS_SQL)
    recreate_topic(customer_topic, config={"cleanup.policy": "compact"})
    recreate_topic(order_topic)
    with connect(db) as c:
        # customer: key = user id, value = user name; the key column comes from the message key.
        cid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 'customers', format := 'text', start_offset := -2, "
                        "columns := ARRAY['name'], metadata := '{\"key\": \"id\"}', mode := 'upsert')",
                        (customer_topic,)).fetchone()[0]
        oid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 'orders', format := 'text', start_offset := -2, "
                        "columns := ARRAY['food'], metadata := '{\"key\": \"customer_id\", \"offset\": \"offset\"}')",
                        (order_topic,)).fetchone()[0]
    out: dict[str, Any] = {}

    def committed(consumer: int, n: int) -> Callable[[], bool]:
        return lambda: one(db, "SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets WHERE consumer_id = %s",
                           (consumer,)) == n

    # The seed's data: 1--john ... 7--will; orders 1--spagety, 2--pizza, --pasta (no key).
    names = ["john", "adam", "daniel", "james", "jack", "mathew", "will"]
    produce(customer_topic, [(str(i + 1).encode(), n.encode()) for i, n in enumerate(names)])
    produce(order_topic, [(b"1", b"spagety"), (b"2", b"pizza"), (None, b"pasta"), (b"2", b"pasta")])
    wait_for("customers", committed(cid, 7), 60)
    wait_for("orders", committed(oid, 4), 60)
    counts = "SELECT customer_id, name, orders FROM order_counts ORDER BY customer_id NULLS LAST"
    out["before"] = rows(db, counts)
    log(f"order counts: {out['before']}")
    # Updates and deletes of customers: 2 renamed, 1 deleted by a tombstone, 1 and 8 written in one batch
    # after the delete (8 is new).
    produce(customer_topic, [(b"2", b"adam smith"), (b"1", None), (b"8", b"olivia")])
    wait_for("customer updates", committed(cid, 10), 60)
    out["after"] = rows(db, counts)
    out["customers"] = rows(db, "SELECT id, name FROM customers ORDER BY id")
    log(f"after renaming 2 and deleting 1: {out['after']}")
    log(f"customers: {out['customers']}")
    return out


# ---------------------------------------------------------------------------------------------
# pathway

PATHWAY_SQL = """
CREATE TABLE running_sum (id int PRIMARY KEY CHECK (id = 1), total bigint NOT NULL, messages bigint NOT NULL);
INSERT INTO running_sum VALUES (1, 0, 0);
-- Every new sum; the emit_tuple trigger sends each row as JSON to the output topic when the
-- transaction that wrote it commits.
CREATE TABLE sums (seq bigserial PRIMARY KEY, total bigint NOT NULL);
-- The transform: csv values with one column "value" (the header message and Pathway's *COMMIT*
-- markers are skipped: a batch is one transaction here), added to the running sum.
CREATE FUNCTION add_values(batch pipeline_kafka.message[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    added bigint;
    n bigint;
BEGIN
    SELECT coalesce(sum(v::bigint), 0), count(*) INTO added, n
    FROM (SELECT btrim(convert_from(m.value, 'UTF8')) AS v FROM unnest(batch) AS m) AS x
    WHERE v NOT IN ('value', '*COMMIT*');
    IF n > 0 THEN
        UPDATE running_sum SET total = total + added, messages = messages + n WHERE id = 1;
        INSERT INTO sums (total) SELECT total FROM running_sum WHERE id = 1;
    END IF;
END $$;
"""


def pathway(db: str, in_topic: str, out_topic: str, log: Log = _log) -> dict:
    with connect(db) as c:
        c.execute(PATHWAY_SQL)
        c.execute("CREATE TRIGGER sums_to_kafka AFTER INSERT ON sums FOR EACH ROW "
                  f"EXECUTE FUNCTION pipeline_kafka.emit_tuple('{out_topic}')")
    recreate_topic(in_topic)
    recreate_topic(out_topic)
    with connect(db) as c:
        cid = c.execute("SELECT pipeline_kafka.consume_begin(%s, 'running_sum', start_offset := -2, batchsize := 3, "
                        "transform := 'add_values(pipeline_kafka.message[])')", (in_topic,)).fetchone()[0]
    # The seed's generator: a header, then values 0..9 each followed by *COMMIT*.
    msgs = [(None, b"value")]
    for i in range(10):
        msgs += [(None, str(i).encode()), (None, b"*COMMIT*")]
    produce(in_topic, msgs)
    wait_for("every value", lambda: one(db, "SELECT coalesce(sum(\"offset\"), 0) FROM pipeline_kafka.offsets "
                                            "WHERE consumer_id = %s", (cid,)) == len(msgs), 60)
    out: dict[str, Any] = {"total": one(db, "SELECT total FROM running_sum"),
                           "sums": [r[0] for r in rows(db, "SELECT total FROM sums ORDER BY seq")]}
    wait_for("the sums to leave the outbox", lambda: one(db, "SELECT count(*) FROM pipeline_kafka.outbox") == 0, 60)
    out["sent"] = [json.loads(v) for v in read_topic(out_topic, len(out["sums"]))]
    log(f"running sum {out['total']}; sums written {out['sums']}")
    log(f"read back from {out_topic}: {out['sent']}")
    return out


# ---------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=["memgraph", "moviefriends", "kstreams", "pathway"])
    ap.add_argument("--users", type=int, default=1_000_000, help="moviefriends: users and charges per wave")
    a = ap.parse_args(argv)
    db = f"demo_{a.name}"
    _log(f"demo {a.name}: (re)creating database {db}")
    setup_database(db)
    if a.name == "memgraph":
        memgraph(db, "demo_memgraph")
    elif a.name == "moviefriends":
        moviefriends(db, "demo_moviefriends", users=a.users)
    elif a.name == "kstreams":
        kstreams(db, "demo_customer", "demo_order")
    else:
        pathway(db, "demo_pathway_values", "demo_pathway_sum")
    _log(f"demo {a.name}: done (psql -h $PGHOST -p $PGPORT -U postgres {db})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
