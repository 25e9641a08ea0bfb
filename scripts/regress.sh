#!/usr/bin/env bash
# Runs the pg_regress suite (pg_regress/sql/*.sql vs pg_regress/expected/*.out) against the
# RUNNING local cluster (scripts/services.sh start pg). Output: $PI_RUN/regress.
#   scripts/regress.sh [test ...]     default: every pg_regress/sql/*.sql, sorted
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"

PG_REGRESS="$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress"
[ -x "$PG_REGRESS" ] || pi_die "pg_regress not found at $PG_REGRESS (install postgresql-server-dev-15)"

if [ $# -gt 0 ]; then
  tests=("$@")
else
  mapfile -t tests < <(find pg_regress/sql -maxdepth 1 -name '*.sql' -printf '%f\n' 2>/dev/null | sed 's/\.sql$//' | LC_ALL=C sort)
fi
if [ ${#tests[@]} -eq 0 ]; then
  pi_die "no pg_regress tests found in pg_regress/sql"
fi

"$PG_BIN/pg_isready" -q -h "$PGHOST" -p "$PGPORT" -U postgres \
  || pi_die "PostgreSQL is not running on $PGHOST:$PGPORT (scripts/services.sh start pg)"

# --use-existing: pg_regress neither drops nor creates the database, so start from a fresh
# one here (the tests themselves run CREATE EXTENSION).
PGOPTIONS="-c client_min_messages=warning" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres \
  -c "DROP DATABASE IF EXISTS pi_regress WITH (FORCE)" \
  -c "CREATE DATABASE pi_regress TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'" \
  -c "ALTER DATABASE pi_regress SET lc_messages TO 'C'" \
  -c "ALTER DATABASE pi_regress SET timezone TO 'UTC'" \
  -c "ALTER DATABASE pi_regress SET regress.kinesis_url TO '$KINESIS_ENDPOINT'" \
  >/dev/null || pi_die "could not (re)create database pi_regress"

# The Kinesis tests read from kinesalite (scripts/services.sh start kinesis) at
# current_setting('regress.kinesis_url'), a stream of 2 shards named pi_regress (kept between runs:
# kinesalite holds it until it stops).
"$PI_VENV/bin/python" - <<'PY' || pi_die "could not create Kinesis stream pi_regress at $KINESIS_ENDPOINT (scripts/services.sh start kinesis)"
import os, time
import boto3
k = boto3.client("kinesis", endpoint_url=os.environ["KINESIS_ENDPOINT"], region_name=os.environ["AWS_REGION"])
try:
    k.create_stream(StreamName="pi_regress", ShardCount=2)
except k.exceptions.ResourceInUseException:
    pass
deadline = time.monotonic() + 30
while k.describe_stream_summary(StreamName="pi_regress")["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
    if time.monotonic() > deadline:
        raise SystemExit("stream pi_regress did not become ACTIVE within 30 s")
    time.sleep(0.1)
PY

out="$PI_RUN/regress"
rm -rf "$out"; mkdir -p "$out"
pi_log "regress: ${#tests[@]} test(s): ${tests[*]}"
rc=0
"$PG_REGRESS" --use-existing --host="$PGHOST" --port="$PGPORT" --user=postgres \
  --bindir="$PG_BIN" --inputdir=pg_regress --outputdir="$out" --dbname=pi_regress \
  "${tests[@]}" || rc=$?
if [ $rc -ne 0 ]; then
  if [ -f "$out/regression.diffs" ]; then
    echo "===== $out/regression.diffs =====" >&2
    head -c 200000 "$out/regression.diffs" >&2
    echo "===== end of regression.diffs =====" >&2
  fi
  pi_log "regress: FAILED (exit $rc)"
  exit $rc
fi
pi_log "regress: all ${#tests[@]} test(s) passed"
