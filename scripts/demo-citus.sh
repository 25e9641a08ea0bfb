#!/usr/bin/env bash
# The Citus demo (make demo-citus): a local Citus cluster (scripts/citus.sh: a coordinator and two
# workers on PostgreSQL 18, shared_preload_libraries = 'citus,pipeline_ingest'), database
# pipeline_citus_demo with a hash-distributed table `charges` (32 shards, by user_id) and a reference
# table `users`, two Kafka topics (csv) ingested into them through Citus by consumers on the
# coordinator; then where the rows are (citus_shards, and rows per node counted in the shard
# placements), that the coordinator's shell tables are empty, and the consumers' status.
# Expects Kafka running (make demo-citus starts it). Idempotent: rerunning recreates the database.
# Environment: DEMO_ROWS (default 20000 charges).
set -euo pipefail
export PG_VERSION=18 PG_VERSIONS=18
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
N="${DEMO_ROWS:-20000}"
DB=pipeline_citus_demo

[ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] ||
  pi_die "demo-citus: Citus is not installed in $("$PG_CONFIG" --pkglibdir) (scripts/setup.sh builds it from ../shared/vendor)"
bash scripts/citus.sh start
port() { bash scripts/citus.sh ports | awk -v n="$1" '$1 == n { print $2 }'; }
psql_node() { # node args...
  local node="$1"; shift
  PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(port "$node")" -U postgres "$@"
}

pi_log "demo-citus: (re)creating database $DB on the coordinator and both workers"
for node in coord w1 w2; do
  psql_node "$node" -d postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
done
bash scripts/citus.sh createdb "$DB"

pi_log "demo-citus: (re)creating topics demo_citus_charges (4 partitions, $N csv rows) and demo_citus_users"
"$PI_VENV/bin/python" - "$KAFKA_BOOTSTRAP" "$N" <<'PY'
import sys, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, n = sys.argv[1], int(sys.argv[2])
a = AdminClient({"bootstrap.servers": bootstrap})
topics = {"demo_citus_charges": 4, "demo_citus_users": 1}
existing = a.list_topics(timeout=10).topics
gone = [t for t in topics if t in existing]
if gone:
    for f in a.delete_topics(gone, operation_timeout=30).values():
        f.result(30)
    deadline = time.time() + 30
    while any(t in a.list_topics(timeout=10).topics for t in gone) and time.time() < deadline:
        time.sleep(0.2)
for f in a.create_topics([NewTopic(t, p, 1) for t, p in topics.items()], operation_timeout=30).values():
    f.result(30)
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
for i in range(n):
    while True:
        try:
            p.produce("demo_citus_charges", f"{i % 1000},{(i * 37) % 10000 / 100:.2f},2026-12-07 12:00:00+00")
            break
        except BufferError:
            p.poll(0.1)
for u in range(1000):
    p.produce("demo_citus_users", f"{u},user {u}")
if p.flush(60) != 0:
    sys.exit("demo-citus: messages not delivered")
PY

pi_log "demo-citus: tables (charges hash-distributed by user_id, users a reference table) and consumers"
psql_node coord -d "$DB" -q <<SQL
CREATE EXTENSION pipeline_ingest;
SELECT pipeline_kafka.add_broker('$KAFKA_BOOTSTRAP');
CREATE TABLE charges (user_id bigint, amount numeric, created timestamptz);
SELECT create_distributed_table('charges', 'user_id');
CREATE TABLE users (user_id bigint PRIMARY KEY, name text);
SELECT create_reference_table('users');
SELECT pipeline_kafka.consume_begin('demo_citus_charges', 'charges', format := 'csv', start_offset := -2,
                                    parallelism := 2, batchsize := 5000);
SELECT pipeline_kafka.consume_begin('demo_citus_users', 'users', format := 'csv', start_offset := -2);
SQL

pi_log "demo-citus: waiting for $N charges and 1000 users"
deadline=$((SECONDS + 180))
until [ "$(psql_node coord -d "$DB" -qtAc "SELECT (SELECT count(*) FROM charges) = $N AND (SELECT count(*) FROM users) = 1000")" = t ]; do
  [ $SECONDS -lt $deadline ] || pi_die "demo-citus: rows did not arrive within 180 s (see pipeline_kafka.consumer_status)"
  sleep 0.5
done

psql_node coord -d "$DB" <<'SQL'
\echo '== where the rows are: shards per table and node (citus_shards)'
SELECT table_name, citus_table_type, nodeport, count(*) AS shards, pg_size_pretty(sum(shard_size)) AS size
FROM citus_shards GROUP BY 1, 2, 3 ORDER BY 1, 3;
\echo '== rows per node, counted in the shard placements themselves'
SELECT 'charges' AS table_name, nodeport, sum(result::bigint) AS rows
FROM run_command_on_placements('charges', 'SELECT count(*) FROM %s') GROUP BY 2
UNION ALL
SELECT 'users', nodeport, sum(result::bigint)
FROM run_command_on_placements('users', 'SELECT count(*) FROM %s') GROUP BY 2 ORDER BY 1, 2;
\echo '== the coordinator''s shell tables hold nothing (Citus never reads them)'
SELECT pg_relation_size('charges') AS charges_shell_bytes, pg_relation_size('users') AS users_shell_bytes;
\echo '== a join of the distributed and the reference table'
SELECT u.name, count(*) AS charges, sum(c.amount) AS total
FROM charges c JOIN users u USING (user_id) GROUP BY u.name ORDER BY total DESC LIMIT 3;
\echo '== the consumers'
SELECT consumer_id, relation, "partition", next_offset, rows, dead_letters, last_error
FROM pipeline_kafka.consumer_status ORDER BY consumer_id, "partition";
SQL
pi_log "demo-citus: done (the cluster keeps running: scripts/citus.sh stop)"
