#!/usr/bin/env bash
# Installs everything pipeline_ingest needs to build and test. Idempotent; quick when done.
#   - Debian packages (PostgreSQL 15 + server headers, clang, ssl/sasl headers, ...)
#   - cargo-pgrx 0.18.1 and `cargo pgrx init --pg15` against Debian's pg_config
#   - Apache Kafka broker jars (Maven project in tests/kafka)
#   - kinesalite (npm project in tests/kinesis)
#   - Python venv $PI_VENV for the e2e tier (tests/e2e/requirements.txt)
# Each step can be skipped with PI_SKIP_<STEP>=1: APT, PGRX, KAFKA, KINESIS, VENV.
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

PGRX_VERSION=0.18.1
mkdir -p "$PI_CACHE" "$PI_RUN"

step() { pi_log "setup: $*"; }
timed() { # name cmd...
  local t0=$SECONDS name="$1"; shift
  "$@"
  step "$name done in $((SECONDS - t0))s"
}

# ------------------------------------------------------------------ apt
apt_step() {
  local pkgs=(postgresql-15 postgresql-server-dev-15 libclang-dev clang pkg-config cmake
              libssl-dev libsasl2-dev libcurl4-openssl-dev sudo build-essential curl ca-certificates git
              openjdk-17-jre-headless maven nodejs npm python3 python3-venv)
  local missing=() p
  for p in "${pkgs[@]}"; do
    # Tools that exist without the Debian package (e.g. a non-Debian node/java) count as present.
    case "$p" in
      nodejs) command -v node >/dev/null && continue ;;
      npm) command -v npm >/dev/null && continue ;;
      maven) command -v mvn >/dev/null && continue ;;
      openjdk-17-jre-headless) command -v java >/dev/null && continue ;;
      python3) command -v python3 >/dev/null && continue ;;
      python3-venv) python3 -c 'import venv, ensurepip' 2>/dev/null && continue ;;
      curl) command -v curl >/dev/null && continue ;;
      git) command -v git >/dev/null && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    step "apt: all packages present"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || pi_die "apt: missing packages (${missing[*]}) and not root"
  step "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The Debian postgresql package starts a default cluster on 5432; we do not use it.
  if command -v pg_lsclusters >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_ctlcluster 15 main stop 2>/dev/null || true
  fi
}

# ------------------------------------------------------------------ cargo-pgrx
pgrx_step() {
  command -v cargo >/dev/null || pi_die "cargo not found (install Rust via rustup first)"
  local waited=0
  while pgrep -f 'cargo install cargo-pgrx' >/dev/null 2>&1; do
    ((waited % 60 == 0)) && step "pgrx: another 'cargo install cargo-pgrx' is running; waiting (${waited}s)"
    sleep 5; waited=$((waited + 5))
    ((waited < 3600)) || pi_die "pgrx: waited an hour for a concurrent cargo install"
  done
  if cargo pgrx --version 2>/dev/null | grep -qF "$PGRX_VERSION"; then
    step "pgrx: cargo-pgrx $PGRX_VERSION present"
  else
    step "pgrx: cargo install cargo-pgrx $PGRX_VERSION (slow: several minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
  fi
  if [ -f "$HOME/.pgrx/config.toml" ] && grep -Eq '^[[:space:]]*pg15[[:space:]]*=' "$HOME/.pgrx/config.toml"; then
    step "pgrx: ~/.pgrx/config.toml has pg15"
  else
    step "pgrx: cargo pgrx init --pg15 $PG_CONFIG"
    cargo pgrx init --pg15 "$PG_CONFIG"
  fi
}

# ------------------------------------------------------------------ Kafka jars
kafka_step() {
  if ls "$PI_ROOT"/tests/kafka/target/kafka-libs/kafka_2.13-*.jar >/dev/null 2>&1; then
    step "kafka: broker jars present"
    return 0
  fi
  step "kafka: fetching broker jars with Maven"
  (cd "$PI_ROOT/tests/kafka" && mvn -q -B -Dstyle.color=never package) >"$PI_RUN/mvn-kafka.log" 2>&1 \
    || { tail -n 60 "$PI_RUN/mvn-kafka.log" >&2; pi_die "kafka: mvn package failed (log: $PI_RUN/mvn-kafka.log)"; }
  ls "$PI_ROOT"/tests/kafka/target/kafka-libs/kafka_2.13-*.jar >/dev/null 2>&1 \
    || pi_die "kafka: mvn package did not produce kafka_2.13-*.jar"
}

# ------------------------------------------------------------------ kinesalite
kinesis_step() {
  local dir="$PI_ROOT/tests/kinesis"
  if [ -d "$dir/node_modules/kinesalite" ] && node -e "require('$dir/node_modules/kinesalite')" 2>/dev/null; then
    step "kinesis: kinesalite present"
    return 0
  fi
  step "kinesis: npm install kinesalite"
  # kinesalite runs in memory (memdown); leveldown's native addon is never loaded, and
  # leveldown ships linux prebuilds in its npm tarball anyway, so no download/compile happens.
  # --ignore-scripts: skip node-gyp-build so nothing tries to build or fetch a binary.
  (cd "$dir" && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --ignore-scripts;
               else npm install --no-audit --no-fund --ignore-scripts; fi) >/dev/null
  node -e "require('$dir/node_modules/kinesalite')" || pi_die "kinesis: kinesalite does not load"
}

# ------------------------------------------------------------------ python venv
venv_step() {
  local req="$PI_ROOT/tests/e2e/requirements.txt" marker="$PI_VENV/.pi-requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ -x "$PI_VENV/bin/python" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ] \
     && "$PI_VENV/bin/python" -c 'import pytest, psycopg, confluent_kafka, boto3' 2>/dev/null; then
    step "venv: $PI_VENV up to date"
    return 0
  fi
  step "venv: creating $PI_VENV"
  rm -rf "$PI_VENV"
  local py=python3
  command -v python3.11 >/dev/null && py=python3.11
  "$py" -m venv "$PI_VENV"
  "$PI_VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  "$PI_VENV/bin/pip" install -q -r "$req"
  "$PI_VENV/bin/python" -c 'import pytest, psycopg, confluent_kafka, boto3'
  echo "$want" >"$marker"
}

t_all=$SECONDS
[ "${PI_SKIP_APT:-0}" = 1 ] || timed apt apt_step
[ "${PI_SKIP_KAFKA:-0}" = 1 ] || timed kafka kafka_step
[ "${PI_SKIP_KINESIS:-0}" = 1 ] || timed kinesis kinesis_step
[ "${PI_SKIP_VENV:-0}" = 1 ] || timed venv venv_step
[ "${PI_SKIP_PGRX:-0}" = 1 ] || timed pgrx pgrx_step
step "all done in $((SECONDS - t_all))s"
