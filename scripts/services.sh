#!/usr/bin/env bash
# Local services for pipeline_ingest development and tests. Everything binds 127.0.0.1.
#
#   scripts/services.sh {start|stop|status|restart} [pg|kafka|kinesis|registry|all]   (default: all)
#
#   pg       the PostgreSQL cluster of version $PG_VERSION (15, the default, or 18; see env.sh): data
#            in $PIPELINE_PGDATA ($PI_RUN/pg/data for 15, $PI_RUN/pg18/data for 18), port $PGPORT
#            (28815 for 15, 28818 for 18), trust auth, superusers postgres and root.
#            Log: postgres.log beside the data dir. Each version's cluster is started and stopped
#            on its own: `PG_VERSION=18 scripts/services.sh start pg`.
#   kafka    Apache Kafka 4.1.1, KRaft single node (broker+controller), 127.0.0.1:29092
#            (controller 127.0.0.1:29093, SASL_PLAINTEXT/PLAIN 127.0.0.1:29094 with the test account
#            $KAFKA_SASL_USER / $KAFKA_SASL_PASSWORD). Data: $PI_RUN/kafka/data. Log: $PI_RUN/kafka/kafka.log
#   kinesis  kinesalite (in-memory Kinesis emulator) on 127.0.0.1:24567.
#            Log: $PI_RUN/kinesis/kinesalite.log. Streams do NOT survive a restart, unless
#            PI_KINESIS_PATH is set (see below).
#   registry Apicurio Registry 3.3.3 (Confluent-compatible API at $SCHEMA_REGISTRY_URL,
#            http://127.0.0.1:28840/apis/ccompat/v7; management interface 127.0.0.1:28841), run
#            with the Temurin 25 JDK ($PI_REGISTRY_JAVA), in-memory storage: schemas do NOT survive
#            a restart. Log: $PI_RUN/registry/registry.log
#
# start is idempotent (already running -> ok) and waits until the service answers real
# requests (bounded by PI_READY_TIMEOUT seconds, default 60); on failure it prints the log tail.
# stop tolerates services that are not running. Data directories are kept across stop/start.
#
# Environment knobs:
#   PI_NO_PRELOAD=1     start PostgreSQL without shared_preload_libraries='pipeline_ingest'
#                       (for testing the harness before the extension is installed). The
#                       setting is regenerated at every start, so toggling it takes effect on
#                       the next (re)start.
#   PI_READY_TIMEOUT=N  readiness bound in seconds (default 120: JVMs start slowly on a busy 2-core machine).
#   PI_KINESIS_PATH=DIR kinesalite keeps its streams in a LevelDB store in DIR (kinesalite's
#                       --path), so they survive a restart. The e2e tests that stop kinesalite
#                       run a private one instead (pihelpers.Kinesalite) and leave this unset.
set -euo pipefail
# shellcheck source=env.sh
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

READY_TIMEOUT="${PI_READY_TIMEOUT:-120}"
PG_DIR="$(dirname "$PIPELINE_PGDATA")"
PG_LOG="$PG_DIR/postgres.log"
KAFKA_DIR="$PI_RUN/kafka"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KINESIS_DIR="$PI_RUN/kinesis"
KINESIS_PID="$KINESIS_DIR/kinesalite.pid"
KINESIS_LOG="$KINESIS_DIR/kinesalite.log"
REGISTRY_DIR="$PI_RUN/registry"
REGISTRY_PID="$REGISTRY_DIR/registry.pid"
REGISTRY_LOG="$REGISTRY_DIR/registry.log"

# ---------------------------------------------------------------- helpers

# Run a command as the postgres OS user (PostgreSQL refuses to run as root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

log_tail() { # file [lines]
  local f="$1" n="${2:-60}"
  if [ -f "$f" ]; then
    echo "----- last $n lines of $f -----" >&2
    tail -n "$n" "$f" >&2 || true
    echo "----- end of $f -----" >&2
  else
    echo "(no log file $f)" >&2
  fi
}

pid_alive() { # pidfile [cmdline-substring]
  local pf="$1" want="${2:-}" pid
  [ -f "$pf" ] || return 1
  pid="$(cat "$pf" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  proc_alive "$pid" || return 1
  if [ -n "$want" ]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$want" || return 1
  fi
  return 0
}

# alive and not a zombie (dead children of PID 1 may stay zombies for a while in containers)
proc_alive() {
  local st
  kill -0 "$1" 2>/dev/null || return 1
  st="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null || true)"
  [ -n "$st" ] && [ "$st" != "Z" ]
}

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

stop_pidfile() { # name pidfile cmdline-substring [term-timeout]
  local name="$1" pf="$2" want="$3" bound="${4:-30}" pid i
  if ! pid_alive "$pf" "$want"; then
    rm -f "$pf"
    pi_log "$name: not running"
    return 0
  fi
  pid="$(cat "$pf")"
  pi_log "$name: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < bound * 5; i++)); do
    proc_alive "$pid" || break
    sleep 0.2
  done
  if proc_alive "$pid"; then
    pi_log "$name: still alive after ${bound}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do proc_alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$pf"
  pi_log "$name: stopped"
}

probe_python() {
  if [ -x "$PI_VENV/bin/python" ]; then echo "$PI_VENV/bin/python"; else echo ""; fi
}

# ---------------------------------------------------------------- PostgreSQL

pg_prepare_dirs() {
  mkdir -p "$PG_DIR"
  # Every parent of $PG_DIR must be traversable by the postgres user (checked top-down).
  local d="" part
  IFS=/ read -ra parts <<<"${PG_DIR#/}"
  for part in "${parts[@]:0:${#parts[@]}-1}"; do
    d="$d/$part"
    if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
      pi_log "pg: making $d traversable (o+x) for the postgres user"
      chmod o+x "$d"
    fi
  done
  chmod 0700 "$PG_DIR"
  touch "$PG_LOG"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$PG_DIR" "$PG_LOG"; fi
}

# After a crash (kill -9 of the postmaster), the dead postmaster can linger as a zombie until
# PID 1 reaps it, which may take seconds in containers. kill(pid, 0) still succeeds on a
# zombie, so pg_ctl status and the postmaster's own lock-file check would think it is alive.
pg_postmaster_zombie() {
  local pid state
  pid="$(head -1 "$PIPELINE_PGDATA/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  state="$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
  [ "$state" = "Z" ]
}

# postmaster.pid names a pid that now belongs to something else (e.g. after a reboot)?
pg_pidfile_stale() {
  local pid
  pid="$(head -1 "$PIPELINE_PGDATA/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q postgres
}

pg_running() {
  [ -f "$PIPELINE_PGDATA/postmaster.pid" ] || return 1
  pg_postmaster_zombie && return 1
  pg_pidfile_stale && return 1
  as_pg "$PG_BIN/pg_ctl" -D "$PIPELINE_PGDATA" status >/dev/null 2>&1
}

pg_write_conf() {
  local conf="$PIPELINE_PGDATA/pipeline_ingest_services.conf"
  local preload="shared_preload_libraries = 'pipeline_ingest'"
  if [ "${PI_NO_PRELOAD:-0}" = "1" ]; then
    preload="# shared_preload_libraries omitted: PI_NO_PRELOAD=1"
  fi
  cat >"$conf" <<EOF
# Generated by scripts/services.sh at every start; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PG_DIR'
$preload
max_worker_processes = 64
max_connections = 100
logging_collector = off
fsync = ${PI_PG_FSYNC:-on}
EOF
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$conf"; fi
  if ! grep -q "^include 'pipeline_ingest_services.conf'" "$PIPELINE_PGDATA/postgresql.conf"; then
    printf "\n# pipeline_ingest local services\ninclude 'pipeline_ingest_services.conf'\n" \
      >>"$PIPELINE_PGDATA/postgresql.conf"
  fi
}

pg_start() {
  [ -x "$PG_BIN/pg_ctl" ] || pi_die "pg: $PG_BIN/pg_ctl not found (run scripts/setup.sh)"
  pg_prepare_dirs
  if [ ! -f "$PIPELINE_PGDATA/PG_VERSION" ]; then
    pi_log "pg: initdb $PIPELINE_PGDATA"
    rm -rf "$PIPELINE_PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PIPELINE_PGDATA" --auth=trust -U postgres -E UTF8 --locale=C \
      >"$PG_DIR/initdb.log" 2>&1 || { log_tail "$PG_DIR/initdb.log"; pi_die "pg: initdb failed"; }
  fi
  pg_write_conf
  if pg_running; then
    pi_log "pg: already running"
  else
    if pg_postmaster_zombie || pg_pidfile_stale; then
      local zpid; zpid="$(head -1 "$PIPELINE_PGDATA/postmaster.pid")"
      pi_log "pg: removing stale lock files of dead postmaster $zpid"
      rm -f "$PIPELINE_PGDATA/postmaster.pid"
      if [ "$(head -1 "$PG_DIR/.s.PGSQL.$PGPORT.lock" 2>/dev/null)" = "$zpid" ]; then
        rm -f "$PG_DIR/.s.PGSQL.$PGPORT.lock" "$PG_DIR/.s.PGSQL.$PGPORT"
      fi
    fi
    pi_log "pg: starting on $PGHOST:$PGPORT"
    if ! as_pg env -u RUST_BACKTRACE "$PG_BIN/pg_ctl" -D "$PIPELINE_PGDATA" -l "$PG_LOG" -w -t "$READY_TIMEOUT" start >/dev/null; then
      log_tail "$PG_LOG"
      pi_die "pg: pg_ctl start failed"
    fi
  fi
  local i
  for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
    "$PG_BIN/pg_isready" -q -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres && break
    sleep 0.2
  done
  "$PG_BIN/pg_isready" -q -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres \
    || { log_tail "$PG_LOG"; pi_die "pg: not ready after ${READY_TIMEOUT}s"; }
  # Already running with a different preload setting (PI_NO_PRELOAD toggled)? Restart.
  local want_preload="pipeline_ingest" have_preload
  [ "${PI_NO_PRELOAD:-0}" = "1" ] && want_preload=""
  have_preload="$("$PG_BIN/psql" -X -qtA -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -c 'SHOW shared_preload_libraries')"
  if [ "$have_preload" != "$want_preload" ]; then
    pi_log "pg: shared_preload_libraries is '$have_preload', want '$want_preload': restarting"
    as_pg env -u RUST_BACKTRACE "$PG_BIN/pg_ctl" -D "$PIPELINE_PGDATA" -l "$PG_LOG" -m fast -w -t "$READY_TIMEOUT" restart >/dev/null \
      || { log_tail "$PG_LOG"; pi_die "pg: restart failed"; }
  fi
  # A 'root' superuser so that tools run as the root OS user (psql, pg_regress) connect
  # without -U; everything else passes -U postgres explicitly.
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -c \
    "DO \$\$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'root') THEN CREATE ROLE root SUPERUSER LOGIN; END IF; END\$\$;" \
    >/dev/null || pi_die "pg: could not create role root"
  pi_log "pg: ready ($PGHOST:$PGPORT)"
}

pg_stop() {
  if pg_running; then
    pi_log "pg: stopping (fast)"
    as_pg "$PG_BIN/pg_ctl" -D "$PIPELINE_PGDATA" -m fast -w -t 60 stop >/dev/null \
      || { log_tail "$PG_LOG"; pi_die "pg: pg_ctl stop failed"; }
    pi_log "pg: stopped"
  else
    pi_log "pg: not running"
  fi
}

pg_status() {
  if pg_running && "$PG_BIN/pg_isready" -q -h "$PGHOST" -p "$PGPORT" -U postgres; then
    echo "pg: running (pid $(head -1 "$PIPELINE_PGDATA/postmaster.pid"), $PGHOST:$PGPORT, data $PIPELINE_PGDATA)"
  else
    echo "pg: stopped"; return 1
  fi
}

# ---------------------------------------------------------------- Kafka

kafka_java() {
  java -Xmx512m -Xms128m -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" "$@"
}

kafka_write_conf() {
  mkdir -p "$KAFKA_DIR/data"
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Generated by scripts/services.sh at every start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$KAFKA_CONTROLLER
listeners=PLAINTEXT://$KAFKA_BOOTSTRAP,CONTROLLER://$KAFKA_CONTROLLER,SASL_PLAINTEXT://$KAFKA_SASL_BOOTSTRAP
advertised.listeners=PLAINTEXT://$KAFKA_BOOTSTRAP,SASL_PLAINTEXT://$KAFKA_SASL_BOOTSTRAP
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$KAFKA_SASL_USER="$KAFKA_SASL_PASSWORD";
log.dirs=$KAFKA_DIR/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
delete.topic.enable=true
log.retention.hours=168
EOF
  cat >"$KAFKA_DIR/log4j.properties" <<EOF
# Quiet broker logging (reload4j via slf4j-reload4j): WARN and above, to stdout -> kafka.log
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.kafka.server.ControllerServer=INFO
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
EOF
  # Some Kafka 4 code paths also initialise log4j2 (log4j-core is on the classpath).
  cat >"$KAFKA_DIR/log4j2.properties" <<EOF
status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stdout.ref = STDOUT
EOF
}

kafka_running() { pid_alive "$KAFKA_PID" kafka.Kafka; }

kafka_ready() {
  local py; py="$(probe_python)"
  if [ -n "$py" ]; then
    "$py" - "$KAFKA_BOOTSTRAP" <<'EOF' >/dev/null 2>&1
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1], "log_level": 0}).list_topics(timeout=3)
sys.exit(0 if md.brokers else 1)
EOF
  else
    port_open "${KAFKA_BOOTSTRAP%:*}" "${KAFKA_BOOTSTRAP#*:}"
  fi
}

kafka_start() {
  ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1 \
    || pi_die "kafka: broker jars missing in $KAFKA_LIBS (run scripts/setup.sh)"
  command -v java >/dev/null || pi_die "kafka: java not found"
  mkdir -p "$KAFKA_DIR"
  if kafka_running; then
    pi_log "kafka: already running (pid $(cat "$KAFKA_PID"))"
  else
    if port_open "${KAFKA_BOOTSTRAP%:*}" "${KAFKA_BOOTSTRAP#*:}" || port_open "${KAFKA_CONTROLLER%:*}" "${KAFKA_CONTROLLER#*:}"; then
      pi_die "kafka: port ${KAFKA_BOOTSTRAP#*:} or ${KAFKA_CONTROLLER#*:} is already in use by a process not started from $PI_RUN"
    fi
    kafka_write_conf
    if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
      # Static quorum (controller.quorum.voters) => format WITHOUT --standalone
      # (Kafka 4.1 rejects --standalone when controller.quorum.voters is set).
      local cid
      cid="$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
      pi_log "kafka: formatting storage (cluster id $cid)"
      kafka_java kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_DIR/server.properties" --ignore-formatted \
        >"$KAFKA_DIR/format.log" 2>&1 || { log_tail "$KAFKA_DIR/format.log"; pi_die "kafka: storage format failed"; }
    fi
    pi_log "kafka: starting on $KAFKA_BOOTSTRAP"
    echo "===== $(date -Is) start =====" >>"$KAFKA_LOG"
    # setsid: own session, so it is not killed with the caller's process group.
    setsid nohup java -Xmx512m -Xms128m -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties" \
      -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_DIR/server.properties" \
      >>"$KAFKA_LOG" 2>&1 </dev/null &
    echo $! >"$KAFKA_PID"
  fi
  local i deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    # liveness only: right after the fork the cmdline is not yet java's
    proc_alive "$(cat "$KAFKA_PID")" || { log_tail "$KAFKA_LOG"; pi_die "kafka: process exited during startup"; }
    kafka_ready && { pi_log "kafka: ready ($KAFKA_BOOTSTRAP)"; return 0; }
    sleep 0.5
  done
  log_tail "$KAFKA_LOG"
  pi_die "kafka: not ready after ${READY_TIMEOUT}s"
}

kafka_stop() { stop_pidfile kafka "$KAFKA_PID" kafka.Kafka 45; }

kafka_status() {
  if kafka_running; then
    if kafka_ready; then echo "kafka: running (pid $(cat "$KAFKA_PID"), $KAFKA_BOOTSTRAP)"
    else echo "kafka: process up (pid $(cat "$KAFKA_PID")) but not answering on $KAFKA_BOOTSTRAP"; return 1; fi
  else
    echo "kafka: stopped"; return 1
  fi
}

# ---------------------------------------------------------------- Kinesis (kinesalite)

kinesis_running() { pid_alive "$KINESIS_PID" kinesalite.js; }
kinesis_ready() { node "$PI_ROOT/tests/kinesis/kinesalite.js" --probe "$KINESIS_PORT" "$KINESIS_HOST" >/dev/null 2>&1; }

kinesis_start() {
  [ -d "$PI_ROOT/tests/kinesis/node_modules/kinesalite" ] \
    || pi_die "kinesis: kinesalite not installed in tests/kinesis/node_modules (run scripts/setup.sh)"
  mkdir -p "$KINESIS_DIR"
  if kinesis_running; then
    pi_log "kinesis: already running (pid $(cat "$KINESIS_PID"))"
  else
    port_open "$KINESIS_HOST" "$KINESIS_PORT" \
      && pi_die "kinesis: port $KINESIS_PORT is already in use by a process not started from $PI_RUN"
    pi_log "kinesis: starting kinesalite on $KINESIS_ENDPOINT"
    echo "===== $(date -Is) start =====" >>"$KINESIS_LOG"
    local store=()
    [ -n "${PI_KINESIS_PATH:-}" ] && store=(--path "$PI_KINESIS_PATH")
    setsid nohup node "$PI_ROOT/tests/kinesis/kinesalite.js" "${store[@]}" "$KINESIS_PORT" "$KINESIS_HOST" \
      >>"$KINESIS_LOG" 2>&1 </dev/null &
    echo $! >"$KINESIS_PID"
  fi
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    proc_alive "$(cat "$KINESIS_PID")" || { log_tail "$KINESIS_LOG"; pi_die "kinesis: process exited during startup"; }
    kinesis_ready && { pi_log "kinesis: ready ($KINESIS_ENDPOINT)"; return 0; }
    sleep 0.2
  done
  log_tail "$KINESIS_LOG"
  pi_die "kinesis: not ready after ${READY_TIMEOUT}s"
}

kinesis_stop() { stop_pidfile kinesis "$KINESIS_PID" kinesalite.js 10; }

kinesis_status() {
  if kinesis_running && kinesis_ready; then
    echo "kinesis: running (pid $(cat "$KINESIS_PID"), $KINESIS_ENDPOINT)"
  else
    echo "kinesis: stopped"; return 1
  fi
}

# ---------------------------------------------------------------- schema registry (Apicurio)

registry_running() { pid_alive "$REGISTRY_PID" quarkus-run.jar; }
registry_ready() { curl -sf -m 2 -o /dev/null "$SCHEMA_REGISTRY_URL/subjects"; }

registry_start() {
  [ -f "$PI_REGISTRY_HOME/quarkus-run.jar" ] \
    || pi_die "registry: Apicurio Registry not installed in $PI_REGISTRY_HOME (run scripts/setup.sh)"
  [ -x "$PI_REGISTRY_JAVA" ] || pi_die "registry: $PI_REGISTRY_JAVA not found (Apicurio needs Java 21 or newer)"
  mkdir -p "$REGISTRY_DIR"
  if registry_running; then
    pi_log "registry: already running (pid $(cat "$REGISTRY_PID"))"
  else
    if port_open 127.0.0.1 "$REGISTRY_PORT" || port_open 127.0.0.1 "$REGISTRY_MANAGEMENT_PORT"; then
      pi_die "registry: port $REGISTRY_PORT or $REGISTRY_MANAGEMENT_PORT is already in use by a process not started from $PI_RUN"
    fi
    pi_log "registry: starting Apicurio Registry on 127.0.0.1:$REGISTRY_PORT"
    echo "===== $(date -Is) start =====" >>"$REGISTRY_LOG"
    # Both interfaces on 127.0.0.1: the management one defaults to 0.0.0.0:9000 and cannot be
    # turned off. The working directory is the run dir (Quarkus may write there).
    (cd "$REGISTRY_DIR" || exit 1
      setsid nohup "$PI_REGISTRY_JAVA" -Xmx384m -Xms64m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
      -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dquarkus.management.host=127.0.0.1 -Dquarkus.management.port="$REGISTRY_MANAGEMENT_PORT" \
      -Djava.io.tmpdir="$REGISTRY_DIR" \
      -jar "$PI_REGISTRY_HOME/quarkus-run.jar" >>"$REGISTRY_LOG" 2>&1 </dev/null &
      echo $! >"$REGISTRY_PID")
  fi
  local deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    proc_alive "$(cat "$REGISTRY_PID")" || { log_tail "$REGISTRY_LOG"; pi_die "registry: process exited during startup"; }
    registry_ready && { pi_log "registry: ready ($SCHEMA_REGISTRY_URL)"; return 0; }
    sleep 0.5
  done
  log_tail "$REGISTRY_LOG"
  pi_die "registry: not ready after ${READY_TIMEOUT}s"
}

registry_stop() { stop_pidfile registry "$REGISTRY_PID" quarkus-run.jar 20; }

registry_status() {
  if registry_running && registry_ready; then
    echo "registry: running (pid $(cat "$REGISTRY_PID"), $SCHEMA_REGISTRY_URL)"
  else
    echo "registry: stopped"; return 1
  fi
}

# ---------------------------------------------------------------- main

usage() { echo "usage: $0 {start|stop|status|restart} [pg|kafka|kinesis|registry|all]" >&2; exit 2; }

action="${1:-}"; target="${2:-all}"
case "$target" in
  pg | kafka | kinesis | registry) services=("$target") ;;
  all) services=(pg kafka kinesis registry) ;;
  *) usage ;;
esac
mkdir -p "$PI_RUN"

case "$action" in
  start)
    for s in "${services[@]}"; do "${s}_start"; done ;;
  stop)
    # pg (the consumer) first, then the sources
    rc=0
    for s in "${services[@]}"; do "${s}_stop" || rc=1; done
    exit $rc ;;
  restart)
    for s in "${services[@]}"; do "${s}_stop" || true; done
    for s in "${services[@]}"; do "${s}_start"; done ;;
  status)
    rc=0
    for s in "${services[@]}"; do "${s}_status" || rc=1; done
    exit $rc ;;
  *) usage ;;
esac
