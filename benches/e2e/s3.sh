#!/usr/bin/env bash
# End-to-end benchmark of the S3 API and tus uploads against the native API, measured
# in the same run on the same cluster (see BENCHMARKS.md, "S3 and resumable uploads").
#
# Starts 3 `kura node`s and one `kura gateway --s3-listen` as processes on loopback and
# measures, each S3 number beside the native one:
#   1. PUT of OBJ_MIB (curl -T): native vs S3 presigned PUT (same client, so the
#      difference is the gateway's S3 work: SigV4, MD5)
#   2. GET of it (curl): native vs S3 presigned GET
#   3. random 64 KiB ranges (wrk, 16 conns): native vs S3 presigned GET
#   4. multipart upload of MP_MIB with boto3 (8 threads, 64 MiB parts) vs one native
#      PUT stream of the same bytes (curl)
#   5. tus upload of OBJ_MIB: curl (create + one PATCH) and tuspy (64 MiB pieces) vs
#      the native PUT
#   6. gateway peak RSS while 64 multipart parts of 16 MiB upload at once (boto3)
#
# Chunks are content-addressed: an upload of bytes the cluster already holds stores
# nothing new (a dedup hit skips the write and its fsync). So every timed upload sends
# bytes never sent before (the file is refilled from /dev/urandom, untimed), and the
# objects of a finished phase are deleted and their chunks collected (nodes run with GC
# grace 0 and no periodic pass; `reclaim` runs one between phases) to bound disk use.
#
# Usage: benches/e2e/s3.sh  (needs the release build; scripts/install-deps.sh installs
#        wrk, curl and the Python clients)
# Knobs: OBJ_MIB [1024], MP_MIB [8192], RUNS [3], WRK_DURATION [10], PARTS_AT_ONCE [64],
#        SKIP_BUILD [0], KURA_BIN [], BENCH_TMPDIR [/tmp], KEEP [0],
#        RANGES_ONLY [0] (1: stop after 3., the request-path comparison),
#        OUT [./s3-bench-results.md]
set -euo pipefail

CALLER_PWD="$PWD"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

OBJ_MIB=${OBJ_MIB:-1024}
MP_MIB=${MP_MIB:-8192}
RUNS=${RUNS:-3}
WRK_DURATION=${WRK_DURATION:-10}
WRK_THREADS=${WRK_THREADS:-2}
PARTS_AT_ONCE=${PARTS_AT_ONCE:-64}
SKIP_BUILD=${SKIP_BUILD:-0}
RANGES_ONLY=${RANGES_ONLY:-0}
KEEP=${KEEP:-0}
OUT=${OUT:-s3-bench-results.md}
case "$OUT" in /*) ;; *) OUT="$CALLER_PWD/$OUT" ;; esac
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
VENV=${KURA_TEST_VENV:-/var/tmp/kura-test-venv}
PY="$VENV/bin/python"

API_KEY="bench-api-key-$RANDOM$RANDOM"
SECRET="bench-cluster-secret-$RANDOM$RANDOM$RANDOM"
S3_ACCESS="BENCHACCESS$RANDOM"
S3_SECRET="bench-s3-secret-$RANDOM$RANDOM$RANDOM"

# shellcheck source=lib.sh
. "$HERE/lib.sh"

for tool in wrk curl awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/install-deps.sh)"
done
[ -x "$PY" ] || die "no $PY (run scripts/install-deps.sh)"

find_kura
make_tmp kura-s3
mkdir -p "$TMP/out"
check_fs "the PUT numbers"

# ---- Cluster ----

start_nodes --gc-grace-secs 0 --gc-interval-secs 864000
free_port GW_PORT
free_port S3_PORT
"$KURA" gateway --listen "127.0.0.1:$GW_PORT" --nodes "$NODES_ARG" --api-keys "$API_KEY" \
  --cluster-secret "$SECRET" --s3-listen "127.0.0.1:$S3_PORT" \
  --s3-keys "$S3_ACCESS:$S3_SECRET" >"$TMP/logs/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")
wait_http "http://127.0.0.1:$GW_PORT/health" gateway "$GW_PID"
GW="http://127.0.0.1:$GW_PORT"
S3="http://127.0.0.1:$S3_PORT"
AUTH="Authorization: Bearer $API_KEY"
export AWS_ENDPOINT_URL="$S3" AWS_ACCESS_KEY_ID="$S3_ACCESS" AWS_SECRET_ACCESS_KEY="$S3_SECRET" \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
log "cluster up: gateway $GW, S3 $S3, data in $TMP ($FS_TYPE on $FS_DEV)"

# ---- Helpers ----

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
# gw_cpu: CPU seconds (user + system) the gateway has used so far. Wall times of uploads
# move ±20 % with the disk; the gateway's own CPU per upload is the steadier comparison.
gw_cpu() { awk -v t="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / t }' "/proc/$GW_PID/stat"; }
# cpu_of VAR COMMAND...: runs COMMAND, appends its stdout to array VAR and the gateway
# CPU seconds it took to array VAR_CPU.
cpu_of() {
  local var=$1 c0 out
  shift
  c0=$(gw_cpu)
  out=$("$@")
  eval "$var+=(\"\$out\")"
  eval "${var}_CPU+=(\"$(calc "$(gw_cpu) - $c0" 3)\")"
}
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || log "cannot reset VmHWM of $1"; }
presign() { # presign METHOD KEY
  "$PY" - "$1" "$2" <<'EOF'
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
op = {"GET": "get_object", "PUT": "put_object"}[sys.argv[1]]
print(s3.generate_presigned_url(op, Params={"Bucket": "bench", "Key": sys.argv[2]}, ExpiresIn=3600))
EOF
}
# timed_put URL FILE [HEADER] ; prints seconds, fails unless 2xx
timed_put() {
  local r code t
  r=$(curl -s -o /dev/null -T "$2" ${3:+-H "$3"} -w '%{http_code} %{time_total}' "$1")
  read -r code t <<<"$r"
  [[ $code == 20? ]] || die "PUT $1: HTTP $code"
  echo "$t"
}
# timed_get URL [HEADER] ; prints seconds, fails unless 200 with the whole object
timed_get() {
  local r code size t
  r=$(curl -s -o /dev/null ${2:+-H "$2"} -w '%{http_code} %{size_download} %{time_total}' "$1")
  read -r code size t <<<"$r"
  [ "$code" = 200 ] && [ "$size" = "$OBJ_BYTES" ] || die "GET $1: HTTP $code, $size bytes"
  echo "$t"
}
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "nan" }'
}
run_wrk() { # run_wrk NAME URL KEY ; sets WRK_RPS WRK_P99 WRK_ERRS
  local f="$TMP/out/wrk-$1.txt"
  wrk -t"$WRK_THREADS" -c16 -d"${WRK_DURATION}s" --timeout 30s --latency \
    -s "$HERE/range.lua" "$2" -- "$OBJ_BYTES" 65536 0 "$3" >"$f" 2>&1
  WRK_RPS=$(awk '/^Requests\/sec:/ { print $2 }' "$f")
  WRK_P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$f")")
  local non2xx
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$f")
  WRK_ERRS=${non2xx:-0}
  log "  $1: $WRK_RPS req/s, p99 $WRK_P99 ms, non-2xx $WRK_ERRS"
}
# fresh FILE MIB: refills FILE with bytes no upload has sent yet (untimed).
fresh() { head -c "$(($2 * 1024 * 1024))" /dev/urandom >"$1"; }
# reclaim KEY...: deletes the objects and collects their chunks on every node.
reclaim() {
  local k port
  for k in "$@"; do
    curl -fs -o /dev/null -X DELETE -H "$AUTH" "$GW/v1/o/bench/$k" || die "DELETE $k"
  done
  for port in "${NODE_PORTS[@]}"; do
    curl -fs -o /dev/null -X POST -H "Authorization: Bearer $SECRET" \
      "http://127.0.0.1:$port/v1/gc/run" || die "GC on node :$port"
  done
}
RESULTS=()
row() { RESULTS+=("| $1 | $2 | $3 | $4 |"); }

OBJ_BYTES=$((OBJ_MIB * 1024 * 1024))
curl -fs -o /dev/null -X PUT -H "$AUTH" --data-binary '' "$GW/v1/o/bench/.keep" || true
"$PY" -c 'import boto3; boto3.client("s3").head_bucket(Bucket="bench")'

# ---- 1. PUT ----
log "1. PUT $OBJ_MIB MiB: native vs S3 presigned ($RUNS runs each, alternating which goes first)"
N_PUT=()
S_PUT=()
for i in $(seq 1 "$RUNS"); do
  # Which side goes first alternates (see the tus phase); data synced before each.
  if ((i % 2)); then order="native s3"; else order="s3 native"; fi
  for side in $order; do
    fresh "$TMP/obj.bin" "$OBJ_MIB"
    sync
    case $side in
      native) cpu_of N_PUT timed_put "$GW/v1/o/bench/native-$i" "$TMP/obj.bin" "$AUTH" ;;
      s3)
        url=$(presign PUT "s3-$i")
        cpu_of S_PUT timed_put "$url" "$TMP/obj.bin"
        ;;
    esac
  done
done
n=$(printf '%s\n' "${N_PUT[@]}" | median)
s=$(printf '%s\n' "${S_PUT[@]}" | median)
row "PUT $OBJ_MIB MiB (curl), median s" "$n" "$s" "$(calc "$s / $n")"
n=$(printf '%s\n' "${N_PUT_CPU[@]}" | median)
s=$(printf '%s\n' "${S_PUT_CPU[@]}" | median)
row "PUT $OBJ_MIB MiB, gateway CPU s, median" "$n" "$s" "$(calc "$s / $n")"

# ---- 2. GET ----
log "2. GET $OBJ_MIB MiB: native vs S3 presigned"
GET_URL=$(presign GET s3-1)
N_GET=()
S_GET=()
timed_get "$GW/v1/o/bench/s3-1" "$AUTH" >/dev/null
for i in $(seq 1 "$RUNS"); do
  N_GET+=("$(timed_get "$GW/v1/o/bench/s3-1" "$AUTH")")
  S_GET+=("$(timed_get "$GET_URL")")
done
n=$(printf '%s\n' "${N_GET[@]}" | median)
s=$(printf '%s\n' "${S_GET[@]}" | median)
row "GET $OBJ_MIB MiB (curl), median s" "$n" "$s" "$(calc "$s / $n")"

# ---- 3. Ranges ----
log "3. random 64 KiB ranges, 16 connections"
run_wrk native "$GW/v1/o/bench/s3-1" "$API_KEY"
n_rps=$WRK_RPS n_p99=$WRK_P99
run_wrk s3 "$GET_URL" ""
row "64 KiB ranges, req/s" "$n_rps" "$WRK_RPS" "$(calc "$n_rps / $WRK_RPS")"
row "64 KiB ranges, p99 ms" "$n_p99" "$WRK_P99" "$(calc "$WRK_P99 / $n_p99")"

if [ "$RANGES_ONLY" != 1 ]; then
# ---- 4. Multipart ----
log "4. $MP_MIB MiB: boto3 multipart (8 threads, 64 MiB parts) vs one native PUT stream"
reclaim $(for i in $(seq 1 "$RUNS"); do echo "native-$i s3-$i"; done)
rm -f "$TMP/obj.bin"
fresh "$TMP/mp.bin" "$MP_MIB"
n=$(timed_put "$GW/v1/o/bench/mp-native" "$TMP/mp.bin" "$AUTH")
reclaim mp-native
fresh "$TMP/mp.bin" "$MP_MIB"
t0=$(mono)
"$PY" - "$TMP/mp.bin" <<'EOF'
import sys, boto3
from boto3.s3.transfer import TransferConfig
cfg = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=8)
boto3.client("s3").upload_file(sys.argv[1], "bench", "mp-s3", Config=cfg)
EOF
s=$(calc "$(mono) - $t0")
row "$MP_MIB MiB upload, s (native: one curl PUT; S3: boto3 multipart ×8)" "$n" "$s" "$(calc "$s / $n")"

# ---- 5. tus ----
# The same client for both sides (curl: POST to create, then the whole file in one
# PATCH), so the difference is the gateway's tus work; and tuspy with 64 MiB pieces (a
# real client, what `kura put` sends), whose own Python overhead is part of its time.
log "5. tus upload of $OBJ_MIB MiB (curl: one PATCH; tuspy: 64 MiB pieces) vs native PUT ($RUNS runs each, alternating)"
reclaim mp-s3
rm -f "$TMP/mp.bin"
N_TUS=()
T_CURL=()
T_PIECES=()
tus_curl() { # tus_curl KEY ; prints seconds (create + PATCH), fails unless 204 at the end
  local meta loc r code t0
  meta="bucket $(printf bench | base64 -w0),key $(printf '%s' "$1" | base64 -w0)"
  t0=$(mono)
  loc=$(curl -s -o /dev/null -X POST -H "$AUTH" -H 'Tus-Resumable: 1.0.0' \
    -H "Upload-Length: $OBJ_BYTES" -H "Upload-Metadata: $meta" -w '%header{location}' "$GW/v1/uploads")
  [ -n "$loc" ] || die "tus create gave no Location"
  loc="$GW$loc"
  r=$(curl -s -o /dev/null -X PATCH -H "$AUTH" -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
    -H 'Content-Type: application/offset+octet-stream' -T "$TMP/obj.bin" -w '%{http_code}' "$loc")
  [ "$r" = 204 ] || die "tus PATCH: HTTP $r"
  calc "$(mono) - $t0" 3
}
tus_py() { # tus_py KEY PIECE_BYTES ; prints seconds
  local t0
  t0=$(mono)
  "$PY" "$ROOT/cli/tests/tus/tuspy_client.py" "$GW" "$TMP/obj.bin" bench "$1" "$2" \
    --api-key "$API_KEY" >"$TMP/out/tus.txt"
  grep -q '^done' "$TMP/out/tus.txt" || die "tus upload did not finish"
  calc "$(mono) - $t0" 3
}
for i in $(seq 1 "$RUNS"); do
  # The upload right after a reclaim runs on freshly freed disk and is faster: which
  # side goes first alternates, and the data is synced before each timed upload.
  if ((i % 2)); then order="native curl"; else order="curl native"; fi
  for side in $order; do
    fresh "$TMP/obj.bin" "$OBJ_MIB"
    sync
    case $side in
      native) cpu_of N_TUS timed_put "$GW/v1/o/bench/tus-native-$i" "$TMP/obj.bin" "$AUTH" ;;
      curl) cpu_of T_CURL tus_curl "tus-curl-$i" ;;
    esac
  done
  fresh "$TMP/obj.bin" "$OBJ_MIB"
  sync
  T_PIECES+=("$(tus_py "tus-pieces-$i" $((64 << 20)))")
  reclaim "tus-native-$i" "tus-curl-$i" "tus-pieces-$i"
done
n=$(printf '%s\n' "${N_TUS[@]}" | median)
t=$(printf '%s\n' "${T_CURL[@]}" | median)
row "tus $OBJ_MIB MiB, curl: create + one PATCH vs native PUT (curl), median s" "$n" "$t" "$(calc "$t / $n")"
nc=$(printf '%s\n' "${N_TUS_CPU[@]}" | median)
tc=$(printf '%s\n' "${T_CURL_CPU[@]}" | median)
row "tus $OBJ_MIB MiB, curl vs native PUT, gateway CPU s, median" "$nc" "$tc" "$(calc "$tc / $nc")"
t=$(printf '%s\n' "${T_PIECES[@]}" | median)
row "tus $OBJ_MIB MiB, tuspy 64 MiB pieces vs native PUT (curl), median s" "$n" "$t" "$(calc "$t / $n")"

# ---- 6. Memory ----
log "6. gateway peak RSS with $PARTS_AT_ONCE parts of 16 MiB uploading at once"
reset_hwm "$GW_PID"
base_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$GW_PID/status")
"$PY" - "$PARTS_AT_ONCE" <<'EOF'
import sys, os, boto3
from concurrent.futures import ThreadPoolExecutor
from botocore.config import Config
n = int(sys.argv[1])
s3 = boto3.client("s3", config=Config(max_pool_connections=n))
body = os.urandom(16 << 20)
ups = [s3.create_multipart_upload(Bucket="bench", Key=f"mem/{i}")["UploadId"] for i in range(n)]
with ThreadPoolExecutor(n) as pool:
    list(pool.map(lambda i: s3.upload_part(Bucket="bench", Key=f"mem/{i}", UploadId=ups[i], PartNumber=1, Body=body), range(n)))
for i, u in enumerate(ups):
    s3.abort_multipart_upload(Bucket="bench", Key=f"mem/{i}", UploadId=u)
EOF
peak_kib=$(hwm_kib "$GW_PID")
row "gateway RSS, MiB (before; peak during $PARTS_AT_ONCE concurrent 16 MiB parts)" "$(calc "$base_kib / 1024" 0)" "$(calc "$peak_kib / 1024" 0)" "+$(calc "($peak_kib - $base_kib) / 1024" 0) MiB (bound +$(calc "$PARTS_AT_ONCE * 5 * 4" 0))"

fi # RANGES_ONLY

# ---- Summary ----
{
  echo "S3 and tus vs the native API ($(date -u +%F), $(nproc) cores, $FS_TYPE)"
  echo
  echo "| measurement | native | S3 / tus | S3 or tus cost ÷ native (> 1: slower) |"
  echo "| --- | --- | --- | --- |"
  printf '%s\n' "${RESULTS[@]}"
} | tee "$OUT"
log "summary written to $OUT"
