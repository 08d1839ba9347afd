#!/usr/bin/env bash
# End-to-end benchmark of rebalancing (see BENCHMARKS.md, "Rebalance"): how fast data
# moves when a node joins, against the disk's fsync'd write bandwidth measured in the
# same run, and what a rebalance does to foreground read latency.
#
# Starts a real cluster as separate processes on loopback (3 `kura node`s in zones
# z1..z3 with an unthrottled rebalancer, `--rebalance-bytes-per-sec 0`, scrub off; one
# `kura gateway` with the admin API; N=3 W=2 R=2, 4 MiB chunks), loads DATA_MIB of
# random objects, then:
#   1. baseline: `dd conv=fdatasync` of DD_MIB to the same filesystem (before, between
#      and after the rebalances; the median run is the baseline), and 3 such dd at once
#      (several writers fsyncing in parallel drive a virtual disk harder than one);
#   2. foreground latency without rebalance: wrk, LAT_CONNS connections of random
#      RANGE_LEN range GETs of one object through the gateway, for WRK_DURATION s;
#   3. rebalance throughput: start n4, `kura admin node add n4 ... --zone z4`, no
#      foreground load; moved bytes (sum of the nodes' GET /v1/rebalance moved_bytes)
#      / wall time from the add until every node reports the epoch done;
#   4. foreground latency during a rebalance: the same wrk load while n5 joins (4 -> 5,
#      unthrottled), from just before `node add` until every node reports the epoch
#      done (then wrk gets SIGINT, which makes it stop and print its statistics);
#   5. every object is read back through the gateway and its blake3 compared.
# Prints a summary (also written to $OUT, default ./bench-rebalance.md).
#
# Usage: benches/e2e/rebalance.sh   (from anywhere; ~2-3 minutes at default sizes on
#        2 cores once the release build is done, plus any wait for a quiet machine)
# Needs: cargo, wrk, curl, b3sum, awk (scripts/install-deps.sh installs them).
#
# Knobs (environment), defaults in brackets:
#   DATA_MIB [4096]      data set size, MiB (16 objects of OBJ_MIB); 3 copies are written
#   OBJ_MIB [256]        object size, MiB
#   DD_MIB [1024]        size of each dd baseline write, MiB
#   RANGE_LEN [65536]    range GET length, bytes (offsets unaligned)
#   LAT_CONNS [4]        wrk connections for the latency runs (1 thread)
#   WRK_DURATION [10]    seconds of the no-rebalance latency run
#   WAIT_LOAD [0.6]      before measuring, wait until the 1-minute load average is below
#                        this ("" to skip) ...
#   WAIT_LOAD_MAX [900]  ... but at most this many seconds
#   SKIP_BUILD [0]       1: use the existing release binary
#   KURA_BIN []          binary to use (implies no build)
#   BENCH_TMPDIR [$TMPDIR or /tmp]  where data lives; must be the disk under test
#   KEEP [0]             1: keep the temp dir (data, logs) after the run
#   OUT [./bench-rebalance.md]  where the summary goes (relative to the current dir)
set -euo pipefail

CALLER_PWD="$PWD"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

DATA_MIB=${DATA_MIB:-4096}
OBJ_MIB=${OBJ_MIB:-256}
DD_MIB=${DD_MIB:-1024}
RANGE_LEN=${RANGE_LEN:-65536}
LAT_CONNS=${LAT_CONNS:-4}
WRK_DURATION=${WRK_DURATION:-10}
WAIT_LOAD=${WAIT_LOAD-0.6}
WAIT_LOAD_MAX=${WAIT_LOAD_MAX:-900}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
OUT=${OUT:-bench-rebalance.md}
case "$OUT" in /*) ;; *) OUT="$CALLER_PWD/$OUT" ;; esac
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}

OBJ_BYTES=$((OBJ_MIB * 1024 * 1024))
OBJECTS=$((DATA_MIB / OBJ_MIB))
DATA_BYTES=$((OBJECTS * OBJ_BYTES))
API_KEY="bench-api-key-$RANDOM$RANDOM"
ADMIN_TOKEN="bench-admin-token-$RANDOM$RANDOM$RANDOM"
SECRET="bench-cluster-secret-$RANDOM$RANDOM$RANDOM"
BUCKET=bench

# shellcheck source=lib.sh
. "$HERE/lib.sh"

for tool in wrk curl b3sum awk dd; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/install-deps.sh)"
done
[ "$OBJECTS" -ge 1 ] || die "DATA_MIB ($DATA_MIB) < OBJ_MIB ($OBJ_MIB)"

# ---- Build ----

find_kura

# ---- Temp dir, processes, cleanup ----

make_tmp kura-rebalance
mkdir -p "$TMP/out"

check_fs "the numbers"
need_kib=$(((DATA_MIB * 4 + DD_MIB) * 1024))
free_kib=$(df -Pk "$TMP" | awk 'NR == 2 { print $4 }')
[ "$free_kib" -gt "$need_kib" ] || die "$TMP has $((free_kib / 1024)) MiB free, needs ~$((need_kib / 1024))"


# ---- Cluster ----

NODE_IDS=()
NODE_PORTS=()
NODE_PIDS=()
start_node() { # start_node ID ZONE
  local port
  free_port port
  "$KURA" node --data "$TMP/$1" --listen "127.0.0.1:$port" --node-id "$1" --zone "$2" \
    --cluster-secret "$SECRET" --scrub-bytes-per-sec 0 --rebalance-bytes-per-sec 0 \
    >"$TMP/logs/$1.log" 2>&1 &
  PIDS+=($!)
  NODE_PIDS+=($!)
  NODE_IDS+=("$1")
  NODE_PORTS+=("$port")
  wait_http "http://127.0.0.1:$port/health" "node $1" "$!"
}
NODES_ARG=""
for i in 1 2 3; do
  start_node "n$i" "z$i"
  NODES_ARG+="${NODES_ARG:+,}n$i=127.0.0.1:${NODE_PORTS[-1]}@z$i"
done
free_port GW_PORT
"$KURA" gateway --listen "127.0.0.1:$GW_PORT" --nodes "$NODES_ARG" --api-keys "$API_KEY" \
  --cluster-secret "$SECRET" --admin-token "$ADMIN_TOKEN" \
  >"$TMP/logs/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health" gateway "$GW_PID"
GW="http://127.0.0.1:$GW_PORT"
AUTH="Authorization: Bearer $API_KEY"
admin() { "$KURA" admin --gateway "$GW" --admin-token "$ADMIN_TOKEN" "$@"; }
log "cluster up: gateway $GW, nodes ${NODE_PORTS[*]}, data in $TMP ($FS_TYPE on $FS_DEV)"

# ---- Helpers ----

node_get() { # node_get INDEX PATH
  curl -fs -H "Authorization: Bearer $SECRET" "http://127.0.0.1:${NODE_PORTS[$1]}$2"
}
json_num() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }

# rebalance_state EPOCH: "DONE MOVED" over all nodes (DONE=1 when every node has a
# finished, idle pass for EPOCH; MOVED sums their moved_bytes for it). One curl for all
# nodes, so polling costs the machine little while it is being measured.
rebalance_state() {
  local urls=() p
  for p in "${NODE_PORTS[@]}"; do urls+=("http://127.0.0.1:$p/v1/rebalance"); done
  curl -s -H "Authorization: Bearer $SECRET" -w '\n' "${urls[@]}" |
    awk -v e="$1" -v n="${#NODE_PORTS[@]}" '
      function num(k, m) {
        if (!match($0, "\"" k "\":[0-9]+")) return -1
        m = substr($0, RSTART, RLENGTH); sub(/.*:/, "", m); return m + 0
      }
      BEGIN { done = 1 }
      /"done_epoch"/ {
        seen++
        if (num("done_epoch") < e || $0 !~ /"running":false/) done = 0
        if (num("epoch") == e) moved += num("moved_bytes")
      }
      END { if (seen < n) done = 0; printf "%d %.0f\n", done, moved }'
}

# add_node ID ZONE: adds the (started) node with `kura admin node add`; sets EPOCH and
# ADD_T0 (the time the add returned).
add_node() {
  local out
  out=$(admin node add "$1" "127.0.0.1:${NODE_PORTS[-1]}" --zone "$2")
  ADD_T0=$(now)
  EPOCH=$(sed -n 's/.*epoch \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$EPOCH" ] || die "node add: $out"
  log "  added $1 at epoch $EPOCH"
}

# wait_rebalanced: waits until the rebalance to EPOCH is done; sets REB_SECONDS, MOVED.
wait_rebalanced() {
  local st
  for _ in $(seq 1 18000); do
    st=$(rebalance_state "$EPOCH")
    if [ "${st%% *}" = 1 ]; then
      REB_SECONDS=$(calc "$(now) - $ADD_T0" 3)
      MOVED=${st#* }
      return 0
    fi
    sleep 0.1
  done
  die "rebalance to epoch $EPOCH not done after 30 min"
}

# to_ms VALUE_WITH_UNIT (wrk's latency format: 812.00us, 1.23ms, 2.01s)
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan" }'
}

# start_wrk NAME SECONDS: range GETs of obj-0000 in the background; finish_wrk NAME
# waits and sets WRK_RPS, WRK_P50, WRK_P90, WRK_P99 (ms), WRK_ERRS.
start_wrk() {
  wrk -t1 -c"$LAT_CONNS" -d"${2}s" --timeout 30s --latency -s "$HERE/range.lua" \
    "$GW/v1/o/$BUCKET/obj-0000" -- "$OBJ_BYTES" "$RANGE_LEN" 0 "$API_KEY" \
    >"$TMP/out/wrk-$1.txt" 2>&1 &
  CLIENT_PIDS=($!)
}
finish_wrk() {
  local f="$TMP/out/wrk-$1.txt"
  wait "${CLIENT_PIDS[0]}" || die "wrk $1 failed: $(cat "$f")"
  CLIENT_PIDS=()
  WRK_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
  WRK_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
  WRK_P90=$(to_ms "$(awk '$1 == "90%" { print $2 }' "$f")")
  WRK_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
  local non2xx sock
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
  sock=$(awk '/Socket errors:/ { s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i + 0; print s }' "$f")
  WRK_ERRS=$((${non2xx:-0} + ${sock:-0}))
  log "  $1: $WRK_RPS req/s, p50 $WRK_P50 ms, p90 $WRK_P90 ms, p99 $WRK_P99 ms, errors $WRK_ERRS"
}

dd_baseline() { # appends MB/s of one fdatasync'd DD_MIB write to DD_RUNS
  sync
  local t0 t1
  t0=$(now)
  dd if=/dev/zero of="$TMP/dd.bin" bs=4M count=$((DD_MIB / 4)) conv=fdatasync status=none
  t1=$(now)
  rm -f "$TMP/dd.bin"
  sync
  DD_RUNS+=("$(calc "$DD_MIB * 1048576 / ($t1 - $t0) / 1e6")")
  log "  dd conv=fdatasync ${DD_MIB} MiB: ${DD_RUNS[-1]} MB/s"
}

dd_parallel_baseline() { # sets DD_PAR3: total MB/s of 3 fdatasync'd DD_MIB writes at once
  sync
  local t0 t1 k
  t0=$(now)
  for k in 1 2 3; do
    dd if=/dev/zero of="$TMP/dd-$k.bin" bs=4M count=$((DD_MIB / 4)) conv=fdatasync status=none &
    CLIENT_PIDS+=($!)
  done
  wait "${CLIENT_PIDS[@]}"
  CLIENT_PIDS=()
  t1=$(now)
  rm -f "$TMP"/dd-?.bin
  sync
  DD_PAR3=$(calc "3 * $DD_MIB * 1048576 / ($t1 - $t0) / 1e6")
  log "  3 x dd conv=fdatasync ${DD_MIB} MiB at once: $DD_PAR3 MB/s in total"
}

cpu_busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4; exit }' /proc/stat; }
our_ticks() {
  cat /proc/[0-9]*/stat 2>/dev/null | awk -v root=$$ '
    { pid = $1; rest = substr($0, index($0, ") ") + 2); split(rest, f, " ")
      ppid[pid] = f[2]; t[pid] = f[12] + f[13] + f[14] + f[15] }
    END { for (p in t) { q = p; n = 0
            while (q != root && q != "" && q != 0 && q != 1 && n < 64) { q = ppid[q]; n++ }
            if (q == root) sum += t[p] }
          print sum + 0 }'
}

# phase_begin; ...; phase_end: sets OTHERS_PCT, the share of the machine's CPU that
# other processes used meanwhile (what disturbs a measurement on a shared machine).
phase_begin() {
  P_T0=$(now)
  P_BUSY0=$(cpu_busy_ticks)
  P_OURS0=$(our_ticks)
}
phase_end() {
  local busy ours others secs
  busy=$(($(cpu_busy_ticks) - P_BUSY0))
  ours=$(($(our_ticks) - P_OURS0))
  others=$((busy > ours ? busy - ours : 0))
  secs=$(calc "$(now) - $P_T0" 3)
  OTHERS_PCT=$(calc "100 * $others / $(getconf CLK_TCK) / ($secs * $(nproc))" 0)
}

# ---- Load the data set ----

log "loading $OBJECTS objects of $OBJ_MIB MiB (random content)"
t0=$(now)
load_one() { # load_one I
  local key src code
  key=$(printf 'obj-%04d' "$1")
  src="$TMP/src-$1.bin"
  head -c "$OBJ_BYTES" /dev/urandom >"$src"
  b3sum --no-names "$src" >"$TMP/out/$key.b3"
  code=$(curl -s -o "$TMP/out/put-$key.json" -w '%{http_code}' -H "$AUTH" -H 'Expect:' \
    -T "$src" "$GW/v1/o/$BUCKET/$key")
  rm -f "$src"
  [ "$code" = 201 ] || die "PUT $key: HTTP $code $(cat "$TMP/out/put-$key.json")"
}
for ((i = 0; i < OBJECTS; i += 2)); do
  load_one "$i" &
  p1=$!
  if ((i + 1 < OBJECTS)); then
    load_one $((i + 1)) &
    p2=$!
    wait "$p2" || die "upload failed"
  fi
  wait "$p1" || die "upload failed"
done
# W=2: wait for every third copy.
want=$((3 * OBJECTS * ((OBJ_BYTES + 4194303) / 4194304)))
for _ in $(seq 1 6000); do
  total=0
  for i in "${!NODE_PORTS[@]}"; do total=$((total + $(node_get "$i" /v1/status | json_num chunks))); done
  [ "$total" -ge "$want" ] && break
  sleep 0.05
done
[ "$total" -ge "$want" ] || die "only $total of $want chunk copies landed"
sync
log "loaded $((DATA_BYTES / 1048576)) MiB x 3 copies in $(calc "$(now) - $t0" 1) s"

# ---- Wait for a quiet machine ----

if [ -n "$WAIT_LOAD" ]; then
  waited=0
  while awk "BEGIN { exit !($(load1) >= $WAIT_LOAD) }"; do
    if [ "$waited" -ge "$WAIT_LOAD_MAX" ]; then
      log "load still $(load1) after ${waited}s; measuring anyway"
      break
    fi
    log "waiting for load < $WAIT_LOAD (now $(load1))"
    sleep 15
    waited=$((waited + 15))
  done
  # Another benchmark waiting for the same quiet moment would start with us: pause a
  # random 10-40 s and look again.
  pause=$((10 + RANDOM % 31))
  sleep "$pause"
  waited=$((waited + pause))
  while awk "BEGIN { exit !($(load1) >= $WAIT_LOAD) }" && [ "$waited" -lt "$WAIT_LOAD_MAX" ]; do
    log "load back up to $(load1); waiting"
    sleep 15
    waited=$((waited + 15))
  done
fi

LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
START_TIME=$(now)
BUSY_START=$(cpu_busy_ticks)
OURS_START=$(our_ticks)
DD_RUNS=()
RAW=()
raw() {
  RAW+=("$1=$2")
  log "  $1 = $2"
}

# ---- 1. Disk baseline ----

log "disk baseline"
dd_baseline
dd_parallel_baseline

# ---- 2. Foreground latency, no rebalance ----

log "range GETs without rebalance: wrk -t1 -c$LAT_CONNS, ${RANGE_LEN}-byte ranges, ${WRK_DURATION} s"
phase_begin
start_wrk idle "$WRK_DURATION"
finish_wrk idle
phase_end
IDLE=("$WRK_RPS" "$WRK_P50" "$WRK_P90" "$WRK_P99" "$WRK_ERRS" "$OTHERS_PCT")

# ---- 3. Rebalance throughput: 3 -> 4 nodes, no foreground load ----

log "rebalance 3 -> 4 nodes (unthrottled, no foreground load)"
sync
start_node n4 z4
phase_begin
add_node n4 z4
wait_rebalanced
phase_end
REB1_OTHERS=$OTHERS_PCT
REB1_S=$REB_SECONDS
REB1_MOVED=$MOVED
REB1_MBPS=$(calc "$REB1_MOVED / $REB1_S / 1e6")
IDEAL1=$((DATA_BYTES * 3 / 4))
log "  moved $REB1_MOVED bytes in $REB1_S s: $REB1_MBPS MB/s ($(calc "$REB1_MOVED / $IDEAL1" 3) x the ideal 3/4 of the data)"
dd_baseline

# ---- 4. Foreground latency during a rebalance: 4 -> 5 nodes ----

# wrk runs from just before the add until the rebalance is done, then gets SIGINT (it
# stops and prints its statistics), so its numbers cover the rebalance only.
log "range GETs during rebalance 4 -> 5 nodes (unthrottled): wrk -t1 -c$LAT_CONNS until it is done"
sync
start_node n5 z5
phase_begin
start_wrk busy 3600
sleep 0.2
add_node n5 z5
wait_rebalanced
kill -INT "${CLIENT_PIDS[0]}"
finish_wrk busy
phase_end
BUSY=("$WRK_RPS" "$WRK_P50" "$WRK_P90" "$WRK_P99" "$WRK_ERRS" "$OTHERS_PCT")
REB2_S=$REB_SECONDS
REB2_MOVED=$MOVED
REB2_MBPS=$(calc "$REB2_MOVED / $REB2_S / 1e6")
log "  moved $REB2_MOVED bytes in $REB2_S s under foreground load: $REB2_MBPS MB/s"
dd_baseline

# ---- 5. Everything intact ----

log "reading every object back"
bad=0
for ((i = 0; i < OBJECTS; i++)); do
  key=$(printf 'obj-%04d' "$i")
  got=$(curl -fs -H "$AUTH" "$GW/v1/o/$BUCKET/$key" | b3sum --no-names) || got=error
  [ "$got" = "$(cat "$TMP/out/$key.b3")" ] || {
    log "  $key: read back $got"
    bad=$((bad + 1))
  }
done
[ "$bad" = 0 ] || die "$bad objects did not read back intact"
log "  all $OBJECTS objects intact"

# ---- Summary ----

END_TIME=$(now)
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
HZ=$(getconf CLK_TCK)
busy=$(($(cpu_busy_ticks) - BUSY_START))
ours=$(($(our_ticks) - OURS_START))
others=$((busy > ours ? busy - ours : 0))
avail=$(calc "($END_TIME - $START_TIME) * $(nproc)" 0)
# The median: fdatasync on a virtual disk with a write-back cache now and then returns
# far faster than the disk can write; one such run must not become the baseline.
dd_med=$(printf '%s\n' "${DD_RUNS[@]}" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
raw data_bytes "$DATA_BYTES"
raw dd_fdatasync_mbps_runs "${DD_RUNS[*]}"
raw dd_3parallel_fdatasync_total_mbps "$DD_PAR3"
raw rebalance_3to4_moved_bytes "$REB1_MOVED"
raw rebalance_3to4_ideal_bytes "$IDEAL1"
raw rebalance_3to4_seconds "$REB1_S"
raw rebalance_3to4_mbps "$REB1_MBPS"
raw rebalance_4to5_moved_bytes "$REB2_MOVED"
raw rebalance_4to5_seconds "$REB2_S"
raw rebalance_4to5_mbps_under_load "$REB2_MBPS"
raw wrk_idle_rps_p50_p90_p99_errors_otherscpu "${IDLE[*]}"
raw wrk_during_rebalance_rps_p50_p90_p99_errors_otherscpu "${BUSY[*]}"
raw rebalance_3to4_otherscpu_pct "$REB1_OTHERS"
raw other_processes_cpu_seconds "$(calc "$others / $HZ" 1)"
raw benchmark_cpu_seconds "$(calc "$ours / $HZ" 1)"
{
  echo "## kura rebalance end-to-end benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "- command: \`$(for v in DATA_MIB OBJ_MIB DD_MIB RANGE_LEN LAT_CONNS WRK_DURATION WAIT_LOAD; do printf '%s=%q ' "$v" "${!v}"; done)benches/e2e/rebalance.sh\`"
  echo "- machine: $(nproc) CPUs ($(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r); data on $FS_DEV ($FS_TYPE)"
  echo "- load average (1/5/15 min): $LOAD_START when measuring started, $LOAD_END at end; measurements took $(calc "$END_TIME - $START_TIME" 0) s"
  echo "- CPU time used by other processes during the measurements ≈ $(calc "$others / $HZ" 0) s of $avail CPU-s available ($(calc "100 * $others / $HZ / $avail" 0)%); this benchmark's processes: $(calc "$ours / $HZ" 0) s"
  echo "- cluster: \`kura node\`s (one zone each, scrub off, \`--rebalance-bytes-per-sec 0\`) + 1 \`kura gateway\` (N=3 W=2 R=2, 4 MiB chunks), all on 127.0.0.1; data set $OBJECTS × $OBJ_MIB MiB"
  echo "- MB/s = 10^6 bytes/s"
  echo
  echo "| measurement | value | baseline (same run) | ratio |"
  echo "| --- | --- | --- | --- |"
  echo "| rebalance 3 → 4 nodes, unthrottled, no foreground load: moved / wall time | $REB1_MBPS MB/s ($REB1_MOVED bytes in $REB1_S s; $(calc "$REB1_MOVED / $IDEAL1" 3) × the ideal ¾ of the data; other processes used $REB1_OTHERS% of the CPU meanwhile) | dd conv=fdatasync ${DD_MIB} MiB, median of ${#DD_RUNS[@]}: $dd_med MB/s (${DD_RUNS[*]}); 3 such dd at once: $DD_PAR3 MB/s in total | $(calc "$REB1_MBPS / $dd_med") (vs 3 dd: $(calc "$REB1_MBPS / $DD_PAR3")) |"
  echo "| rebalance 4 → 5 nodes, unthrottled, with the range GETs below | $REB2_MBPS MB/s ($REB2_MOVED bytes in $REB2_S s) | same | $(calc "$REB2_MBPS / $dd_med") (vs 3 dd: $(calc "$REB2_MBPS / $DD_PAR3")) |"
  echo "| ${RANGE_LEN}-byte range GETs, wrk -c$LAT_CONNS: p50 / p90 / p99 during the 4 → 5 rebalance | ${BUSY[1]} / ${BUSY[2]} / ${BUSY[3]} ms (${BUSY[0]} req/s, ${BUSY[4]} errors; others' CPU ${BUSY[5]}%) | without rebalance: ${IDLE[1]} / ${IDLE[2]} / ${IDLE[3]} ms (${IDLE[0]} req/s, ${IDLE[4]} errors; others' CPU ${IDLE[5]}%) | p50 $(calc "${BUSY[1]} / ${IDLE[1]}") ×, p99 $(calc "${BUSY[3]} / ${IDLE[3]}") × |"
  echo
  echo "Raw values:"
  echo
  echo '```'
  printf '%s\n' "${RAW[@]}"
  echo '```'
} >"$OUT"
echo
cat "$OUT"
log "summary written to $OUT"
