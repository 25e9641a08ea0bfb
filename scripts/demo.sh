#!/usr/bin/env bash
# Demo (placeholder, to be extended): database pipeline_demo with the extension, brokers listed.
# Expects the services to be running (make demo starts them).
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
psql_pg() { "$PG_BIN/psql" -X -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres "$@"; }

if [ "$(psql_pg -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'pipeline_demo'")" != 1 ]; then
  psql_pg -d postgres -qc 'CREATE DATABASE pipeline_demo'
fi
PGOPTIONS='-c client_min_messages=warning' psql_pg -d pipeline_demo -qc 'CREATE EXTENSION IF NOT EXISTS pipeline_ingest'
psql_pg -d pipeline_demo -c 'SELECT * FROM pipeline_kafka.brokers'
