#!/usr/bin/env bash
# Rows/s into Citus (BENCHMARKS.md "Citus"), in one run on the local cluster of scripts/citus.sh:
#   local   a consumer on the coordinator into an ordinary table of the coordinator
#   dist    the same topic, a consumer on the coordinator into a hash-distributed table (32 shards)
#   spread  the same topic, the consumer spread over the three nodes (consume_spread: each node
#           reads 2 of the 6 partitions with one worker) into a hash-distributed table
# Each figure: rows / seconds from consume_begin's COMMIT until the table holds every row.
# Expects Kafka running and pipeline_ingest built for PostgreSQL 18 (the installed build: debug
# after `make build`). Environment: BENCH_ROWS (default 300000), BENCH_REPEAT (default 3).
set -euo pipefail
export PG_VERSION=18 PG_VERSIONS=18
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
DB=pipeline_citus_bench
bash scripts/citus.sh start >/dev/null
port() { bash scripts/citus.sh ports | awk -v n="$1" '$1 == n { print $2 }'; }
for node in coord w1 w2; do
  PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$(port "$node")" -U postgres -d postgres \
    -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
done
bash scripts/citus.sh createdb "$DB" >/dev/null
"$PI_VENV/bin/python" - "$KAFKA_BOOTSTRAP" "$DB" "$(port coord)" "$(port w1)" "$(port w2)" \
  "${BENCH_ROWS:-300000}" "${BENCH_REPEAT:-3}" <<'PY'
import statistics, sys, time, uuid
import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, db, ports, n, repeat = sys.argv[1], sys.argv[2], sys.argv[3:6], int(sys.argv[6]), int(sys.argv[7])
nodes = dict(zip(("coord", "w1", "w2"), map(int, ports)))
run = uuid.uuid4().hex[:8]
admin = AdminClient({"bootstrap.servers": bootstrap})
all_topic = f"cb_all_{run}"
for f in admin.create_topics([NewTopic(all_topic, 6, 1)], operation_timeout=30).values():
    f.result(30)
p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000})
def send(topic, i):
    while True:
        try:
            p.produce(topic, f"{i % 100000},{i % 10000}.25,2026-12-07 12:00:00+00")
            return
        except BufferError:
            p.poll(0.1)
for i in range(n):
    send(all_topic, i)
assert p.flush(120) == 0

def conn(node):
    return psycopg.connect(host="127.0.0.1", port=nodes[node], user="postgres", dbname=db, autocommit=True)

c = conn("coord")
c.execute("CREATE EXTENSION pipeline_ingest")
for node in nodes:
    with conn(node) as w:
        w.execute("SELECT pipeline_kafka.add_broker(%s)", (bootstrap,))

def timed(table, spread, expect):
    """The consumer begins (on every node, spread), wait until `table` holds `expect` rows."""
    nodes_used = list(nodes) if spread else ["coord"]
    t0 = time.monotonic()
    for node in nodes_used:
        with conn(node) as w:
            if spread:
                w.execute("SELECT pipeline_kafka.consume_spread(%s, %s) FROM (SELECT pipeline_kafka.consume_begin("
                          "%s, %s, format := 'csv', start_offset := -2, batchsize := 10000) OFFSET 0) b",
                          (all_topic, table, all_topic, table))
            else:
                w.execute("SELECT pipeline_kafka.consume_begin(%s, %s, format := 'csv', start_offset := -2, "
                          "parallelism := 2, batchsize := 10000)", (all_topic, table))
    while c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] < expect:
        if time.monotonic() - t0 > 900:
            sys.exit(f"{table}: rows did not arrive")
        time.sleep(0.2)
    secs = time.monotonic() - t0
    for node in nodes_used:
        with conn(node) as w:
            w.execute("SELECT pipeline_kafka.consume_end(%s, %s)", (all_topic, table))
    return secs

results = {"local": [], "dist": [], "spread": []}
for r in range(repeat):
    for kind in results:
        table = f"{kind}_{r}"
        c.execute(f"CREATE TABLE {table} (user_id bigint, amount numeric, created timestamptz)")
        if kind != "local":
            c.execute("SELECT create_distributed_table(%s, 'user_id')", (table,))
        secs = timed(table, kind == "spread", n)
        results[kind].append(secs)
        if kind != "local":
            assert c.execute("SELECT pg_relation_size(%s)", (table,)).fetchone()[0] == 0
        print(f"run {r + 1}: {kind:6s} {n} rows in {secs:6.2f} s = {n / secs:9,.0f} rows/s", flush=True)
print()
print("| target | consumers | rows/s, median of %d (min-max) |" % repeat)
print("|---|---|---|")
labels = {"local": ("ordinary table on the coordinator", "1 on the coordinator, 2 workers"),
          "dist": ("hash-distributed table, 32 shards", "1 on the coordinator, 2 workers"),
          "spread": ("hash-distributed table, 32 shards", "spread: 1 worker on each of the 3 nodes")}
for kind, secs in results.items():
    print(f"| {labels[kind][0]} | {labels[kind][1]} | {n / statistics.median(secs):,.0f} "
          f"({n / max(secs):,.0f}-{n / min(secs):,.0f}) |")
PY
for node in coord w1 w2; do  # the run's tables go with its database (disk)
  PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -qAt -h 127.0.0.1 -p "$(port "$node")" -U postgres -d postgres \
    -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
done
