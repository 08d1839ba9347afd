#!/usr/bin/env bash
# A simulated fleet against the coordinators (see BENCHMARKS.md, "Coordinators").
#
# `kura-fleet` runs WORKERS × SLOTS simulated worker slots through the real worker
# client (lease, a heartbeat every lease/6 while a task "works" TASK_MS, complete); the
# coordinators and their store are real processes on loopback. Configurations (CONFIGS):
#   rocksdb       one coordinator on the embedded store (--data)
#   pg1           one coordinator on PostgreSQL (a server this script starts)
#   pg2           two coordinators on one PostgreSQL; the fleet is given both
#   pg2-kill      as pg2, and the first coordinator is SIGKILLed MARK_AT s in
#   pg2-failover  as pg2 over a primary + synchronous standby (one URL naming both):
#                 MARK_AT s in the primary is stopped as a crash would and the standby
#                 promoted at once
# Reported per configuration: transitions/s (leases + heartbeats + results, after 5 s
# of warm-up), lease p50/p99, leases lost (a live worker's lease refused), errors, CPU
# seconds of the coordinators, of PostgreSQL and of the fleet itself, and for the
# last two the seconds until the rate is back to half of what it was.
#
# Usage: benches/e2e/fleet.sh   (~2 minutes per configuration)
# Needs: cargo, curl, jq, PostgreSQL 15 (scripts/install-deps.sh), root or the postgres user.
#
# Knobs (environment), defaults in brackets:
#   CONFIGS ["rocksdb pg1 pg2 pg2-kill pg2-failover"]
#   WORKERS [300], SLOTS [2], TASK_MS [1000], LEASE_MS [3000], SECONDS_RUN [60],
#   JOBS [2500], TASKS_PER_JOB [20], MARK_AT [30]
#   SKIP_BUILD [0], KURA_BIN [], FLEET_BIN [], KEEP [0], BENCH_TMPDIR [$TMPDIR or /tmp]
#   PG_STATS [0] (1: pg_stat_statements loaded, its top statements by time written to
#     the log after each PostgreSQL run, statements inside kura's functions too)
#   OUT [$BENCH_TMPDIR/kura-fleet-results.md]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

CONFIGS=${CONFIGS:-"rocksdb pg1 pg2 pg2-kill pg2-failover"}
WORKERS=${WORKERS:-300}
SLOTS=${SLOTS:-2}
TASK_MS=${TASK_MS:-1000}
LEASE_MS=${LEASE_MS:-3000}
SECONDS_RUN=${SECONDS_RUN:-60}
JOBS=${JOBS:-2500}
TASKS_PER_JOB=${TASKS_PER_JOB:-20}
MARK_AT=${MARK_AT:-30}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
OUT=${OUT:-$BENCH_TMPDIR/kura-fleet-results.md}
PG_BIN=/usr/lib/postgresql/15/bin
PG_STATS=${PG_STATS:-0}
API_KEY="bench-api-key-$RANDOM$RANDOM$RANDOM"
SECRET="bench-cluster-secret-$RANDOM$RANDOM$RANDOM"

# shellcheck source=lib.sh
. "$HERE/lib.sh"
command -v jq >/dev/null 2>&1 || die "jq not found (run scripts/install-deps.sh)"
[ -x "$PG_BIN/initdb" ] || die "no PostgreSQL 15 at $PG_BIN (run scripts/install-deps.sh)"

find_kura
if [ -n "${FLEET_BIN:-}" ]; then
  FLEET="$FLEET_BIN"
else
  [ "$SKIP_BUILD" = 1 ] || cargo build --release -p kura-benches --bin kura-fleet >&2
  FLEET="${CARGO_TARGET_DIR:-$ROOT/target}/release/kura-fleet"
fi
[ -x "$FLEET" ] || die "no kura-fleet at $FLEET"
make_tmp kura-fleet
chmod 755 "$TMP"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PG_DIRS=()
# pg_start NAME [CONF]: initdb (or, for NAME standby-of-PORT, a base backup) and start
# on a free port; sets PG_PORT.
pg_start() {
  local dir="$TMP/$1" conf="${2:-}"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  free_port PG_PORT
  if [[ $1 == standby-of-* ]]; then
    as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "${1#standby-of-}" -U postgres -X stream -R \
      -D "$dir/data" >&2
  else
    as_pg "$PG_BIN/initdb" -U postgres --auth=trust -E UTF8 -D "$dir/data" >/dev/null
  fi
  [ "$PG_STATS" = 1 ] && conf="$conf
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all"
  [ -n "$conf" ] && as_pg sh -c "printf '%s\n' \"$conf\" >> '$dir/data/postgresql.conf'"
  as_pg "$PG_BIN/pg_ctl" -w -D "$dir/data" -l "$dir/log" \
    -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  PG_DIRS+=("$dir")
}
pg_stop_all() {
  local d
  for d in "${PG_DIRS[@]}"; do as_pg "$PG_BIN/pg_ctl" -D "$d/data" -m immediate stop >/dev/null 2>&1 || true; done
  PG_DIRS=()
}
trap 'pg_stop_all; cleanup' EXIT

# coordinator NAME STORE-ARGS...: starts one on a free port; appends its URL to COS.
coordinator() {
  local name=$1 port
  shift
  free_port port
  "$KURA" coordinator "$@" --listen "127.0.0.1:$port" --api-keys "$API_KEY" \
    --cluster-secret "$SECRET" --lease-ms "$LEASE_MS" >"$TMP/logs/$name.log" 2>&1 &
  PIDS+=($!)
  CO_PIDS+=($!)
  wait_http "http://127.0.0.1:$port/health" "$name" "$!"
  COS="${COS:+$COS,}http://127.0.0.1:$port"
}
# cpu_of PIDS...: CPU seconds (user + system) so far of these processes.
cpu_of() {
  local hz total=0 p t
  hz=$(getconf CLK_TCK)
  for p in "$@"; do
    t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  calc "$total / $hz"
}
pg_pids() { pgrep -u postgres -x postgres || true; }
# CPU of every postgres process, including those that exit during the run (their time
# is charged to the postmaster's children counters, cutime/cstime).
pg_cpu() {
  local hz total=0 p
  hz=$(getconf CLK_TCK)
  for p in $(pg_pids); do
    total=$((total + $(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  calc "$total / $hz"
}

say() { printf '%s\n' "$*" | tee -a "$TMP/summary.md" >&2; }
say "## coordinator fleet benchmark $(date -u +%FT%TZ)"
say ""
say "- kura: \`$KURA\` ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); $(nproc) cores"
say "- $WORKERS workers × $SLOTS slots, tasks of $TASK_MS ms, lease $LEASE_MS ms (heartbeat every $((LEASE_MS / 6)) ms), $JOBS jobs × ($TASKS_PER_JOB + 2) tasks, ${SECONDS_RUN} s per run"
say ""
say "| config | transitions/s | leases / heartbeats / results | lease p50 / p99 | leases lost | errors | CPU s: coordinators / postgres / fleet | back to half rate after |"
say "| --- | --- | --- | --- | --- | --- | --- | --- |"

for config in $CONFIGS; do
  COS="" CO_PIDS=()
  case "$config" in
  rocksdb) coordinator c1 --data "$TMP/rocks-$RANDOM" ;;
  pg1)
    pg_start "pg-$config"
    coordinator c1 --store "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    ;;
  pg2 | pg2-kill)
    pg_start "pg-$config"
    coordinator c1 --store "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    coordinator c2 --store "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    ;;
  pg2-failover)
    pg_start "pg-primary" "synchronous_standby_names = '*'"
    PRIMARY_PORT=$PG_PORT PRIMARY_DIR="$TMP/pg-primary"
    pg_start "standby-of-$PRIMARY_PORT" "synchronous_standby_names = ''"
    STANDBY_DIR="$TMP/standby-of-$PRIMARY_PORT"
    url="postgres://postgres@127.0.0.1:$PRIMARY_PORT,127.0.0.1:$PG_PORT/postgres?target_session_attrs=read-write&connect_timeout=2"
    coordinator c1 --store "$url"
    coordinator c2 --store "$url"
    ;;
  *) die "unknown config $config" ;;
  esac
  log "$config: coordinators $COS"
  mark=()
  case "$config" in pg2-kill | pg2-failover) mark=(--mark-at "$MARK_AT") ;; esac
  # The fleet starts after submitting; the event is timed from its first second.
  "$FLEET" --coordinators "$COS" --secret "$SECRET" --api-key "$API_KEY" --workers "$WORKERS" \
    --slots "$SLOTS" --jobs "$JOBS" --tasks-per-job "$TASKS_PER_JOB" --task-ms "$TASK_MS" \
    --seconds "$SECONDS_RUN" "${mark[@]}" >"$TMP/$config.json" 2>"$TMP/logs/fleet-$config.log" &
  FLEET_PID=$!
  CLIENT_PIDS+=($FLEET_PID)
  # Wait for the submissions to end (the fleet logs nothing; watch the queue depth).
  for _ in $(seq 1 600); do
    n=$(curl -fsS "${COS%%,*}/metrics" 2>/dev/null | awk '/^kura_leases_granted_total/ { print $2 }')
    [ -n "$n" ] && [ "${n%.*}" -gt 0 ] && break
    sleep 0.1
  done
  co0=$(cpu_of "${CO_PIDS[@]}") pg0=$(pg_cpu) fl0=$(cpu_of "$FLEET_PID")
  if [ ${#mark[@]} -gt 0 ]; then
    sleep "$MARK_AT"
    case "$config" in
    pg2-kill)
      kill -9 "${CO_PIDS[0]}"
      wait "${CO_PIDS[0]}" 2>/dev/null || true
      ;;
    pg2-failover)
      as_pg "$PG_BIN/pg_ctl" -D "$PRIMARY_DIR/data" -m immediate stop >/dev/null
      as_pg "$PG_BIN/pg_ctl" -D "$STANDBY_DIR/data" -w promote >/dev/null
      ;;
    esac
    log "$config: event at ${MARK_AT} s"
  fi
  # Sample CPU just before the fleet ends (it exits when done).
  co1=$co0 pg1=$pg0 fl1=$fl0
  while :; do
    c=$(cpu_of "${CO_PIDS[@]}") p=$(pg_cpu) f=$(cpu_of "$FLEET_PID")
    kill -0 "$FLEET_PID" 2>/dev/null || break
    co1=$c pg1=$p fl1=$f
    sleep 0.5
  done
  wait "$FLEET_PID" || die "kura-fleet failed: $(tail -5 "$TMP/logs/fleet-$config.log")"
  j="$TMP/$config.json"
  pgcpu=$(calc "$pg1 - $pg0" 1)
  [ "$config" = rocksdb ] && pgcpu="–"
  say "| $config | $(jq -r '.transitions_per_s | floor' "$j") | $(jq -r '"\(.leases) / \(.heartbeats) / \(.results)"' "$j") | $(jq -r '"\(.lease_p50_ms) / \(.lease_p99_ms) ms"' "$j") | $(jq -r .leases_lost "$j") | $(jq -r .errors "$j") | $(calc "$co1 - $co0" 1) / $pgcpu / $(calc "$fl1 - $fl0" 1) | $(jq -r '.recovery_s // "–"' "$j") |"
  log "$config per second: $(jq -c .per_second "$j")"
  if [ "$PG_STATS" = 1 ] && [ "$config" != rocksdb ]; then
    as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -X -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
      -c "SELECT calls, round(total_exec_time) AS total_ms, round(mean_exec_time::numeric, 3) AS mean_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS query FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 30" \
      >"$TMP/$config-statements.txt" 2>&1 || true
    log "$config statements by time: $TMP/$config-statements.txt"
    cat "$TMP/$config-statements.txt" >&2
  fi
  for p in "${CO_PIDS[@]}"; do stop_pid "$p"; done
  pg_stop_all
done
say ""
cp "$TMP/summary.md" "$OUT"
log "results in $OUT"
