#!/usr/bin/env bash
# The full test suite (what `make test` and CI run after setup + build):
#   1. unit     cargo test -p ingest-core -p ingest-kinesis --lib (pure Rust, no services)
#   2.          scripts/services.sh start kafka + kinesis (shared by every PostgreSQL version)
#      kinesis-client  cargo test -p ingest-kinesis --test kinesalite (the Kinesis client against kinesalite)
#   3. for each version V in PG_VERSIONS (default "15 18"), against V's own cluster
#      (PG_VERSION=V scripts/services.sh start pg):
#      regress-V  scripts/regress.sh (pg_regress)
#      e2e-V      pytest -v tests/e2e (services managed here: PI_SERVICES_MANAGED=1); the 18 pass also
#                 runs test_pg_upgrade.py (15 -> 18 with pg_upgrade) when both versions are built
# Every tier runs even if an earlier one failed; exit status is non-zero if any failed.
# Services this script started are always stopped on exit (ones already running are left); each
# version's cluster is stopped when its tiers are done.
# PI_SKIP_UNIT=1 skips tier 1 (for iterating on the other tiers).
set -uo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
unset PI_NO_PRELOAD   # the suite needs shared_preload_libraries='pipeline_ingest'

passed=(); failed=(); to_stop=(); pg_to_stop=""

cleanup() {
  local s
  [ -z "$pg_to_stop" ] || PG_VERSION="$pg_to_stop" bash scripts/services.sh stop pg || true
  for s in "${to_stop[@]}"; do bash scripts/services.sh stop "$s" || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tier() { # name cmd...
  local name="$1" t0=$SECONDS; shift
  pi_log "========== tier $name: $*"
  if "$@"; then
    passed+=("$name"); pi_log "========== tier $name PASSED ($((SECONDS - t0))s)"
  else
    failed+=("$name"); pi_log "========== tier $name FAILED ($((SECONDS - t0))s)"
  fi
}

if [ "${PI_SKIP_UNIT:-0}" = 1 ]; then   # developer knob; CI never sets it
  pi_log "tier unit skipped (PI_SKIP_UNIT=1)"
else
  tier unit cargo test -p ingest-core -p ingest-kinesis --lib
fi

for s in kafka kinesis; do
  bash scripts/services.sh status "$s" >/dev/null 2>&1 || to_stop+=("$s")
done
if bash scripts/services.sh start kafka && bash scripts/services.sh start kinesis; then
  tier kinesis-client cargo test -p ingest-kinesis --test kinesalite
  for v in $PG_VERSIONS; do
    # This version's PG_CONFIG, PG_BIN, PGPORT and PIPELINE_PGDATA (env.sh keeps a caller's
    # PG_CONFIG for the version it belongs to).
    export PG_VERSION="$v"
    . scripts/env.sh
    started=0
    bash scripts/services.sh status pg >/dev/null 2>&1 || { started=1; pg_to_stop="$v"; }
    if bash scripts/services.sh start pg; then
      tier "regress-$v" bash scripts/regress.sh
      tier "e2e-$v" env PI_SERVICES_MANAGED=1 "$PI_VENV/bin/pytest" -v tests/e2e
    else
      failed+=("services-$v")
    fi
    # Stop it before the next version's cluster starts (the machine is small).
    [ "$started" = 0 ] || bash scripts/services.sh stop pg || true
    pg_to_stop=""
  done
else
  failed+=("services")
fi

pi_log "summary: passed: ${passed[*]:-none}; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
