#!/usr/bin/env bash
# Load and abusive clients at the edge (see BENCHMARKS.md, "At the edge"), with
# kura-load (benches/src/bin/kura-load), every answer checked:
#   1. mixed load: CONNS connections of GET / range GET / HEAD / list / PUT for SECS
#      seconds, against `kura dev` (one process) and against a multi-process cluster
#      (3 `kura node`s + 1 `kura gateway`, N=3 W=2): 5xx, wrong bytes, latency per
#      operation, peak RSS of every process;
#   2. a well-behaved client's latency alone, then beside IDLE idle connections and
#      SLOW slowloris connections from 20 loopback addresses (multi-process cluster):
#      the p50/p99 ratios, connections the server closed, gateway RSS.
# Prints the JSON reports and writes a summary to $OUT (default ./bench-edge.md).
#
# Usage: benches/e2e/edge.sh   (~3 minutes at default sizes plus the release build)
# Knobs: CONNS [500], SECS [60], OBJECTS [200], IDLE [10000], SLOW [500],
#        DEV [1] (0: skip the kura dev run), GATEWAY_ARGS [] (extra `kura gateway` flags,
#        e.g. "--chunk-cache-mib 0" to see the memory without the chunk cache),
#        SKIP_BUILD [0], KEEP [0], BENCH_TMPDIR [$TMPDIR or /tmp], OUT [./bench-edge.md]
set -euo pipefail

CALLER_PWD="$PWD"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

CONNS=${CONNS:-500}
SECS=${SECS:-60}
OBJECTS=${OBJECTS:-200}
IDLE=${IDLE:-10000}
SLOW=${SLOW:-500}
DEV=${DEV:-1}
GATEWAY_ARGS=${GATEWAY_ARGS:-}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
OUT=${OUT:-bench-edge.md}
case "$OUT" in /*) ;; *) OUT="$CALLER_PWD/$OUT" ;; esac
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
API_KEY="bench-api-key-$RANDOM$RANDOM$RANDOM"
SECRET="bench-cluster-secret-$RANDOM$RANDOM$RANDOM"

# shellcheck source=lib.sh
. "$HERE/lib.sh"

find_kura
if [ "$SKIP_BUILD" != 1 ]; then
  cargo build --release -p kura-benches --bin kura-load >&2
fi
LOAD="${CARGO_TARGET_DIR:-$ROOT/target}/release/kura-load"
[ -x "$LOAD" ] || die "no kura-load at $LOAD"
# Every process needs a descriptor per connection: 10k idle + the load's own.
ulimit -n "$(ulimit -Hn)"

make_tmp kura-edge

# ---- 1a. kura dev ----
if [ "$DEV" = 1 ]; then
free_port DEV_PORT
free_port DEV_S3
"$KURA" dev --data "$TMP/dev" --listen "127.0.0.1:$DEV_PORT" --s3-listen "127.0.0.1:$DEV_S3" \
  --api-key "$API_KEY" >"$TMP/logs/dev.log" 2>&1 &
DEV_PID=$!
PIDS+=("$DEV_PID")
wait_http "http://127.0.0.1:$DEV_PORT/health" "kura dev" "$DEV_PID"
log "mixed load on kura dev: $CONNS connections, ${SECS}s"
"$LOAD" mixed --url "http://127.0.0.1:$DEV_PORT" --api-key "$API_KEY" --conns "$CONNS" \
  --secs "$SECS" --objects "$OBJECTS" --pid "dev=$DEV_PID" >"$TMP/mixed-dev.json"
stop_pid "$DEV_PID"
fi

# ---- 1b. multi-process cluster ----
start_nodes
free_port GW_PORT
"$KURA" gateway --listen "127.0.0.1:$GW_PORT" --nodes "$NODES_ARG" --api-keys "$API_KEY" \
  --cluster-secret "$SECRET" --replicas 3 --write-quorum 2 --read-quorum 2 $GATEWAY_ARGS \
  >"$TMP/logs/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health" gateway "$GW_PID"
PID_ARGS=(--pid "gateway=$GW_PID" --pid "node-a=${NODE_PIDS[0]}" --pid "node-b=${NODE_PIDS[1]}" --pid "node-c=${NODE_PIDS[2]}")
log "mixed load on the multi-process cluster: $CONNS connections, ${SECS}s"
"$LOAD" mixed --url "http://127.0.0.1:$GW_PORT" --api-key "$API_KEY" --conns "$CONNS" \
  --secs "$SECS" --objects "$OBJECTS" "${PID_ARGS[@]}" >"$TMP/mixed-cluster.json"

# ---- 2. idle and slowloris connections ----
log "well-behaved client beside $IDLE idle + $SLOW slowloris connections"
"$LOAD" idle --url "http://127.0.0.1:$GW_PORT" --api-key "$API_KEY" --idle "$IDLE" \
  --slowloris "$SLOW" --pid "gateway=$GW_PID" >"$TMP/idle.json"

# ---- Summary ----
for f in mixed-dev mixed-cluster idle; do
  [ -f "$TMP/$f.json" ] || continue
  echo "== $f"
  cat "$TMP/$f.json"
done
summary() { # summary FILE WHERE
  jq -r --arg where "$2" '"| \($where) | \(.conns) | \(.requests) (\(.requests_per_sec | floor)/s) | \(."5xx") | \(.wrong_bytes) | \(.other_errors) | " +
    ([.ops | to_entries[] | "\(.key) \(.value.latency_ms.p99 | . * 10 | floor / 10)"] | join(", ")) + " | " +
    ([.memory | to_entries[] | "\(.key) \(.value.peak_rss_mib | floor)"] | join(", ")) + " |"' "$1"
}
{
  echo "### At the edge ($(date -u +%F), $(nproc) cores, CONNS=$CONNS SECS=$SECS${GATEWAY_ARGS:+, gateway $GATEWAY_ARGS})"
  echo
  echo "| target | conns | requests | 5xx | wrong bytes | other errors | p99 ms per op | peak RSS MiB |"
  echo "|---|---|---|---|---|---|---|---|"
  if [ "$DEV" = 1 ]; then summary "$TMP/mixed-dev.json" "kura dev (one process)"; fi
  summary "$TMP/mixed-cluster.json" "3 nodes + gateway (4 processes)"
  echo
  jq -r '"Well-behaved client (sequential 4 KiB GETs) beside \(.idle) idle + \(.slowloris) slowloris connections from \(.sources) addresses: p50 \(.alone_ms.p50 * 100 | floor / 100) → \(.loaded_ms.p50 * 100 | floor / 100) ms (\(.p50_ratio * 100 | floor / 100)×), p99 \(.alone_ms.p99 * 100 | floor / 100) → \(.loaded_ms.p99 * 100 | floor / 100) ms (\(.p99_ratio * 100 | floor / 100)×); connect failures \(.connect_failed); gateway RSS \(.memory_before.gateway.rss_mib | floor) → \(.memory_loaded.gateway.rss_mib | floor) MiB; slowloris closed by the server after ~3 s: \(.slowloris_closed_by_server)."' "$TMP/idle.json"
} >"$OUT"
cat "$OUT"
