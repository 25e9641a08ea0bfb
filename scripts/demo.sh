#!/usr/bin/env bash
# The demo (make demo): database pipeline_demo with the extension, the local broker and Kinesis
# endpoint registered, two topics filled by the extension's own producer (produce_message and an
# emit_tuple trigger, sent only at COMMIT) and ingested back by consumers (csv and json), a 2-shard
# Kinesis stream (kinesalite) of json records ingested by a Kinesis consumer, then the catalog,
# the consumers' progress and samples of the rows printed; then an Avro topic through the schema
# registry (Apicurio): rows sent as Avro by an emit_tuple(..., 'avro') trigger, their schema
# registered from the table's row type, ingested back by a format 'avro' consumer that fetches the
# schema by the id in each message. Expects the services running (the registry too).
# Idempotent: rerunning recreates the demo database.
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
psql_pg() { PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres "$@"; }
N=1000

pi_log "demo: (re)creating database pipeline_demo"
psql_pg -d postgres -qc 'DROP DATABASE IF EXISTS pipeline_demo WITH (FORCE)' -c 'CREATE DATABASE pipeline_demo'

pi_log "demo: (re)creating topics demo_charges (csv, 4 partitions), demo_orders (json, 2 partitions), demo_readings_avro (Avro, 1)"
"$PI_VENV/bin/python" - "$KAFKA_BOOTSTRAP" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": sys.argv[1]})
topics = {"demo_charges": 4, "demo_orders": 2, "demo_readings_avro": 1}
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
# ---- Avro through the schema registry ------------------------------------------------------
# An emit_tuple trigger with the format 'avro' registers the schema derived from reading_source's
# row type under demo_readings_avro-value and sends each row framed with its id; a consumer with
# format 'avro' reads the topic back into readings, decoding each message with the writer's schema
# fetched from the registry by that id (once per id, never per message).
curl -sf -m 5 -o /dev/null "$SCHEMA_REGISTRY_URL/subjects" \
  || pi_die "demo: the schema registry does not answer at $SCHEMA_REGISTRY_URL (scripts/services.sh start registry)"
pi_log "demo: Avro: $N rows through emit_tuple(..., 'avro') and the schema registry, back with format 'avro'"
psql_pg -d pipeline_demo -q <<SQL
SELECT pipeline_kafka.add_schema_registry('$SCHEMA_REGISTRY_URL');
CREATE TABLE reading_source (reading_id bigint PRIMARY KEY, device text NOT NULL, reading numeric(6,2),
                             taken timestamptz NOT NULL, day date);
CREATE TRIGGER reading_source_to_kafka AFTER INSERT OR UPDATE ON reading_source
    FOR EACH ROW EXECUTE FUNCTION pipeline_kafka.emit_tuple('demo_readings_avro', '-1', 'reading_id', 'avro');
CREATE TABLE readings (reading_id bigint, device text, reading numeric(6,2), taken timestamptz, day date);
SELECT pipeline_kafka.consume_begin('demo_readings_avro', 'readings', format := 'avro', start_offset := -2);
INSERT INTO reading_source
SELECT i, 'device-' || (i % 20), round((20 + (i * 37 % 100) / 10.0)::numeric, 2),
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', date '2026-01-01' + i % 30
FROM generate_series(1, $N) AS i;
SQL
for _ in $(seq 1 120); do
  got="$(psql_pg -d pipeline_demo -tAc "SELECT count(*) FROM readings")"
  [ "$got" -ge "$N" ] && break
  sleep 0.5
done
psql_pg -d pipeline_demo <<'SQL'
\echo '== pipeline_kafka.schema_registries'
SELECT url FROM pipeline_kafka.schema_registries;
\echo '== the Avro consumer'
SELECT id, topic, relation, format, schema_registry, last_error FROM pipeline_kafka.consumers WHERE format = 'avro';
\echo '== readings (Avro, decoded with the registered schema): rows, and the same as the source?'
SELECT count(*) AS rows,
       count(*) = (SELECT count(*) FROM reading_source)
       AND NOT EXISTS (SELECT reading_id, device, reading, taken, day FROM reading_source
                       EXCEPT SELECT reading_id, device, reading, taken, day FROM readings) AS same_as_source
FROM readings;
SELECT * FROM readings ORDER BY reading_id LIMIT 3;
SQL
got="$(psql_pg -d pipeline_demo -tAc "SELECT count(*) FROM readings")"
if [ "$got" -ne "$N" ]; then
  pi_die "demo: expected $N Avro rows in readings, found $got"
fi
schema="$(curl -sf -m 5 "$SCHEMA_REGISTRY_URL/subjects/demo_readings_avro-value/versions/latest")"
pi_log "demo: the schema registered under demo_readings_avro-value: $schema"

pi_log "demo: done. psql -h $PGHOST -p $PGPORT -U postgres pipeline_demo   (make stop stops the services)"
