#!/usr/bin/env bash
# End-to-end benchmark of the gateway data path, every number beside a baseline
# measured in the same run on the same machine (see BENCHMARKS.md, "Gateway data path").
#
# Starts a real cluster as separate processes on loopback (3 `kura node`s in zones
# a/b/c, scrubbers off, data in a temp dir; one `kura gateway`, N=3 W=2 R=2) and an
# nginx serving the same bytes from plain files with sendfile, then measures:
#   1. GET of a 1 GiB object (curl)              vs nginx sendfile of the same file
#   2. random 64 KiB range GETs (wrk, 16/64 conns) vs nginx ranges of the same file
#   3. PUT of 1 GiB (curl -T, N=3 on one disk)    vs fsync'd disk write bandwidth / 3
#   4. 4 KiB object PUT and GET ops/s (wrk)       vs nginx static 4 KiB GET
#   3b. time to first byte of a 64 KiB range and of a whole GET, unloaded (curl)
#   5. gateway peak RSS while 64 clients stream the 1 GiB object at once
# Beside nginx, the ranges and small GETs also run against `kura-floor`
# (benches/src/bin/kura-floor.rs): the cheapest server on kura's HTTP stack that reads
# and BLAKE3-verifies each range (the ceiling of any verifying gateway here), and the
# same server answering from memory (what HTTP and the socket write alone cost).
# and prints a summary table (also written to $OUT, default ./bench-results.md).
#
# Usage: benches/e2e/gateway.sh   (from anywhere; at default sizes the measurements
#        take ~3-4 minutes on 2 cores, plus the release build)
# Needs: cargo, nginx, wrk, curl (scripts/install-deps.sh installs them).
#
# Knobs (environment), defaults in brackets; small values are for trying the script:
#   OBJ_MIB [1024]        size of the large object, MiB
#   GET_RUNS [5]          timed 1 GiB GETs per side (after one warm-up read each)
#   PUT_RUNS [2]          timed 1 GiB PUTs (each of new random content), dd runs beside
#   WRK_DURATION [10]     seconds per wrk run
#   WRK_THREADS [2]       wrk threads
#   RATE_RUNS [1]         wrk runs per side for the range and small-GET rows, kura and
#                         nginx alternated; rows give the medians (nginx's own rate
#                         moved by up to 1.5x between single runs, session 22)
#   RANGE_CONNS ["16 64"] wrk connection counts for the range GETs
#   RANGE_LEN [65536]     range length, bytes
#   RANGE_ALIGN [0]       0: any byte offset; N: offsets are multiples of N
#   RANGE_SMALL_MIB [4]   also ranges of an object this small (one chunk); 0: skip
#   SMALL_SIZE [4096]     small object size, bytes
#   SMALL_KEYS [64]       small objects written up front for the GET test
#   SMALL_CONNS [16]      wrk connections for the small-object tests (a list: "16 64")
#   CLIENTS [64]          concurrent streaming clients for the RSS test (0: skip it)
#   TTFB_N [200]          sequential ranged GETs timed to their first byte (one curl,
#                         keep-alive), TTFB_WHOLE_N [5] whole-object GETs likewise
#   CLIENTS_BASELINE [1]  1: also time the same CLIENTS streams from nginx
#   WAIT_LOAD []          e.g. 0.6: after the build, wait until the 1-minute load
#                         average is below it ...
#   WAIT_LOAD_MAX [1200]  ... but at most this many seconds
#   GATEWAY_ARGS []       extra `kura gateway` flags, e.g. "--chunk-cache-mib 0
#                         --record-cache-ms 0" to measure the path without caches
#   SKIP_BUILD [0]        1: use the existing release binary
#   KURA_BIN []           binary to use (implies no build)
#   FLOOR [1]             0: skip the kura-floor rows
#   FLOOR_BIN []          kura-floor binary (default: built beside the release kura)
#   BENCH_TMPDIR [$TMPDIR or /tmp]  where data lives; must be the disk under test
#   KEEP [0]              1: keep the temp dir (data, logs) after the run
#   OUT [./bench-results.md]  where the summary goes (relative to the current dir)
set -euo pipefail

CALLER_PWD="$PWD"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

OBJ_MIB=${OBJ_MIB:-1024}
GET_RUNS=${GET_RUNS:-5}
PUT_RUNS=${PUT_RUNS:-2}
WRK_DURATION=${WRK_DURATION:-10}
WRK_THREADS=${WRK_THREADS:-2}
RATE_RUNS=${RATE_RUNS:-1}
RANGE_CONNS=${RANGE_CONNS:-"16 64"}
RANGE_LEN=${RANGE_LEN:-65536}
RANGE_ALIGN=${RANGE_ALIGN:-0}
RANGE_SMALL_MIB=${RANGE_SMALL_MIB:-4}
SMALL_SIZE=${SMALL_SIZE:-4096}
SMALL_KEYS=${SMALL_KEYS:-64}
SMALL_CONNS=${SMALL_CONNS:-16}
CLIENTS=${CLIENTS:-64}
TTFB_N=${TTFB_N:-200}
TTFB_WHOLE_N=${TTFB_WHOLE_N:-5}
CLIENTS_BASELINE=${CLIENTS_BASELINE:-1}
WAIT_LOAD=${WAIT_LOAD:-}
WAIT_LOAD_MAX=${WAIT_LOAD_MAX:-1200}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
GATEWAY_ARGS=${GATEWAY_ARGS:-}
OUT=${OUT:-bench-results.md}
case "$OUT" in /*) ;; *) OUT="$CALLER_PWD/$OUT" ;; esac
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}

OBJ_BYTES=$((OBJ_MIB * 1024 * 1024))
CHUNK_BYTES=$((4 * 1024 * 1024)) # the gateway's default chunk size
API_KEY="bench-api-key-$RANDOM$RANDOM"
SECRET="bench-cluster-secret-$RANDOM$RANDOM$RANDOM"
BUCKET=bench

# shellcheck source=lib.sh
. "$HERE/lib.sh"

for tool in nginx wrk curl awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/install-deps.sh)"
done

# ---- Build ----

find_kura
FLOOR=${FLOOR:-1}
if [ "$FLOOR" = 1 ]; then
  if [ -z "${FLOOR_BIN:-}" ]; then
    if [ "$SKIP_BUILD" != 1 ]; then
      log "building kura-floor (release)"
      cargo build --release -p kura-benches --bin kura-floor >&2
    fi
    FLOOR_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/kura-floor"
  fi
  [ -x "$FLOOR_BIN" ] || die "no kura-floor binary at $FLOOR_BIN (FLOOR=0 skips it)"
fi

# ---- Wait for a quiet machine (optional) ----

if [ -n "$WAIT_LOAD" ]; then
  waited=0
  while awk "BEGIN { exit !($(load1) >= $WAIT_LOAD) }"; do
    if [ "$waited" -ge "$WAIT_LOAD_MAX" ]; then
      log "load still $(load1) after ${waited}s; running anyway"
      break
    fi
    log "waiting for load < $WAIT_LOAD (now $(load1))"
    sleep 15
    waited=$((waited + 15))
  done
fi

# ---- Temp dir, processes, cleanup ----

make_tmp kura-e2e
mkdir -p "$TMP/www/small" "$TMP/out"

check_fs "the PUT numbers"


# ---- Cluster ----

start_nodes
free_port GW_PORT
"$KURA" gateway --listen "127.0.0.1:$GW_PORT" --nodes "$NODES_ARG" --api-keys "$API_KEY" \
  --cluster-secret "$SECRET" --replicas 3 --write-quorum 2 --read-quorum 2 $GATEWAY_ARGS \
  >"$TMP/logs/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health" gateway "$GW_PID"
GW="http://127.0.0.1:$GW_PORT"
AUTH="Authorization: Bearer $API_KEY"
log "cluster up: gateway $GW (pid $GW_PID), nodes ${NODE_PORTS[*]}, data in $TMP ($FS_TYPE on $FS_DEV)"

# ---- nginx ----

free_port NGX_PORT
NGX="$TMP/nginx"
mkdir -p "$NGX/client_body"
TEMP_PATHS=""
NGX_BUILD="$(nginx -V 2>&1)"
for m in proxy fastcgi uwsgi scgi; do
  if [[ $NGX_BUILD != *"--without-http_${m}_module"* ]]; then
    mkdir -p "$NGX/$m"
    TEMP_PATHS+="    ${m}_temp_path $NGX/$m;"$'\n'
  fi
done
echo ok >"$TMP/www/ready"
USER_LINE=""
if [ "$(id -u)" -eq 0 ]; then USER_LINE="user root;"; fi
WORKERS=$(nproc)
awk -v prefix="$NGX" -v port="$NGX_PORT" -v root="$TMP/www" -v workers="$WORKERS" \
  -v user_line="$USER_LINE" -v temp_paths="$TEMP_PATHS" '
  { gsub(/@PREFIX@/, prefix); gsub(/@PORT@/, port); gsub(/@ROOT@/, root)
    gsub(/@WORKERS@/, workers); gsub(/@USER_LINE@/, user_line)
    if ($0 ~ /@TEMP_PATHS@/) { printf "%s", temp_paths; next }
    print }' "$HERE/nginx.conf.in" >"$NGX/nginx.conf"
nginx -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" >"$TMP/logs/nginx.log" 2>&1 &
NGX_PID=$!
PIDS+=("$NGX_PID")
NG="http://127.0.0.1:$NGX_PORT"
wait_http "$NG/ready" nginx "$NGX_PID"
log "nginx up: $NG (pid $NGX_PID, $WORKERS workers, sendfile on)"

# ---- The verified floor (kura-floor) ----

if [ "$FLOOR" = 1 ]; then
  free_port FLOOR_PORT
  free_port FLOOR_MEM_PORT
  FL="http://127.0.0.1:$FLOOR_PORT"
  FL_MEM="http://127.0.0.1:$FLOOR_MEM_PORT"
fi
# start_floor: both floor servers over big.bin (once it exists).
start_floor() {
  [ "$FLOOR" = 1 ] || return 0
  "$FLOOR_BIN" --listen "127.0.0.1:$FLOOR_PORT" --file "$TMP/www/big.bin" \
    --small-len "$SMALL_SIZE" >"$TMP/logs/floor.log" 2>&1 &
  PIDS+=($!)
  "$FLOOR_BIN" --listen "127.0.0.1:$FLOOR_MEM_PORT" --file "$TMP/www/big.bin" --from-memory \
    --small-len "$SMALL_SIZE" >"$TMP/logs/floor-mem.log" 2>&1 &
  PIDS+=($!)
  wait_http "$FL/" kura-floor "${PIDS[-2]}"
  wait_http "$FL_MEM/" "kura-floor --from-memory" "${PIDS[-1]}"
  local u
  for u in "$FL" "$FL_MEM"; do
    curl -fs -r 1000-66535 "$u/" | cmp -s - "$TMP/out/r-ng" || die "kura-floor range differs ($u)"
  done
}

# ---- Helpers ----

node_chunks() { # total chunks held by the three nodes
  local total=0 c
  for p in "${NODE_PORTS[@]}"; do
    c=$(curl -fs -H "Authorization: Bearer $SECRET" "http://127.0.0.1:$p/v1/status" |
      sed -n 's/.*"chunks":\([0-9]*\).*/\1/p')
    total=$((total + ${c:-0}))
  done
  echo "$total"
}

hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || log "cannot reset VmHWM of $1"; }

# median of the numbers on stdin
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maxof() { sort -g | tail -1; }
ms3() { awk '{ printf "%.3f\n", $1 }'; }

# to_ms VALUE_WITH_UNIT (wrk's latency format: 812.00us, 1.23ms, 2.01s, 1.50m)
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan" }'
}

# run_wrk NAME CONNS URL SCRIPT ARGS... ; sets WRK_RPS, WRK_P50, WRK_P99 (ms), WRK_ERRS
run_wrk() {
  local name=$1 conns=$2 url=$3 script=$4
  shift 4
  local f="$TMP/out/wrk-$name.txt"
  # In the background, so a signal to this script stops it at once (see cleanup).
  wrk -t"$WRK_THREADS" -c"$conns" -d"${WRK_DURATION}s" --timeout 30s --latency \
    -s "$HERE/$script" "$url" -- "$@" >"$f" 2>&1 &
  CLIENT_PIDS=($!)
  wait "${CLIENT_PIDS[0]}" || die "wrk $name failed: $(cat "$f")"
  CLIENT_PIDS=()
  WRK_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
  WRK_P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$f")")
  WRK_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
  local non2xx sock
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
  sock=$(awk '/Socket errors:/ { s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i + 0; print s }' "$f")
  WRK_ERRS=$((${non2xx:-0} + ${sock:-0}))
  log "  $name: $WRK_RPS req/s, p50 ${WRK_P50} ms, p99 ${WRK_P99} ms, errors $WRK_ERRS"
  [ "$WRK_ERRS" -eq 0 ] || log "  WARNING: $name had $WRK_ERRS errors (see $f)"
}

# run_pair NAME CONNS SCRIPT GW_URL "GW_ARGS" NG_URL "NG_ARGS" ; RATE_RUNS wrk runs of
# each side, alternated (the gateway first), so a drift of the machine weighs on both
# sides alike. Sets G_RPS G_P50 G_P99 and N_RPS N_P50 N_P99 (medians over the runs),
# G_ERR and N_ERR (summed), G_RUNS and N_RUNS (each run's req/s, comma-separated).
run_pair() {
  local name=$1 c=$2 script=$3 gurl=$4 gargs=$5 nurl=$6 nargs=$7 i
  local gr=() g5=() g9=() nr=() n5=() n9=()
  G_ERR=0 N_ERR=0
  for i in $(seq 1 "$RATE_RUNS"); do
    # shellcheck disable=SC2086 # each argument list is words (numbers, paths, the key)
    run_wrk "$name-gw-$i" "$c" "$gurl" "$script" $gargs
    gr+=("$WRK_RPS") g5+=("$WRK_P50") g9+=("$WRK_P99") G_ERR=$((G_ERR + WRK_ERRS))
    # shellcheck disable=SC2086
    run_wrk "$name-ng-$i" "$c" "$nurl" "$script" $nargs
    nr+=("$WRK_RPS") n5+=("$WRK_P50") n9+=("$WRK_P99") N_ERR=$((N_ERR + WRK_ERRS))
  done
  G_RPS=$(printf '%s\n' "${gr[@]}" | median) N_RPS=$(printf '%s\n' "${nr[@]}" | median)
  G_P50=$(printf '%s\n' "${g5[@]}" | median | ms3) N_P50=$(printf '%s\n' "${n5[@]}" | median | ms3)
  G_P99=$(printf '%s\n' "${g9[@]}" | median | ms3) N_P99=$(printf '%s\n' "${n9[@]}" | median | ms3)
  G_RUNS=$(IFS=,; echo "${gr[*]}") N_RUNS=$(IFS=,; echo "${nr[*]}")
}

# of_runs: " (median of N)" when the rows are medians of several runs
of_runs() { [ "$RATE_RUNS" -gt 1 ] && echo " (median of $RATE_RUNS)" || true; }

# curl_get URL ; sets GET_MBPS, fails unless 200 with the whole object
curl_get() {
  local r code size t
  r=$(curl -s -o /dev/null -H "$AUTH" -w '%{http_code} %{size_download} %{time_total}' "$1")
  read -r code size t <<<"$r"
  [ "$code" = 200 ] && [ "$size" = "$OBJ_BYTES" ] || die "GET $1: HTTP $code, $size bytes"
  GET_MBPS=$(calc "$size / $t / 1e6")
}

RESULTS=() # markdown table rows
RAW=()     # key=value lines
raw() {
  RAW+=("$1=$2")
  log "  $1 = $2"
}
row() { RESULTS+=("| $1 | $2 | $3 | $4 | $5 | $6 |"); }
verdict() { # verdict VALUE OP GOAL -> "yes"/"no"
  if awk "BEGIN { exit !($1 $2 $3) }"; then echo yes; else echo "**no**"; fi
}

# ---- CPU used by anything else while we measure ----
# The machine may be shared. /proc/stat's user+nice+system ticks, minus those of this
# script and its descendants (live ones summed, reaped ones in cutime/cstime), is what
# other processes took. Approximate: loopback softirq time may land on either side.

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
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
START_TIME=$(now)
BUSY_START=$(cpu_busy_ticks)
OURS_START=$(our_ticks)

# ---- 3. PUT 1 GiB (first: the machine and the disk are quietest) vs dd / 3 ----

log "PUT: ${PUT_RUNS} x ${OBJ_MIB} MiB, each beside a 'dd conv=fdatasync' of the same bytes"
NCHUNKS=$(((OBJ_BYTES + CHUNK_BYTES - 1) / CHUNK_BYTES))
PUT_ACK=()
PUT_ALL=()
DD_SYNC=()
DD_DIRECT=()
DD_PAR3=()
PUT_HWM=0
for run in $(seq 1 "$PUT_RUNS"); do
  src="$TMP/src-$run.bin"
  head -c "$OBJ_BYTES" /dev/urandom >"$src"
  sync # the source file stays in page cache but has no dirty pages left to flush
  # Baseline: the same bytes (from page cache) written once to the same filesystem,
  # then fdatasync'd, which also flushes the disk's write cache. O_DIRECT is shown for
  # information only: it bypasses the page cache but does not flush a volatile write
  # cache, so on a write-back virtual disk it is not a durable write.
  t0=$(now)
  dd if="$src" of="$TMP/dd.bin" bs=4M conv=fdatasync status=none
  t1=$(now)
  rm -f "$TMP/dd.bin"
  DD_SYNC+=("$(calc "$OBJ_BYTES / ($t1 - $t0) / 1e6")")
  if [ "$run" = 1 ]; then
    sync
    t0=$(now)
    dd if="$src" of="$TMP/dd.bin" bs=4M oflag=direct status=none
    t1=$(now)
    rm -f "$TMP/dd.bin"
    DD_DIRECT+=("$(calc "$OBJ_BYTES / ($t1 - $t0) / 1e6")")
    # Three writers at once, each the whole object + fdatasync: the same disk work as
    # N=3 (minus the nodes' per-chunk fsyncs), with the queue depth three nodes give.
    sync
    t0=$(now)
    for k in 1 2 3; do
      dd if="$src" of="$TMP/dd-$k.bin" bs=4M conv=fdatasync status=none &
      CLIENT_PIDS+=($!)
    done
    wait "${CLIENT_PIDS[@]}"
    CLIENT_PIDS=()
    t1=$(now)
    rm -f "$TMP"/dd-?.bin
    DD_PAR3+=("$(calc "3 * $OBJ_BYTES / ($t1 - $t0) / 1e6")")
  fi
  sync
  before=$(node_chunks)
  reset_hwm "$GW_PID"
  t0=$(now)
  code=$(curl -s -o "$TMP/out/put-$run.json" -w '%{http_code}' -H "$AUTH" -H 'Expect:' \
    -T "$src" "$GW/v1/o/$BUCKET/big-$run")
  t1=$(now)
  [ "$code" = 201 ] || die "PUT big-$run: HTTP $code $(cat "$TMP/out/put-$run.json")"
  # W=2: the 201 comes once two copies of every chunk are durable; wait for the third.
  want=$((before + 3 * NCHUNKS))
  for _ in $(seq 1 6000); do
    [ "$(node_chunks)" -ge "$want" ] && break
    sleep 0.05
  done
  t2=$(now)
  [ "$(node_chunks)" -ge "$want" ] || die "third copies of big-$run never landed"
  h=$(hwm_kib "$GW_PID")
  [ "$h" -gt "$PUT_HWM" ] && PUT_HWM=$h
  PUT_ACK+=("$(calc "$OBJ_BYTES / ($t1 - $t0) / 1e6")")
  PUT_ALL+=("$(calc "$OBJ_BYTES / ($t2 - $t0) / 1e6")")
  log "  run $run: PUT ${PUT_ACK[-1]} MB/s to the 201, ${PUT_ALL[-1]} MB/s to 3 copies;" \
    "dd fdatasync ${DD_SYNC[-1]} MB/s${DD_DIRECT:+, dd direct ${DD_DIRECT[0]} MB/s}"
  if [ "$run" != 1 ]; then rm -f "$src"; fi
done
sync
put_ack=$(printf '%s\n' "${PUT_ACK[@]}" | maxof)
put_all=$(printf '%s\n' "${PUT_ALL[@]}" | maxof)
dd_best=$(printf '%s\n' "${DD_SYNC[@]}" | maxof)
put_base=$(calc "$dd_best / 3")
raw put_ack_mbps_runs "${PUT_ACK[*]}"
raw put_3copies_mbps_runs "${PUT_ALL[*]}"
raw dd_fdatasync_mbps_runs "${DD_SYNC[*]}"
raw dd_direct_mbps_runs "${DD_DIRECT[*]}"
raw dd_3parallel_fdatasync_total_mbps "${DD_PAR3[*]}"
raw gateway_put_hwm_mib "$(calc "$PUT_HWM / 1024" 1)"
r=$(calc "$put_ack / $put_base")
row "PUT ${OBJ_MIB} MiB, N=3 W=2, to the 201 (best of $PUT_RUNS)" "$put_ack MB/s" \
  "best dd fdatasync / 3 = $put_base MB/s" "$r" "≥ 0.8" "$(verdict "$r" '>=' 0.8)"
r=$(calc "$put_all / $put_base")
row "PUT ${OBJ_MIB} MiB, until all 3 copies durable" "$put_all MB/s" \
  "best dd fdatasync / 3 = $put_base MB/s" "$r" "(info)" "–"
par3=$(calc "${DD_PAR3[0]} / 3")
row "PUT ${OBJ_MIB} MiB, until all 3 copies durable (vs 3 writers)" "$put_all MB/s" \
  "3 dd fdatasync at once: total / 3 = $par3 MB/s" "$(calc "$put_all / $par3")" "(info)" "–"

# ---- Objects for the read tests ----

# The large object is big-1 (its source file stays for nginx); small objects are
# written with curl, their files kept for nginx too.
ln "$TMP/src-1.bin" "$TMP/www/big.bin" 2>/dev/null || cp "$TMP/src-1.bin" "$TMP/www/big.bin"
log "writing $SMALL_KEYS objects of $SMALL_SIZE bytes"
for i in $(seq 0 $((SMALL_KEYS - 1))); do
  head -c "$SMALL_SIZE" /dev/urandom >"$TMP/www/small/k$i"
done
seq 0 $((SMALL_KEYS - 1)) | xargs -P 8 -I{} curl -fs -o /dev/null -H "$AUTH" -H 'Expect:' \
  -T "$TMP/www/small/k{}" "$GW/v1/o/$BUCKET/small/k{}" || die "small PUTs failed"
chmod -R a+rX "$TMP/www"

# Same bytes on both sides?
curl -fs -H "$AUTH" -r 1000-66535 "$GW/v1/o/$BUCKET/big-1" >"$TMP/out/r-gw" || die "range GET failed"
curl -fs -r 1000-66535 "$NG/big.bin" >"$TMP/out/r-ng" || die "nginx range GET failed (see $NGX/error.log)"
cmp -s "$TMP/out/r-gw" "$TMP/out/r-ng" || die "gateway and nginx serve different bytes"
start_floor
curl -fs -H "$AUTH" "$GW/v1/o/$BUCKET/small/k0" | cmp -s - "$TMP/www/small/k0" || die "small GET differs"

# ---- 1. GET the 1 GiB object vs nginx sendfile ----

log "GET ${OBJ_MIB} MiB: warm-up (and a byte-for-byte check), then $GET_RUNS runs each, interleaved"
curl -fs -H "$AUTH" "$GW/v1/o/$BUCKET/big-1" | cmp -s - "$TMP/www/big.bin" ||
  die "gateway GET of big-1 differs from the source"
curl_get "$NG/big.bin"
GET_GW=()
GET_NG=()
for _ in $(seq 1 "$GET_RUNS"); do
  curl_get "$GW/v1/o/$BUCKET/big-1"
  GET_GW+=("$GET_MBPS")
  curl_get "$NG/big.bin"
  GET_NG+=("$GET_MBPS")
done
raw get_gateway_mbps_runs "${GET_GW[*]}"
raw get_nginx_mbps_runs "${GET_NG[*]}"
g=$(printf '%s\n' "${GET_GW[@]}" | median)
n=$(printf '%s\n' "${GET_NG[@]}" | median)
r=$(calc "$g / $n")
row "GET ${OBJ_MIB} MiB object, 1 client (median of $GET_RUNS)" "$(calc "$g" 0) MB/s" \
  "nginx sendfile: $(calc "$n" 0) MB/s" "$r" "≥ 0.8" "$(verdict "$r" '>=' 0.8)"
g=$(printf '%s\n' "${GET_GW[@]}" | maxof)
n=$(printf '%s\n' "${GET_NG[@]}" | maxof)
r=$(calc "$g / $n")
row "GET ${OBJ_MIB} MiB object, 1 client (best of $GET_RUNS)" "$(calc "$g" 0) MB/s" \
  "nginx sendfile: $(calc "$n" 0) MB/s" "$r" "≥ 0.8" "$(verdict "$r" '>=' 0.8)"

# ---- 2. Random 64 KiB ranges with wrk ----

log "range GETs: ${RANGE_LEN} B at random offsets (align ${RANGE_ALIGN}), ${WRK_DURATION}s per run"
for c in $RANGE_CONNS; do
  args="$OBJ_BYTES $RANGE_LEN $RANGE_ALIGN $API_KEY"
  run_pair "range-c$c" "$c" range.lua "$GW/v1/o/$BUCKET/big-1" "$args" "$NG/big.bin" "$args"
  g_rps=$G_RPS
  raw "range_c${c}_gateway" "rps=$G_RPS p50_ms=$G_P50 p99_ms=$G_P99 errors=$G_ERR"
  raw "range_c${c}_nginx" "rps=$N_RPS p50_ms=$N_P50 p99_ms=$N_P99 errors=$N_ERR"
  [ "$RATE_RUNS" -gt 1 ] && raw "range_c${c}_runs" "gateway=$G_RUNS nginx=$N_RUNS"
  r=$(calc "$G_RPS / $N_RPS")
  row "64 KiB random ranges, $c conns: req/s$(of_runs)" "$(calc "$G_RPS" 0)" \
    "nginx: $(calc "$N_RPS" 0)" "$r" "≥ 0.6" "$(verdict "$r" '>=' 0.6)"
  r=$(calc "$G_P99 / $N_P99")
  row "64 KiB random ranges, $c conns: p99 latency$(of_runs)" "$G_P99 ms" "nginx: $N_P99 ms" \
    "$r" "≤ 2" "$(verdict "$r" '<=' 2)"
  [ "$FLOOR" = 1 ] || continue
  n_rps=$N_RPS n_p99=$N_P99
  for f in verified memory; do
    url=$FL what="read and verified per range"
    [ $f = memory ] && url=$FL_MEM what="from memory: HTTP and the write only"
    run_wrk "range-floor-$f-c$c" "$c" "$url/" range.lua "$OBJ_BYTES" "$RANGE_LEN" "$RANGE_ALIGN"
    raw "range_c${c}_floor_$f" "rps=$WRK_RPS p50_ms=$WRK_P50 p99_ms=$WRK_P99 errors=$WRK_ERRS"
    row "… kura-floor, $what, $c conns: req/s; p99" "$(calc "$WRK_RPS" 0); $WRK_P99 ms" \
      "nginx: $(calc "$n_rps" 0); $n_p99 ms" "$(calc "$WRK_RPS / $n_rps"); $(calc "$WRK_P99 / $n_p99")" \
      "(baseline)" "kura: $(calc "$g_rps / $WRK_RPS")× its req/s"
  done
done

if [ "$RANGE_SMALL_MIB" -gt 0 ]; then
  # The same ranges from an object of one chunk: what a range costs when the object
  # record (its chunk list) is small.
  sb=$((RANGE_SMALL_MIB * 1024 * 1024))
  head -c "$sb" "$TMP/www/big.bin" >"$TMP/www/mid.bin"
  curl -fs -o /dev/null -H "$AUTH" -H 'Expect:' -T "$TMP/www/mid.bin" "$GW/v1/o/$BUCKET/mid" ||
    die "PUT mid failed"
  c=${RANGE_CONNS%% *}
  run_wrk "range-gw-mid-c$c" "$c" "$GW/v1/o/$BUCKET/mid" range.lua "$sb" "$RANGE_LEN" "$RANGE_ALIGN" "$API_KEY"
  g_rps=$WRK_RPS g_p50=$WRK_P50 g_p99=$WRK_P99 g_err=$WRK_ERRS
  run_wrk "range-ng-mid-c$c" "$c" "$NG/mid.bin" range.lua "$sb" "$RANGE_LEN" "$RANGE_ALIGN" "$API_KEY"
  raw "range_mid_c${c}_gateway" "rps=$g_rps p50_ms=$g_p50 p99_ms=$g_p99 errors=$g_err"
  raw "range_mid_c${c}_nginx" "rps=$WRK_RPS p50_ms=$WRK_P50 p99_ms=$WRK_P99 errors=$WRK_ERRS"
  row "64 KiB random ranges of a ${RANGE_SMALL_MIB} MiB object, $c conns: req/s" "$(calc "$g_rps" 0)" \
    "nginx: $(calc "$WRK_RPS" 0)" "$(calc "$g_rps / $WRK_RPS")" "(info)" "–"
  row "64 KiB random ranges of a ${RANGE_SMALL_MIB} MiB object, $c conns: p99 latency" "$g_p99 ms" \
    "nginx: $WRK_P99 ms" "$(calc "$g_p99 / $WRK_P99")" "(info)" "–"
fi

# ---- 3b. Time to first byte, unloaded ----

# ttfb_of URL AUTH_HEADER N SPAN_BYTES LEN ; one curl, keep-alive, N sequential GETs:
# N random ranges of LEN bytes within SPAN_BYTES (LEN 0: whole object). Prints each
# request's time to first byte (ms), one per line.
ttfb_of() {
  local url=$1 auth=$2 n=$3 span=$4 len=$5 args=() i a
  for i in $(seq 1 "$n"); do
    args+=(--next -s -o /dev/null -w '%{time_starttransfer}\n' -H "$auth")
    if [ "$len" -gt 0 ]; then
      a=$(((RANDOM * 32768 + RANDOM) % (span - len)))
      args+=(-r "$a-$((a + len - 1))")
    fi
    args+=("$url")
  done
  curl "${args[@]}" | awk '{ printf "%.3f\n", $1 * 1000 }'
}

log "time to first byte: $TTFB_N sequential ${RANGE_LEN} B ranges, and $TTFB_WHOLE_N whole GETs, one connection each side"
g=$(ttfb_of "$GW/v1/o/$BUCKET/big-1" "$AUTH" "$TTFB_N" "$OBJ_BYTES" "$RANGE_LEN" | median)
n=$(ttfb_of "$NG/big.bin" "$AUTH" "$TTFB_N" "$OBJ_BYTES" "$RANGE_LEN" | median)
raw ttfb_range_ms "gateway_p50=$g nginx_p50=$n"
row "time to first byte, ${RANGE_LEN} B range, unloaded: p50" "$g ms" "nginx: $n ms" \
  "$(calc "$g / $n")" "≤ 0.5 ms" "$(verdict "$g" '<=' 0.5)"
g=$(ttfb_of "$GW/v1/o/$BUCKET/big-1" "$AUTH" "$TTFB_WHOLE_N" 0 0 | median)
n=$(ttfb_of "$NG/big.bin" "$AUTH" "$TTFB_WHOLE_N" 0 0 | median)
raw ttfb_whole_ms "gateway_p50=$g nginx_p50=$n"
row "time to first byte, whole ${OBJ_MIB} MiB GET (first chunk), unloaded: p50" "$g ms" "nginx: $n ms" \
  "$(calc "$g / $n")" "(info)" "–"

# ---- 4. Small objects ----

log "small objects: ${SMALL_SIZE} B, $SMALL_CONNS connections, ${WRK_DURATION}s per run"
sync
for c in $SMALL_CONNS; do
  run_wrk "small-put-gw-$c" "$c" "$GW/" small_put.lua "/v1/o/$BUCKET/put/" "$SMALL_SIZE" "r$RANDOM" "$API_KEY"
  p_rps=$WRK_RPS p_p99=$WRK_P99 p_err=$WRK_ERRS
  raw "small_put_gateway_$c" "rps=$p_rps p50_ms=$WRK_P50 p99_ms=$p_p99 errors=$p_err"
  row "PUT ${SMALL_SIZE} B objects, $c conns" "$(calc "$p_rps" 0) ops/s (p99 $p_p99 ms)" \
    "–" "–" "(info)" "–"
done
for c in $SMALL_CONNS; do
  run_pair "small-get-$c" "$c" small_get.lua "$GW/" "/v1/o/$BUCKET/small/k $SMALL_KEYS $API_KEY" \
    "$NG/" "/small/k $SMALL_KEYS $API_KEY"
  g_rps=$G_RPS
  raw "small_get_gateway_$c" "rps=$G_RPS p99_ms=$G_P99 errors=$G_ERR"
  raw "small_get_nginx_$c" "rps=$N_RPS p99_ms=$N_P99 errors=$N_ERR"
  [ "$RATE_RUNS" -gt 1 ] && raw "small_get_runs_$c" "gateway=$G_RUNS nginx=$N_RUNS"
  row "GET ${SMALL_SIZE} B objects, $c conns: req/s$(of_runs)" "$(calc "$G_RPS" 0)" \
    "nginx static: $(calc "$N_RPS" 0)" "$(calc "$G_RPS / $N_RPS")" "(info)" "–"
  row "GET ${SMALL_SIZE} B objects, $c conns: p99 latency$(of_runs)" "$G_P99 ms" \
    "nginx static: $N_P99 ms" "$(calc "$G_P99 / $N_P99")" "(info)" "–"
  [ "$FLOOR" = 1 ] || continue
  n_rps=$N_RPS
  run_wrk "small-get-floor-$c" "$c" "$FL/" small_get.lua "/small/k" "$SMALL_KEYS"
  raw "small_get_floor_$c" "rps=$WRK_RPS p99_ms=$WRK_P99 errors=$WRK_ERRS"
  row "… kura-floor, from memory with no lookup, $c conns: req/s" "$(calc "$WRK_RPS" 0)" \
    "nginx static: $(calc "$n_rps" 0)" "$(calc "$WRK_RPS / $n_rps")" "(baseline)" \
    "kura: $(calc "$g_rps / $WRK_RPS")× its req/s"
done

# ---- 5. Gateway peak RSS under CLIENTS concurrent full streams ----

stream_all() { # stream_all URL LABEL ; CLIENTS parallel full GETs, sets STREAM_SECONDS
  local url=$1 label=$2 t0 t1 bad
  CLIENT_PIDS=()
  t0=$(now)
  for i in $(seq 1 "$CLIENTS"); do
    curl -s -o /dev/null -H "$AUTH" -w '%{http_code} %{size_download}\n' "$url" \
      >"$TMP/out/$label-$i.txt" &
    CLIENT_PIDS+=($!)
  done
  wait "${CLIENT_PIDS[@]}" || true
  t1=$(now)
  CLIENT_PIDS=()
  bad=$(cat "$TMP/out/$label"-*.txt | awk -v want="200 $OBJ_BYTES" '$0 != want' | wc -l)
  [ "$bad" -eq 0 ] || die "$label: $bad of $CLIENTS streams incomplete"
  STREAM_SECONDS=$(calc "$t1 - $t0")
}

# CLIENTS=0 skips it (a bare `wait` would wait for the cluster itself).
if [ "$CLIENTS" -gt 0 ]; then
  log "RSS: $CLIENTS clients stream the ${OBJ_MIB} MiB object from the gateway at once"
  rss_before=$(rss_kib "$GW_PID")
  hwm_all=$(hwm_kib "$GW_PID")
  reset_hwm "$GW_PID"
  stream_all "$GW/v1/o/$BUCKET/big-1" conc-gw
  t_gw=$STREAM_SECONDS
  hwm=$(hwm_kib "$GW_PID")
  node_hwm=0
  for p in "${NODE_PIDS[@]}"; do
    h=$(hwm_kib "$p")
    [ "$h" -gt "$node_hwm" ] && node_hwm=$h
  done
  hwm_mib=$(calc "$hwm / 1024" 1)
  per_client=$(calc "($hwm - $rss_before) * 1024 / $CLIENTS / $CHUNK_BYTES")
  agg_gw=$(calc "$CLIENTS * $OBJ_BYTES / $t_gw / 1e6" 0)
  raw conc_gateway_seconds "$t_gw"
  raw conc_gateway_aggregate_mbps "$agg_gw"
  raw gateway_rss_before_mib "$(calc "$rss_before / 1024" 1)"
  raw gateway_hwm_mib "$hwm_mib"
  raw gateway_hwm_whole_run_before_mib "$(calc "$hwm_all / 1024" 1)"
  raw gateway_hwm_chunks_per_client "$per_client"
  raw node_max_hwm_mib "$(calc "$node_hwm / 1024" 1)"
  if [ "$CLIENTS_BASELINE" = 1 ]; then
    log "  the same $CLIENTS streams from nginx"
    stream_all "$NG/big.bin" conc-ng
    t_ng=$STREAM_SECONDS
    raw conc_nginx_seconds "$t_ng"
    row "$CLIENTS clients × ${OBJ_MIB} MiB at once: wall time" "$t_gw s ($agg_gw MB/s total)" \
      "nginx: $t_ng s ($(calc "$CLIENTS * $OBJ_BYTES / $t_ng / 1e6" 0) MB/s)" \
      "$(calc "$t_gw / $t_ng")" "(info)" "–"
  else
    row "$CLIENTS clients × ${OBJ_MIB} MiB at once: wall time" "$t_gw s ($agg_gw MB/s total)" \
      "–" "–" "(info)" "–"
  fi
  # Goal (issue: the long tail): ≤ 100 MiB above idle with the chunk cache off; with
  # it on, what the streams put in the cache counts too, so the row is information.
  above=$(calc "($hwm - $rss_before) / 1024" 1)
  if [[ $GATEWAY_ARGS == *"--chunk-cache-mib 0"* ]]; then
    row "gateway peak RSS (VmHWM) during those $CLIENTS streams, chunk cache off" \
      "$hwm_mib MiB ($(calc "$rss_before / 1024" 1) MiB before: $above MiB above)" \
      "–" "$(calc "$above / 100")" "≤ 100 MiB above idle" "$(verdict "$above" '<=' 100)"
  else
    row "gateway peak RSS (VmHWM) during those $CLIENTS streams" \
      "$hwm_mib MiB ($(calc "$rss_before / 1024" 1) MiB before: $above MiB above, cache included)" \
      "–" "–" "(info)" "–"
  fi
fi

# ---- Summary ----

END_TIME=$(now)
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
HZ=$(getconf CLK_TCK)
busy=$(($(cpu_busy_ticks) - BUSY_START))
ours=$(($(our_ticks) - OURS_START))
others=$((busy > ours ? busy - ours : 0))
avail=$(calc "($END_TIME - $START_TIME) * $(nproc)" 0)
OTHERS_LINE="CPU time used by other processes during the run ≈ $(calc "$others / $HZ" 0) s of $avail CPU-s available ($(calc "100 * $others / $HZ / $avail" 0)%); this benchmark's processes: $(calc "$ours / $HZ" 0) s"
raw other_processes_cpu_seconds "$(calc "$others / $HZ" 1)"
raw benchmark_cpu_seconds "$(calc "$ours / $HZ" 1)"
{
  echo "## kura gateway end-to-end benchmark ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "- command: \`$(for v in OBJ_MIB GET_RUNS PUT_RUNS WRK_DURATION RANGE_CONNS RANGE_ALIGN RANGE_SMALL_MIB SMALL_SIZE SMALL_CONNS CLIENTS GATEWAY_ARGS; do printf '%s=%q ' "$v" "${!v}"; done)benches/e2e/gateway.sh\`"
  echo "- machine: $(nproc) CPUs ($(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r); data on $FS_DEV ($FS_TYPE)"
  echo "- load average (1/5/15 min): $LOAD_START at start (after the build), $LOAD_END at end (includes the benchmark's own clients); measurements took $(calc "$END_TIME - $START_TIME" 0) s"
  echo "- $OTHERS_LINE"
  echo "- cluster: 3 \`kura node\` processes (zones a/b/c, scrub off) + 1 \`kura gateway\` (N=3 W=2 R=2, 4 MiB chunks), nginx $(nginx -v 2>&1 | sed 's|.*/||') ($WORKERS workers, sendfile), wrk -t$WRK_THREADS, all on 127.0.0.1"
  echo "- MB/s = 10^6 bytes/s. Ratio = kura / baseline (higher is better for rates, lower for latency and time)."
  echo
  echo "| measurement | kura | baseline (same run) | ratio | goal | met |"
  echo "| --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${RESULTS[@]}"
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
