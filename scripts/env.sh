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

# Another PostgreSQL 15 installation can be used by setting PG_CONFIG (PG_BIN follows it).
export PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
export PG_BIN="${PG_BIN:-$("$PG_CONFIG" --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}"

export PGHOST=127.0.0.1
export PGPORT=$((28815 + _pi_off))
export PGUSER=postgres
export PIPELINE_PGDATA="$PI_RUN/pg/data"

export KAFKA_BOOTSTRAP=127.0.0.1:$((29092 + _pi_off))
export KAFKA_CONTROLLER=127.0.0.1:$((29093 + _pi_off))
# A SASL_PLAINTEXT (PLAIN) listener beside the plain one, with a local test account.
export KAFKA_SASL_BOOTSTRAP=127.0.0.1:$((29094 + _pi_off))
export KAFKA_SASL_USER=pipeline
export KAFKA_SASL_PASSWORD=pipeline-secret
export KAFKA_LIBS="$PI_ROOT/tests/kafka/target/kafka-libs"
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
