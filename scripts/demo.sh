#!/usr/bin/env bash
# The demo (make demo): database pipeline_demo with the extension, the local broker and Kinesis
# endpoint registered, two topics filled by the extension's own producer (produce_message and an
# emit_tuple trigger, sent only at COMMIT) and ingested back by consumers (csv and json), a 2-shard
# Kinesis stream (kinesalite) of json records ingested by a Kinesis consumer, then the catalog,
# the consumers' progress and samples of the rows printed. Expects the services running.
# Idempotent: rerunning recreates the demo database.
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
psql_pg() { PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres "$@"; }
N=1000

pi_log "demo: (re)creating database pipeline_demo"
psql_pg -d postgres -qc 'DROP DATABASE IF EXISTS pipeline_demo WITH (FORCE)' -c 'CREATE DATABASE pipeline_demo'

pi_log "demo: (re)creating topics demo_charges (csv, 4 partitions) and demo_orders (json, 2 partitions)"
"$PI_VENV/bin/python" - "$KAFKA_BOOTSTRAP" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
topics = {"demo_charges": 4, "demo_orders": 2}
existing = a.list_topics(timeout=10).topics
gone = [t for t in topics if t in existing]
if gone:
    for f in a.delete_topics(gone, operation_timeout=30).values():
        f.result(30)
    deadline = time.time() + 30
    while any(t in a.list_topics(timeout=10).topics for t in gone) and time.time() < deadline:
        time.sleep(0.2)
for t, f in a.create_topics([NewTopic(t, p, 1) for t, p in topics.items()], operation_timeout=30).items():
    f.result(30)
PY

pi_log "demo: (re)creating Kinesis stream demo_events (2 shards) with $N json records"
"$PI_VENV/bin/python" - "$KINESIS_ENDPOINT" "$AWS_REGION" "$N" <<'PY'
import json, sys, time
import boto3
k = boto3.client("kinesis", endpoint_url=sys.argv[1], region_name=sys.argv[2])
n = int(sys.argv[3])
def status():
    try:
        return k.describe_stream_summary(StreamName="demo_events")["StreamDescriptionSummary"]["StreamStatus"]
    except k.exceptions.ResourceNotFoundException:
        return None
if status() is not None:
    k.delete_stream(StreamName="demo_events")
    deadline = time.time() + 30
    while status() is not None and time.time() < deadline:
        time.sleep(0.2)
k.create_stream(StreamName="demo_events", ShardCount=2)
deadline = time.time() + 30
while status() != "ACTIVE":
    if time.time() > deadline:
        sys.exit("stream demo_events did not become ACTIVE")
    time.sleep(0.2)
for lo in range(0, n, 500):
    recs = [{"PartitionKey": f"device-{i % 20}",
             "Data": json.dumps({"event_id": i + 1, "device": f"device-{i % 20}",
                                 "reading": round(20 + (i * 37 % 100) / 10, 1)}).encode()}
            for i in range(lo, min(n, lo + 500))]
    r = k.put_records(StreamName="demo_events", Records=recs)
    if r.get("FailedRecordCount"):
        sys.exit(f"PutRecords refused {r['FailedRecordCount']} records")
PY

psql_pg -d pipeline_demo -q <<SQL
CREATE EXTENSION pipeline_ingest;
SELECT pipeline_kafka.add_broker('$KAFKA_BOOTSTRAP');
SELECT pipeline_kinesis.add_endpoint('local', '$AWS_REGION', NULL, '$KINESIS_ENDPOINT');

-- Targets: csv lines fill the listed columns of charges (ingested_at takes its default); json
-- objects fill orders by name.
CREATE TABLE charges (user_id bigint, amount numeric(10,2), created timestamptz, ingested_at timestamptz DEFAULT now());
CREATE TABLE orders (order_id int, customer text, items jsonb, total numeric);
CREATE TABLE events (event_id int, device text, reading numeric, ingested_at timestamptz DEFAULT now());

-- Consumers start at the beginning of each partition.
SELECT pipeline_kafka.consume_begin('demo_charges', 'charges', format := 'csv', start_offset := -2, parallelism := 2,
                                    columns := ARRAY['user_id', 'amount', 'created']);
SELECT pipeline_kafka.consume_begin('demo_orders', 'orders', format := 'json', start_offset := -2);
-- The Kinesis stream is read from its beginning (TRIM_HORIZON), one worker for both shards.
SELECT pipeline_kinesis.consume_begin('local', 'demo_events', 'events', format := 'json', start_offset := -2);

-- Fill demo_charges with produce_message (csv lines), in one transaction.
SELECT count(pipeline_kafka.produce_message('demo_charges',
         convert_to(format('%s,%s,%s', i % 50, (i * 7 % 10000) / 100.0, now() - i * interval '1 minute'), 'UTF8'),
         key := convert_to((i % 50)::text, 'UTF8')))
FROM generate_series(1, $N) AS i;

-- Fill demo_orders through an emit_tuple trigger on a source table.
CREATE TABLE order_source (order_id int PRIMARY KEY, customer text, items jsonb, total numeric);
CREATE TRIGGER order_source_to_kafka AFTER INSERT OR UPDATE ON order_source
    FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('demo_orders', '-1', 'order_id');
INSERT INTO order_source
SELECT i, 'customer ' || (i % 7), jsonb_build_array(jsonb_build_object('sku', 'A' || i, 'qty', i % 3 + 1)), i * 1.5
FROM generate_series(1, $N) AS i;
SQL

ROWS_SQL="SELECT (SELECT count(*) FROM charges) + (SELECT count(*) FROM orders) + (SELECT count(*) FROM events)"
pi_log "demo: waiting for the rows to come back through Kafka and in from Kinesis"
for _ in $(seq 1 120); do
  got="$(psql_pg -d pipeline_demo -tAc "$ROWS_SQL")"
  [ "$got" -ge $((3 * N)) ] && break
  sleep 0.5
done

psql_pg -d pipeline_demo <<'SQL'
\echo '== pipeline_kafka.brokers'
SELECT * FROM pipeline_kafka.brokers;
\echo '== pipeline_kinesis.endpoints'
SELECT * FROM pipeline_kinesis.endpoints;
\echo '== pipeline_kafka.consumers'
SELECT id, topic, relation, owner, format, batchsize, parallelism, enabled, last_error FROM pipeline_kafka.consumers ORDER BY id;
\echo '== pipeline_kinesis.consumer_status (one row per shard)'
SELECT consumer_id, stream, relation, state, shard_id, shard_state,
       '...' || right(last_sequence_number, 10) AS last_sequence_number, records, rows, last_error
FROM pipeline_kinesis.consumer_status ORDER BY shard_id;
\echo '== next offset per partition'
SELECT c.topic, o.partition, o.offset FROM pipeline_kafka.offsets o JOIN pipeline_kafka.consumers c ON c.id = o.consumer_id ORDER BY 1, 2;
\echo '== workers'
SELECT backend_type, count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pipeline%' GROUP BY 1 ORDER BY 1;
\echo '== outbox (messages not yet delivered)'
SELECT * FROM pipeline_kafka.outbox_status;
\echo '== ingested rows'
SELECT 'charges' AS "table", count(*) AS rows, count(DISTINCT (user_id, amount, created)) AS distinct_rows FROM charges
UNION ALL SELECT 'orders', count(*), count(DISTINCT order_id) FROM orders
UNION ALL SELECT 'events', count(*), count(DISTINCT event_id) FROM events;
SELECT user_id, amount, created, ingested_at FROM charges ORDER BY created DESC LIMIT 3;
SELECT order_id, customer, items, total FROM orders ORDER BY order_id LIMIT 3;
SELECT event_id, device, reading, ingested_at FROM events ORDER BY event_id LIMIT 3;
SQL
got="$(psql_pg -d pipeline_demo -tAc "$ROWS_SQL")"
if [ "$got" -ne $((3 * N)) ]; then
  pi_die "demo: expected $((3 * N)) rows, found $got"
fi
pi_log "demo: done. psql -h $PGHOST -p $PGPORT -U postgres pipeline_demo   (make stop stops the services)"
