#!/usr/bin/env bash
# End-to-end transcoding benchmarks (see BENCHMARKS.md, "Transcoding").
#
#   single: one rendition through kura's media engine, run exactly as a worker runs it
#           (`kura media-exec`, a JSON request on stdin, no upload or download), against
#           the `ffmpeg` CLI with the same x264 settings on the same source, alternating,
#           RUNS times each; then PSNR/SSIM of both outputs against the source.
#   scale:  one long job through a real cluster of processes on loopback (3 `kura node`,
#           `kura gateway --coordinator`, `kura coordinator`, `kura worker`s): wall time
#           from `POST /v1/jobs` to `succeeded` with 1 worker, with 2 workers, and with
#           1 worker using 2 codec threads.
#
# Sources are generated with the ffmpeg CLI from the clips in shared/media/video (Big
# Buck Bunny 5 s + a screencast 8 s, both turned into 25 fps, concatenated and looped,
# H.264 CRF 18 + AAC stereo) and cached in SOURCE_CACHE, so only the first run pays.
#
# Usage: benches/e2e/transcode.sh         (~15 minutes at default sizes on 2 cores)
# Needs: cargo, ffmpeg, ffprobe, curl, awk.
#
# Knobs (environment), defaults in brackets:
#   PHASES ["single scale"]        which benchmarks to run
#   SINGLE_SECONDS [60]            length of the single-rendition source, seconds
#   SINGLE_SIZE [1280x720]         its size
#   SINGLE_RUNG [1280x720@4500]    the rendition: WxH@kbit/s
#   SINGLE_THREADS ["1 2"]         codec thread counts to compare (each a separate row)
#   SINGLE_RUNS [3]                timed runs per side and thread count (median taken)
#   SINGLE_QUALITY ["0 1"]         0: encode only, on both sides (the same work);
#                                  1: kura measures PSNR/SSIM while encoding (as a
#                                  job does), the CLI encodes and then measures them
#                                  with its psnr/ssim filters (the same results)
#   SCALE_SECONDS [360]            length of the long source, seconds
#   SCALE_SIZE [1280x720]          its size
#   SCALE_PROFILE [default]        profile of the job (default: 5 rungs on a 720p source)
#   SCALE_CONFIGS ["1x1 2x1 1x2"]  WORKERSxTHREADS_PER_TASK, each worker --slots 1
#   SCALE_REPS [1]                 jobs per config (configs interleaved)
#   CONTENDED [0.1]                a run during which other processes used more CPU
#                                  than this fraction of the run's own is marked * and
#                                  left out of the medians (unless no run is clean)
#   WAIT_LOAD []                   e.g. 0.6: before measuring, wait until the 1-minute
#                                  load average is below it ...
#   WAIT_LOAD_MAX [1200]           ... but at most this many seconds; between two
#                                  scale jobs, wait (as long) until the machine used
#   WAIT_IDLE_CORES [0.3]          less than this many cores over 10 s
#   SKIP_BUILD [0]                 1: use the existing release binary
#   KURA_BIN []                    binary to use (implies no build)
#   MEDIA_DIR [../shared/media/video]  where the clips are
#   BENCH_TMPDIR [$TMPDIR or /tmp] scratch space
#   SOURCE_CACHE [$BENCH_TMPDIR/kura-transcode-sources]
#   KEEP [0]                       1: keep the temp dir (outputs, logs)
#   OUT [$BENCH_TMPDIR/kura-transcode-results.md]  where the summary goes
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

PHASES=${PHASES:-"single scale"}
SINGLE_SECONDS=${SINGLE_SECONDS:-60}
SINGLE_SIZE=${SINGLE_SIZE:-1280x720}
SINGLE_RUNG=${SINGLE_RUNG:-1280x720@4500}
SINGLE_THREADS=${SINGLE_THREADS:-"1 2"}
SINGLE_RUNS=${SINGLE_RUNS:-3}
SINGLE_QUALITY=${SINGLE_QUALITY:-"0 1"}
SCALE_SECONDS=${SCALE_SECONDS:-360}
SCALE_SIZE=${SCALE_SIZE:-1280x720}
SCALE_PROFILE=${SCALE_PROFILE:-default}
SCALE_CONFIGS=${SCALE_CONFIGS:-"1x1 2x1 1x2"}
SCALE_REPS=${SCALE_REPS:-1}
CONTENDED=${CONTENDED:-0.1}
WAIT_LOAD=${WAIT_LOAD:-}
WAIT_LOAD_MAX=${WAIT_LOAD_MAX:-1200}
WAIT_IDLE_CORES=${WAIT_IDLE_CORES:-0.3}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
MEDIA_DIR=${MEDIA_DIR:-$ROOT/../shared/media/video}
SOURCE_CACHE=${SOURCE_CACHE:-$BENCH_TMPDIR/kura-transcode-sources}
OUT=${OUT:-$BENCH_TMPDIR/kura-transcode-results.md}

# The profile's segment and GOP lengths (transcoder/src/profile.rs: every profile).
SEGMENT_SECONDS=6
GOP_SECONDS=2
FPS=25 # the generated sources' frame rate

# The engine's x264 settings (transcoder/src/media/video.rs), for the CLI baseline.
X264_PRESET=veryfast
MAXRATE_FACTOR=1.1
BUFSIZE_FACTOR=2.0

API_KEY="bench-api-key-$RANDOM$RANDOM"
SECRET="bench-cluster-secret-$RANDOM$RANDOM$RANDOM"
BUCKET=bench

# shellcheck source=lib.sh
. "$HERE/lib.sh"
# clean FILE CPU_COL OTHER_COL: the lines of a times file whose run was not contended
# (other processes used at most CONTENDED × the run's own CPU time), or every line if
# no run was clean. runs FILE WALL_COL CPU_COL OTHER_COL: the walls, contended ones
# marked with *.
clean() {
  local c
  c=$(awk -v c="$2" -v o="$3" -v f="$CONTENDED" '$o <= f * $c' "$1")
  if [ -n "$c" ]; then echo "$c"; else cat "$1"; fi
}
runs() { awk -v w="$2" -v c="$3" -v o="$4" -v f="$CONTENDED" '{ printf "%s%s%s", sep, $w, ($o > f * $c ? "*" : ""); sep = " " }' "$1"; }
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

for tool in ffmpeg ffprobe curl awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/install-deps.sh)"
done
for clip in bbb-720p-5s-aac51.mp4 hello-720p-8s.mp4; do
  [ -f "$MEDIA_DIR/$clip" ] || die "no $MEDIA_DIR/$clip (set MEDIA_DIR)"
done

# ---- Build ----

find_kura

# ---- Temp dir, processes, cleanup ----

make_tmp kura-transcode
mkdir -p "$SOURCE_CACHE"

# ---- Sources ----

src_desc() { # one line describing a source file
  local f=$1
  ffprobe -v error -select_streams v:0 -count_packets \
    -show_entries stream=codec_name,profile,width,height,r_frame_rate,nb_read_packets:format=duration,bit_rate \
    -of default=nw=1 "$f" | tr '\n' ' '
}

wait_quiet() {
  [ -n "$WAIT_LOAD" ] || return 0
  local waited=0
  while awk "BEGIN { exit !($(load1) >= $WAIT_LOAD) }"; do
    if [ "$waited" -ge "$WAIT_LOAD_MAX" ]; then
      log "load still $(load1) after ${waited}s; running anyway"
      return 0
    fi
    log "waiting for load < $WAIT_LOAD (now $(loads))"
    sleep 15
    waited=$((waited + 15))
  done
  log "load now $(loads)"
}

# wait_idle: between two jobs the load average still counts the previous job for
# minutes, so measure instead: wait until the whole machine used less than
# WAIT_IDLE_CORES cores over 10 s (this script's processes are idle meanwhile).
wait_idle() {
  [ -n "$WAIT_LOAD" ] || return 0
  local waited=0 b0 b1 used
  while :; do
    b0=$(busy_cpu)
    sleep 10
    b1=$(busy_cpu)
    used=$(calc "($b1 - $b0) / 10" 2)
    awk "BEGIN { exit !($used < $WAIT_IDLE_CORES) }" && break
    waited=$((waited + 10))
    if [ "$waited" -ge "$WAIT_LOAD_MAX" ]; then
      log "machine still busy ($used cores) after ${waited}s; running anyway"
      return 0
    fi
    log "waiting for an idle machine (< $WAIT_IDLE_CORES cores busy; now $used, load $(loads))"
  done
  log "machine idle ($used cores busy over 10 s; load $(loads))"
}

SUMMARY="$TMP/summary.md"
: >"$SUMMARY"
say() { printf '%s\n' "$*" | tee -a "$SUMMARY" >&2; }

# Prepare every source before waiting for a quiet machine (generation is CPU-heavy).
SINGLE_SRC=""
SCALE_SRC=""
[[ " $PHASES " == *" single "* ]] && SINGLE_SRC=$(make_source "$SINGLE_SECONDS" "$SINGLE_SIZE")
[[ " $PHASES " == *" scale "* ]] && SCALE_SRC=$(make_source "$SCALE_SECONDS" "$SCALE_SIZE")

wait_quiet

say "## transcode benchmark $(date -u +%FT%TZ)"
say ""
if [ -n "${KURA_BIN:-}" ]; then
  say "- kura: \`$KURA\` (given as KURA_BIN; the repository is at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
else
  say "- kura: \`$KURA\` (built from $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ', working tree dirty'))"
fi
say "- $(ffmpeg -version | head -1); libx264 $(dpkg-query -W -f '${Version}' 'libx264-*' 2>/dev/null || echo '?')"
say "- machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
say "- load average at start: $(loads)"

# ============================================================================
# single: one rendition, kura media-exec vs the ffmpeg CLI
# ============================================================================

# cpu_of FILE: user+sys seconds from a `/usr/bin/time -f '%U %S'` output file.
cpu_of() { awk 'END { printf "%.2f", $1 + $2 }' "$1"; }

run_kura_single() { # run_kura_single THREADS QUALITY OUTDIR TIMEFILE
  local t=$1 q=$2 out=$3 tf=$4 w h kbps measure=false
  [ "$q" = 1 ] && measure=true
  w=${SINGLE_RUNG%%x*}
  h=${SINGLE_RUNG#*x}
  h=${h%@*}
  kbps=${SINGLE_RUNG#*@}
  cat >"$TMP/single-req-$t-$q.json" <<EOF
{"op":"video","input":"$SINGLE_SRC","out_dir":"$out","start_s":0,"end_s":null,"first_segment":0,"segment_seconds":$SEGMENT_SECONDS,"gop_seconds":$GOP_SECONDS,"rungs":[{"width":$w,"height":$h,"video_kbps":$kbps}],"threads":$t,"quality":$measure}
EOF
  # As the worker runs it (worker/child.rs): a cleared environment, KURA_LOG=error.
  /usr/bin/time -f '%U %S' -o "$tf" env -i KURA_LOG=error "$KURA" media-exec \
    <"$TMP/single-req-$t-$q.json" >"$out.jsonl"
  grep -q '^{"ok"' "$out.jsonl" || die "kura media-exec failed: $(tail -c 500 "$out.jsonl")"
  if [ "$q" = 1 ]; then
    grep -q '"quality":\[{' "$out.jsonl" || die "kura measured no quality: $(tail -c 500 "$out.jsonl")"
  fi
}

run_cli_single() { # run_cli_single THREADS QUALITY OUTDIR TIMEFILE
  local t=$1 q=$2 out=$3 tf=$4 w h kbps
  w=${SINGLE_RUNG%%x*}
  h=${SINGLE_RUNG#*x}
  h=${h%@*}
  kbps=${SINGLE_RUNG#*@}
  mkdir -p "$out"
  # The same work as encode_video_range: decode with T frame threads, scale to the
  # rung (a pass-through when the size is the source's), libx264 with the engine's
  # preset/profile/VBV, GOP ceil(2 s × fps) + 1, IDR forced on the first frame at or
  # after every 2 s, no scene-cut keyframes, closed GOPs, 6 s MPEG-TS segments.
  /usr/bin/time -f '%U %S' -o "$tf" ffmpeg -nostdin -v error -y -threads "$t" -i "$SINGLE_SRC" \
    -map 0:v:0 -an -sn -dn -vf "scale=$w:$h,setsar=1,format=yuv420p" \
    -c:v libx264 -preset "$X264_PRESET" -profile:v high \
    -b:v "${kbps}k" -maxrate "$(calc "$kbps * $MAXRATE_FACTOR" 0)k" -bufsize "$(calc "$kbps * $BUFSIZE_FACTOR" 0)k" \
    -g $((GOP_SECONDS * FPS + 1)) -force_key_frames "expr:gte(t,n_forced*$GOP_SECONDS)" -forced-idr 1 \
    -x264-params scenecut=0:open-gop=0 -threads "$t" \
    -f hls -hls_time "$SEGMENT_SECONDS" -hls_list_size 0 -hls_playlist_type vod \
    -hls_segment_filename "$out/seg%05d.ts" "$out/index.m3u8"
}

# quality OUT_TS: "PSNR_avg PSNR_y SSIM_all frames" of OUT_TS against the single source.
quality() {
  local ts=$1 log
  log=$(ffmpeg -nostdin -hide_banner -i "$ts" -i "$SINGLE_SRC" -lavfi \
    "[0:v]setpts=PTS-STARTPTS,split[d1][d2];[1:v]setpts=PTS-STARTPTS,split[r1][r2];[d1][r1]psnr;[d2][r2]ssim" \
    -f null - 2>&1)
  local psnr_avg psnr_y ssim frames
  psnr_avg=$(sed -n 's/.*PSNR .*average:\([0-9.inf]*\).*/\1/p' <<<"$log" | tail -1)
  psnr_y=$(sed -n 's/.*PSNR y:\([0-9.inf]*\).*/\1/p' <<<"$log" | tail -1)
  ssim=$(sed -n 's/.*SSIM .*All:\([0-9.]*\).*/\1/p' <<<"$log" | tail -1)
  frames=$(ffprobe -v error -select_streams v:0 -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$ts" | head -1 | tr -d ' \n')
  echo "$psnr_avg $psnr_y $ssim $frames"
}

# outinfo DIR CONCATENATED_TS: "segments kbit/s keyframes" (size over the source duration).
outinfo() {
  local dir=$1 ts=$2 segs bytes dur keys
  segs=$(find "$dir" -name 'seg*.ts' | wc -l)
  bytes=$(stat -c %s "$ts")
  dur=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$SINGLE_SRC")
  keys=$(ffprobe -v error -select_streams v:0 -show_entries packet=flags -of csv=p=0 "$ts" | grep -c K || true)
  echo "$segs $(calc "$bytes * 8 / $dur / 1000" 0) $keys"
}

# cli_measure THREADS OUTDIR TIMEFILE: the CLI's PSNR/SSIM of OUTDIR's segments against
# the source (what kura measures while encoding), with the same thread count.
cli_measure() {
  local t=$1 out=$2 tf=$3
  find "$out" -name 'seg*.ts' | sort | xargs cat >"$out.measured.ts"
  /usr/bin/time -f '%U %S' -o "$tf" ffmpeg -nostdin -v error -threads "$t" -i "$out.measured.ts" \
    -threads "$t" -i "$SINGLE_SRC" -filter_threads "$t" -lavfi \
    "[0:v]setpts=PTS-STARTPTS,split[d1][d2];[1:v]setpts=PTS-STARTPTS,split[r1][r2];[d1][r1]psnr;[d2][r2]ssim" \
    -f null -
}

if [ -n "$SINGLE_SRC" ]; then
  log "single: source $(src_desc "$SINGLE_SRC")"
  SROWS=() # THREADS-qQUALITY
  for t in $SINGLE_THREADS; do
    for q in $SINGLE_QUALITY; do
      k="$t-q$q"
      : >"$TMP/kura-$k.times"
      : >"$TMP/cli-$k.times"
      for r in $(seq 1 "$SINGLE_RUNS"); do
        if [ $((r % 2)) = 1 ]; then order="kura cli"; else order="cli kura"; fi
        for side in $order; do
          out="$TMP/single/$side-$k"
          rm -rf "$out" "$out.jsonl" "$out.measured.ts"
          mkdir -p "$TMP/single"
          l0=$(load1)
          b0=$(busy_cpu)
          t0=$(mono)
          "run_${side}_single" "$t" "$q" "$out" "$TMP/time"
          cpu=$(cpu_of "$TMP/time")
          if [ "$side" = cli ] && [ "$q" = 1 ]; then
            cli_measure "$t" "$out" "$TMP/time"
            cpu=$(calc "$cpu + $(cpu_of "$TMP/time")" 2)
          fi
          t1=$(mono)
          b1=$(busy_cpu)
          wall=$(calc "$t1 - $t0" 2)
          other=$(calc "$b1 - $b0 - $cpu" 1)
          echo "$wall $cpu $other" >>"$TMP/$side-$k.times"
          log "single threads=$t quality=$q run $r $side: ${wall} s wall, ${cpu} s CPU, others ${other} CPU s (load before: $l0)"
        done
      done
      SROWS+=("$k")
    done
  done
  LOAD_AFTER_SINGLE=$(loads)

  log "single: quality of the outputs (PSNR/SSIM against the source, untimed)"
  for k in "${SROWS[@]}"; do
    for side in kura cli; do
      dir="$TMP/single/$side-$k"
      if [ "$side" = kura ]; then dir="$dir/v${SINGLE_RUNG#*x}"; dir="${dir%@*}p"; fi
      find "$dir" -name 'seg*.ts' | sort | xargs cat >"$TMP/single/$side-$k.ts"
      echo "$(quality "$TMP/single/$side-$k.ts") $(outinfo "$dir" "$TMP/single/$side-$k.ts")" \
        >"$TMP/$side-$k.quality"
    done
  done

  say ""
  say "### single rendition: $SINGLE_RUNG, kura media-exec vs ffmpeg CLI"
  say ""
  say "source: \`$(basename "$SINGLE_SRC")\`: $(src_desc "$SINGLE_SRC")"
  say ""
  say "quality 0: both sides only encode. quality 1: kura measures PSNR/SSIM while encoding (as every job does); the CLI encodes, then measures them with its psnr/ssim filters (same thread count)."
  say "Medians over the runs not contended (marked *: other processes used > ${CONTENDED} × the run's CPU)."
  say ""
  say "| threads | quality | kura wall (median) | CLI wall (median) | **kura/CLI** | kura CPU | CLI CPU | kura runs (s) | CLI runs (s) | other processes' CPU s during kura / CLI runs |"
  say "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for k in "${SROWS[@]}"; do
    kf="$TMP/kura-$k.times"
    cf="$TMP/cli-$k.times"
    kw=$(clean "$kf" 2 3 | awk '{ print $1 }' | median)
    cw=$(clean "$cf" 2 3 | awk '{ print $1 }' | median)
    kc=$(clean "$kf" 2 3 | awk '{ print $2 }' | median)
    cc=$(clean "$cf" 2 3 | awk '{ print $2 }' | median)
    say "| ${k%-q*} | ${k#*-q} | $kw s | $cw s | **$(calc "$kw / $cw" 3)** | $kc s | $cc s | $(runs "$kf" 1 2 3) | $(runs "$cf" 1 2 3) | $(awk '{ print $3 }' "$kf" | paste -sd' ') / $(awk '{ print $3 }' "$cf" | paste -sd' ') |"
  done
  say ""
  say "| threads | quality | side | PSNR avg (dB) | PSNR Y (dB) | SSIM All | frames | segments | kbit/s | keyframes |"
  say "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for k in "${SROWS[@]}"; do
    for side in kura cli; do
      read -r pa py ss fr sg kb ky <"$TMP/$side-$k.quality"
      say "| ${k%-q*} | ${k#*-q} | $side | $pa | $py | $ss | $fr | $sg | $kb | $ky |"
    done
  done
  say ""
  say "load average after the timed runs: $LOAD_AFTER_SINGLE"
fi

# ============================================================================
# scale: one long job on a cluster of processes, 1 vs 2 workers
# ============================================================================


# cpu_secs PID: user+sys of the process and its reaped children (the media-exec children).
cpu_secs() {
  [ -r "/proc/$1/stat" ] || {
    echo 0
    return
  }
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15 + $16 + $17) / hz }' "/proc/$1/stat"
}

# task_times LOG...: "kind seconds" per task, from the workers' "task started/finished"
# log lines (their timestamps; a run must not cross midnight UTC).
task_times() {
  sed 's/\x1b\[[0-9;]*m//g' "$@" | awk '
    function secs(ts,   t) { t = substr(ts, 12, 15); split(t, p, ":"); return p[1] * 3600 + p[2] * 60 + p[3] }
    / task started / { for (i = 1; i <= NF; i++) { if ($i ~ /^task=/) id = substr($i, 6); if ($i ~ /^kind=/) k = substr($i, 6) }
                       start[id] = secs($1); kind[id] = k }
    / task finished / { for (i = 1; i <= NF; i++) if ($i ~ /^task=/) id = substr($i, 6)
                        if (id in start) printf "%s %.2f\n", kind[id], secs($1) - start[id] }'
}
busy_of() { task_times "$1" | awk '{ s += $2 } END { printf "%.0f", s }'; }

if [ -n "$SCALE_SRC" ]; then
  start_transcoding
  log "cluster up: gateway $GW, coordinator $CO, nodes ${NODE_PORTS[*]}"

  KEY="long-${SCALE_SECONDS}s.mp4"
  t0=$(mono)
  curl -fsS -o /dev/null -T "$SCALE_SRC" -H "$AUTH" -H 'Content-Type: video/mp4' "$GW/v1/o/$BUCKET/$KEY"
  log "uploaded $KEY ($(stat -c %s "$SCALE_SRC") bytes) in $(calc "$(mono) - $t0") s"

  # run_job WORKERS THREADS REP: appends "wall cpu tasks_per_worker busy_s_per_worker"
  # to scale-WxT.times
  # (runs in this shell, so the workers are in PIDS for the exit trap).
  run_job() {
    local nw=$1 nt=$2 rep=$3 wpids=() i
    for i in $(seq 1 "$nw"); do
      "$KURA" worker --coordinator "$CO" --gateway "$GW" --api-key "$API_KEY" \
        --cluster-secret "$SECRET" --slots 1 --threads-per-task "$nt" \
        --worker-id "w$i-${nw}x$nt-$rep" --workdir "$TMP/work-w$i" \
        >"$TMP/logs/worker-${nw}x$nt-$rep-w$i.log" 2>&1 &
      wpids+=($!)
      PIDS+=($!)
    done
    sleep 2 # let every worker start long-polling the coordinator
    for p in "${wpids[@]}"; do kill -0 "$p" 2>/dev/null || die "a worker exited at start"; done
    local l0 job id state j t0 t1
    local k0 k1 b0 b1 p
    k0=0
    for p in "${PIDS[@]}"; do k0=$(calc "$k0 + $(cpu_secs "$p")" 2); done
    l0=$(loads)
    b0=$(busy_cpu)
    t0=$(mono)
    job=$(curl -fsS -H "$AUTH" -H 'Content-Type: application/json' \
      -d "{\"source\":\"$BUCKET/$KEY\",\"profile\":\"$SCALE_PROFILE\"}" "$GW/v1/jobs")
    id=$(sed -n 's/^{"id":"\([^"]*\)".*/\1/p' <<<"$job")
    [ -n "$id" ] || die "no job id in $job"
    while :; do
      j=$(curl -fsS -H "$AUTH" "$GW/v1/jobs/$id") || j=""
      state=$(sed -n 's/.*"state":"\([a-z]*\)".*/\1/p' <<<"$j")
      case "$state" in
      succeeded) break ;;
      failed | cancelled) die "job $id $state: $j" ;;
      esac
      sleep 0.5
    done
    t1=$(mono)
    b1=$(busy_cpu)
    k1=0
    for p in "${PIDS[@]}"; do k1=$(calc "$k1 + $(cpu_secs "$p")" 2); done
    # Other processes' CPU: everything busy minus the cluster's and workers' own (the
    # status polls, ~2 curl/s, count as "other").
    local other
    other=$(calc "$b1 - $b0 - ($k1 - $k0)" 1)
    local cpu=0 tasks="" busy="" wl
    for i in "${!wpids[@]}"; do
      cpu=$(calc "$cpu + $(cpu_secs "${wpids[$i]}")" 1)
    done
    for i in "${!wpids[@]}"; do
      stop_pid "${wpids[$i]}"
      wl="$TMP/logs/worker-${nw}x$nt-$rep-w$((i + 1)).log"
      tasks+="${tasks:+/}$(grep -c 'task finished' "$wl" || true)"
      busy+="${busy:+/}$(busy_of "$wl")"
    done
    echo "$j" >"$TMP/job-${nw}x$nt-$rep.json"
    log "job ${nw} worker(s) x ${nt} thread(s), rep $rep: $(calc "$t1 - $t0") s, workers $cpu CPU s, others $other CPU s (load before: $l0; after: $(loads))"
    echo "$(calc "$t1 - $t0") $cpu $tasks $busy $other" >>"$TMP/scale-${nw}x$nt.times"
  }

  for rep in $(seq 1 "$SCALE_REPS"); do
    order=$SCALE_CONFIGS # odd reps in the given order, even reps reversed
    if [ $((rep % 2)) = 0 ]; then order=$(tr ' ' '\n' <<<"$SCALE_CONFIGS" | tac | paste -sd' '); fi
    for c in $order; do
      wait_idle
      run_job "${c%x*}" "${c#*x}" "$rep"
    done
  done
  RUNGS=$(grep -o '"name":"v[0-9]*p"' "$TMP/job-${SCALE_CONFIGS%% *}-1.json" | sort -u -V |
    sed 's/"name":"\(.*\)"/\1/' | paste -sd' ')
  TASKS=$(grep -o '"tasks":\[[^]]*\]' "$TMP/job-${SCALE_CONFIGS%% *}-1.json" | grep -o '","' | wc -l)

  say ""
  say "### one long job, ${SCALE_PROFILE} profile, 1 vs 2 workers"
  say ""
  say "source: \`$KEY\`: $(src_desc "$SCALE_SRC")"
  say "renditions: $RUNGS; tasks: $((TASKS + 1)) (plan, encode ranges of 30 s, audio, images, finalize)"
  say ""
  base=$(clean "$TMP/scale-${SCALE_CONFIGS%% *}.times" 2 5 | awk '{ print $1 }' | median)
  say "Medians over the jobs not contended (marked *: other processes used > ${CONTENDED} × the job's CPU)."
  say ""
  say "| workers × threads/task | job wall (median) | speedup vs ${SCALE_CONFIGS%% *} | CPU s (workers + children) | CPU utilisation of $(nproc) cores | tasks per worker | busy s per worker | runs (s) | other processes' CPU s per run |"
  say "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for c in $SCALE_CONFIGS; do
    w=$(clean "$TMP/scale-$c.times" 2 5 | awk '{ print $1 }' | median)
    cpu=$(clean "$TMP/scale-$c.times" 2 5 | awk '{ print $2 }' | median)
    tasks=$(awk '{ print $3 }' "$TMP/scale-$c.times" | paste -sd' ')
    busy=$(awk '{ print $4 }' "$TMP/scale-$c.times" | paste -sd' ')
    say "| $c | $w s | **$(calc "$base / $w" 2)** | $cpu | $(calc "100 * $cpu / ($w * $(nproc))" 0)% | $tasks | $busy | $(runs "$TMP/scale-$c.times" 1 2 5) | $(awk '{ print $5 }' "$TMP/scale-$c.times" | paste -sd' ') |"
  done
  say ""
  say "task durations (s), first job of each config (from the workers' logs):"
  say ""
  say "| config | plan | encode (30 s ranges): median, min–max, count | audio | images | finalize |"
  say "| --- | --- | --- | --- | --- | --- |"
  for c in $SCALE_CONFIGS; do
    task_times "$TMP/logs/worker-$c-1-w"*.log >"$TMP/tasks-$c"
    one() { awk -v k="$1" '$1 == k { printf "%s%s", sep, $2; sep = " " }' "$TMP/tasks-$c"; }
    enc=$(awk '$1 == "encode" { print $2 }' "$TMP/tasks-$c" | median)
    encr=$(awk '$1 == "encode" { print $2 }' "$TMP/tasks-$c" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1; n++ } END { printf "%s–%s, %d", lo, hi, n }')
    say "| $c | $(one plan) | $enc, $encr | $(one audio) | $(one images) | $(one finalize) |"
  done
fi

say ""
say "load average at the end: $(loads)"
cp "$SUMMARY" "$OUT"
log "summary written to $OUT"
