# Shared by the end-to-end benchmark scripts (sourced, not run): logging, arithmetic,
# machine load, the kura binary, the temp dir with its exit trap, loopback ports and
# process start/stop. Callers set ROOT, KEEP, SKIP_BUILD and BENCH_TMPDIR first.

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  log "FAIL: $*"
  exit 1
}
now() { echo "$EPOCHREALTIME"; }
# Monotonic seconds (CLOCK_BOOTTIME, 10 ms resolution): the wall clock of these VMs
# can step, which would corrupt a timing taken with `date` or EPOCHREALTIME.
mono() {
  local up _
  read -r up _ </proc/uptime
  echo "$up"
}
# calc EXPR [DECIMALS]: floating-point arithmetic.
calc() { awk "BEGIN { printf \"%.${2:-2}f\", ($1) }"; }
load1() { cut -d' ' -f1 /proc/loadavg; }
loads() { cut -d' ' -f1-3 /proc/loadavg; }
# busy_cpu: CPU-seconds the whole machine has spent busy since boot (/proc/stat). The
# busy time during a run minus the run's own CPU time is what other processes took:
# the honest measure of interference on a shared machine.
busy_cpu() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }

# find_kura: sets KURA to KURA_BIN, or to the release binary (built unless SKIP_BUILD=1).
find_kura() {
  if [ -n "${KURA_BIN:-}" ]; then
    KURA="$KURA_BIN"
  else
    if [ "$SKIP_BUILD" != 1 ]; then
      log "building kura (release)"
      cargo build --release -p kura >&2
    fi
    KURA="${CARGO_TARGET_DIR:-$ROOT/target}/release/kura"
  fi
  [ -x "$KURA" ] || die "no kura binary at $KURA"
}

# make_tmp NAME: creates TMP under BENCH_TMPDIR (with logs/) and installs the exit trap
# that stops every process in CLIENT_PIDS and PIDS (servers, in reverse order) and
# removes TMP unless KEEP=1.
make_tmp() {
  TMP="$(mktemp -d "$BENCH_TMPDIR/$1.XXXXXX")"
  mkdir -p "$TMP/logs"
  PIDS=()        # servers, stopped in reverse order on exit
  CLIENT_PIDS=() # background clients
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

cleanup() {
  local rc=$?
  set +e
  for p in "${CLIENT_PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[$i]}" 2>/dev/null; done
  for p in "${PIDS[@]}" "${CLIENT_PIDS[@]}"; do
    for _ in $(seq 1 50); do
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  if [ "$KEEP" = 1 ]; then
    log "kept $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}

# stop_pid PID: TERM, up to 5 s, then KILL.
stop_pid() {
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

# check_fs WHAT: sets FS_TYPE and FS_DEV of TMP; warns that WHAT means little on tmpfs.
check_fs() {
  FS_TYPE="$(df -T "$TMP" | awk 'NR == 2 { print $2 }')"
  FS_DEV="$(df -T "$TMP" | awk 'NR == 2 { print $1 }')"
  if [ "$FS_TYPE" = tmpfs ]; then
    log "WARNING: $TMP is on tmpfs; fsync costs nothing there, $1 mean little"
  fi
}

# Free loopback ports below the ephemeral range, so no client socket takes them.
USED_PORTS=" "
free_port() { # free_port VAR
  local p
  for _ in $(seq 1 500); do
    p=$((10000 + RANDOM % 20000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS+="$p "
      printf -v "$1" '%s' "$p"
      return 0
    fi
  done
  die "no free port"
}

wait_http() { # wait_http URL NAME PID
  for _ in $(seq 1 300); do
    if curl -fs -o /dev/null "$1"; then return 0; fi
    kill -0 "$3" 2>/dev/null || die "$2 exited at start (see $TMP/logs)"
    sleep 0.1
  done
  die "$2 did not answer $1"
}

# start_nodes [EXTRA NODE ARGS...]: starts three `kura node`s (node-a..c in zone-a..c,
# data under TMP, cluster secret SECRET, scrub off, plus the extra arguments) on free
# ports, waits for their health, and sets NODE_PORTS, NODE_PIDS and NODES_ARG (the
# gateway's --nodes value).
start_nodes() {
  NODE_PORTS=()
  NODE_PIDS=()
  NODES_ARG=""
  local z port i
  for z in a b c; do
    free_port port
    "$KURA" node --data "$TMP/node-$z" --listen "127.0.0.1:$port" --node-id "node-$z" \
      --zone "zone-$z" --cluster-secret "$SECRET" --scrub-bytes-per-sec 0 "$@" \
      >"$TMP/logs/node-$z.log" 2>&1 &
    PIDS+=($!)
    NODE_PIDS+=($!)
    NODE_PORTS+=("$port")
    NODES_ARG+="${NODES_ARG:+,}node-$z=127.0.0.1:$port@zone-$z"
  done
  for i in 0 1 2; do
    wait_http "http://127.0.0.1:${NODE_PORTS[$i]}/health" "node $i" "${NODE_PIDS[$i]}"
  done
}

# make_source SECONDS WxH: prints the path of a cached source of that length and size
# (callers set FPS, MEDIA_DIR and SOURCE_CACHE): Big Buck Bunny 5 s + a screencast 8 s
# from MEDIA_DIR at FPS, concatenated and looped, H.264 CRF 18 + AAC stereo.
make_source() {
  local secs=$1 size=$2 w h
  w=${size%x*}
  h=${size#*x}
  local src="$SOURCE_CACHE/src-${secs}s-${w}x${h}.mp4"
  if [ ! -s "$src" ]; then
    local pair="$SOURCE_CACHE/pair-${w}x${h}.mkv"
    if [ ! -s "$pair" ]; then
      log "generating $pair"
      local v="fps=$FPS,scale=$w:$h,setsar=1,format=yuv420p"
      local a="aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo"
      ffmpeg -nostdin -v error -y -i "$MEDIA_DIR/bbb-720p-5s-aac51.mp4" -i "$MEDIA_DIR/hello-720p-8s.mp4" \
        -filter_complex "[0:v]$v[v0];[0:a]$a[a0];[1:v]$v[v1];[1:a]$a[a1];[v0][a0][v1][a1]concat=n=2:v=1:a=1[v][a]" \
        -map '[v]' -map '[a]' -c:v ffv1 -c:a pcm_s16le "$pair.tmp.mkv"
      mv "$pair.tmp.mkv" "$pair"
    fi
    log "generating $src (${secs} s ${w}x${h})"
    ffmpeg -nostdin -v error -y -stream_loop -1 -i "$pair" -t "$secs" \
      -c:v libx264 -preset fast -crf 18 -g $((2 * FPS)) -pix_fmt yuv420p \
      -c:a aac -b:a 128k -movflags +faststart "$src.tmp.mp4"
    mv "$src.tmp.mp4" "$src"
  fi
  echo "$src"
}

# start_transcoding: start_nodes, then `kura coordinator` and `kura gateway
# --coordinator` on free ports (keys API_KEY, secret SECRET); sets CO, GW, AUTH.
start_transcoding() {
  start_nodes
  local co_port gw_port
  free_port co_port
  free_port gw_port
  CO="http://127.0.0.1:$co_port"
  GW="http://127.0.0.1:$gw_port"
  "$KURA" coordinator --data "$TMP/coordinator" --listen "127.0.0.1:$co_port" \
    --api-keys "$API_KEY" --cluster-secret "$SECRET" --gateway "$GW" --gateway-api-key "$API_KEY" \
    >"$TMP/logs/coordinator.log" 2>&1 &
  PIDS+=($!)
  wait_http "$CO/health" coordinator "$!"
  "$KURA" gateway --listen "127.0.0.1:$gw_port" --nodes "$NODES_ARG" --api-keys "$API_KEY" \
    --cluster-secret "$SECRET" --coordinator "$CO" \
    >"$TMP/logs/gateway.log" 2>&1 &
  PIDS+=($!)
  wait_http "$GW/health" gateway "$!"
  AUTH="Authorization: Bearer $API_KEY"
}
