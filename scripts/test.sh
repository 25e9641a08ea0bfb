#!/usr/bin/env bash
# The full test suite (what `make test` and CI run after setup + build):
#   1. unit     cargo test -p ingest-core -p ingest-kinesis --lib (pure Rust, no services)
#   2.          kinesis-client: cargo test -p ingest-kinesis --test kinesalite (the Kinesis client
#               against kinesalite, on stack 0)
#   3. for each version V in PG_VERSIONS (default "15 18") and each part P of PI_E2E_SHARDS
#      (default 3), side by side, each on a stack of its own (PI_INSTANCE: its own PostgreSQL V
#      cluster, Kafka broker and kinesalite, ports + 100 * instance, scripts/env.sh), so that a test
#      stopping a broker or restarting its cluster disturbs no other part:
#      regress-V     scripts/regress.sh (pg_regress; in part 0)
#      pg-differential-V  cargo test -p ingest-core --test pg_differential (the row model's
#                    binary encoder against this cluster's own text input; in part 0)
#      e2e-V-P       pytest tests/e2e --shard P/N (tests/e2e/conftest.py: whole files, balanced by
#                    tests/e2e/durations.txt); the 18 parts also run test_pg_upgrade.py (15 -> 18)
#                    when both versions are built
#      Each part's output goes to $PI_RUN/test-logs/ and is printed whole when the part ends.
# Every tier runs even if an earlier one failed; exit status is non-zero if any failed. The last
# line sums the pytest counts of every part ("total: N passed, N failed, N skipped").
# Services this script started are stopped on exit (ones already running on stack 0 are left).
# Knobs (developers; CI sets none): PI_SKIP_UNIT=1 skips tier 1; PI_E2E_SHARDS=N parts per
# version; PI_E2E_ARGS extra pytest arguments (e.g. "-k upsert"); PI_PG_FSYNC (default off here:
# the test clusters lose nothing a test checks without it, as a killed postmaster's writes stay in
# the page cache).
set -uo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$PI_ROOT"
unset PI_NO_PRELOAD   # the suite needs shared_preload_libraries='pipeline_ingest'
export PI_PG_FSYNC="${PI_PG_FSYNC:-off}"
SHARDS="${PI_E2E_SHARDS:-3}"
LOGS="$PI_RUN/test-logs"
mkdir -p "$LOGS"

passed=(); failed=(); to_stop=(); jobs_pids=(); jobs_names=()
base_instance="$PI_INSTANCE"

cleanup() {
  local s p
  for p in "${jobs_pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
  for s in "${to_stop[@]}"; do PI_INSTANCE="$base_instance" bash scripts/services.sh stop "$s" || true; done
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

# One part of one version on its own stack: services up, [regress], pytest, services down.
# Runs in the background; exit status 0 only if every tier of the part passed; writes the names
# of the tiers that failed to $LOGS/NAME.failed.
run_part() { # version part instance
  local v="$1" part="$2" inst="$3" fails=() oks=()
  export PI_INSTANCE="$inst" PG_VERSION="$v"
  unset PG_CONFIG PG_BIN
  # shellcheck source=env.sh
  . scripts/env.sh
  local own=0
  if [ "$inst" != "$base_instance" ]; then own=1; fi
  pi_log "part $v/$part: stack $inst (PostgreSQL $v on $PGPORT, Kafka $KAFKA_BOOTSTRAP, Kinesis $KINESIS_ENDPOINT)"
  local started_pg=0
  bash scripts/services.sh status pg >/dev/null 2>&1 || started_pg=1
  if { [ "$own" = 0 ] || { bash scripts/services.sh start kafka && bash scripts/services.sh start kinesis; }; } \
     && bash scripts/services.sh start pg; then
    if [ "$part" = 0 ]; then
      local t0=$SECONDS
      pi_log "========== tier regress-$v"
      if bash scripts/regress.sh; then pi_log "========== tier regress-$v PASSED ($((SECONDS - t0))s)"; oks+=("regress-$v")
      else pi_log "========== tier regress-$v FAILED"; fails+=("regress-$v"); fi
      t0=$SECONDS
      pi_log "========== tier pg-differential-$v (PostgreSQL on $PGPORT)"
      if cargo test -p ingest-core --test pg_differential -- --nocapture; then
        pi_log "========== tier pg-differential-$v PASSED ($((SECONDS - t0))s)"; oks+=("pg-differential-$v")
      else pi_log "========== tier pg-differential-$v FAILED"; fails+=("pg-differential-$v"); fi
    fi
    local t0=$SECONDS
    pi_log "========== tier e2e-$v-$part: pytest tests/e2e --shard $part/$SHARDS"
    # shellcheck disable=SC2086
    env PI_SERVICES_MANAGED=1 "$PI_VENV/bin/pytest" -v -p no:cacheprovider --durations=30 \
      --junitxml "$LOGS/$v-$part.xml" --shard "$part/$SHARDS" ${PI_E2E_ARGS:-} tests/e2e
    local rc=$?
    # 5: no test in this part (only with a PI_E2E_ARGS selection; every part of the suite has tests)
    if [ "$rc" = 0 ] || { [ "$rc" = 5 ] && [ -n "${PI_E2E_ARGS:-}" ]; }; then
      pi_log "========== tier e2e-$v-$part PASSED ($((SECONDS - t0))s)"; oks+=("e2e-$v-$part")
    else
      pi_log "========== tier e2e-$v-$part FAILED ($((SECONDS - t0))s)"; fails+=("e2e-$v-$part")
    fi
  else
    fails+=("services-$v-$part")
  fi
  [ "$started_pg" = 0 ] || bash scripts/services.sh stop pg || true
  # test_debezium_real.py stops what it starts, unless pytest-timeout ended the run first
  bash scripts/connect.sh stop >/dev/null 2>&1 || true
  if [ "$own" = 1 ]; then bash scripts/services.sh stop kafka || true; bash scripts/services.sh stop kinesis || true; fi
  : >"$LOGS/$v-$part.failed"
  [ ${#fails[@]} -eq 0 ] || printf '%s\n' "${fails[@]}" >"$LOGS/$v-$part.failed"
  : >"$LOGS/$v-$part.passed"
  [ ${#oks[@]} -eq 0 ] || printf '%s\n' "${oks[@]}" >"$LOGS/$v-$part.passed"
  [ ${#fails[@]} -eq 0 ]
}

if [ "${PI_SKIP_UNIT:-0}" = 1 ]; then   # developer knob; CI never sets it
  pi_log "tier unit skipped (PI_SKIP_UNIT=1)"
else
  tier unit cargo test -p ingest-core -p ingest-kinesis --lib
fi
# Built once here, so the parts' pg-differential runs (one per version, side by side) only run it.
tier build-pg-differential cargo test -p ingest-core --test pg_differential --no-run

for s in kafka kinesis; do
  bash scripts/services.sh status "$s" >/dev/null 2>&1 || to_stop+=("$s")
done
if bash scripts/services.sh start kafka && bash scripts/services.sh start kinesis; then
  tier kinesis-client cargo test -p ingest-kinesis --test kinesalite
  t0=$SECONDS
  inst="$base_instance"
  for v in $PG_VERSIONS; do
    for ((part = 0; part < SHARDS; part++)); do
      name="$v-$part"
      rm -f "$LOGS/$name.log" "$LOGS/$name.failed" "$LOGS/$name.passed"
      setsid bash -c "$(declare -f run_part pi_log pi_die); SHARDS=$SHARDS LOGS='$LOGS' base_instance=$base_instance run_part $v $part $inst" \
        >"$LOGS/$name.log" 2>&1 &
      jobs_pids+=("$!"); jobs_names+=("$name")
      inst=$((inst + 1))
    done
  done
  pi_log "e2e: ${#jobs_pids[@]} parts running side by side (logs in $LOGS)"
  for i in "${!jobs_pids[@]}"; do
    wait "${jobs_pids[$i]}"
    name="${jobs_names[$i]}"
    echo "==================================================== part $name ($LOGS/$name.log)"
    cat "$LOGS/$name.log"
    if [ -s "$LOGS/$name.passed" ]; then
      mapfile -t f <"$LOGS/$name.passed"; passed+=("${f[@]}")
    fi
    if [ -s "$LOGS/$name.failed" ]; then
      mapfile -t f <"$LOGS/$name.failed"; failed+=("${f[@]}")
    elif [ ! -f "$LOGS/$name.failed" ]; then
      failed+=("part-$name")   # it ended before writing what it did
    fi
  done
  jobs_pids=()
  pi_log "e2e: every part done in $((SECONDS - t0))s"
else
  failed+=("services")
fi

# The pytest summaries of every part, added up.
np=0; nf=0; ns=0; ne=0
for name in "${jobs_names[@]}"; do
  log="$LOGS/$name.log"
  [ -f "$log" ] || continue
  line="$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$log" | tail -1)"
  for k in passed failed skipped error errors; do
    n="$(sed -nE "s/.* ([0-9]+) $k[ ,].*/\1/p; s/.* ([0-9]+) $k$/\1/p" <<<"${line% in *}" | head -1)"
    n="${n:-0}"
    case "$k" in passed) np=$((np + n)) ;; failed) nf=$((nf + n)) ;; skipped) ns=$((ns + n)) ;; *) ne=$((ne + n)) ;; esac
  done
done
pi_log "summary: passed: ${passed[*]:-none}; failed: ${failed[*]:-none}"
echo "total: $np passed, $((nf + ne)) failed, $ns skipped"
[ ${#failed[@]} -eq 0 ]
