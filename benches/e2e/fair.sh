#!/usr/bin/env bash
# Time to done of short uploads while a long video transcodes (see BENCHMARKS.md,
# "Fair scheduling").
#
# Through a real cluster of processes on loopback (3 `kura node`, `kura gateway
# --coordinator`, `kura coordinator`, `kura worker`s), for each worker configuration:
#   alone:  SHORTS short clips, one job at a time, then the long video on its own;
#   mixed:  the long video, and FIRST_SHORT_AFTER s later the first of SHORTS short
#           clips, one more every SHORT_EVERY s.
# A job's times are the coordinator's own record: to done, `updated_ms - created_ms` of
# the succeeded job (from submission to the last task's result; uploads are done
# before); to playable, `playable_ms - created_ms` (its first master playlist).
# Reported: p50/p95 of the short clips mixed against their p50 alone, both to playable
# and to done, and the long video mixed against alone (goals in the time-to-playable
# issue: ≤ 2× and ≤ 1.2×). The long video cannot finish sooner than its own work plus
# the short clips' (the same slots do both): "floor" is (long alone + the shorts' alone
# times) / long alone, the best ratio any schedule could reach on these slots.
#
# Usage: benches/e2e/fair.sh        (~10 minutes at default sizes on 2 cores)
# Needs: cargo, ffmpeg, curl, jq, awk.
#
# Knobs (environment), defaults in brackets:
#   CONFIGS ["dev cluster"]   dev: one worker, 1 slot with every core (what `kura dev`
#                             runs); cluster: 2 workers, 1 slot of 1 thread each
#   LONG_SECONDS [120]        the long video, 1280x720 (a 30 s range per encode task)
#   SHORT_SECONDS [10]        each short clip, 1280x720
#   SHORTS [4]                short clips per phase (0: only the long video, alone:
#                             its time to playable and to done)
#   FIRST_SHORT_AFTER [10]    s after the long job's submission
#   SHORT_EVERY [15]          s between short clips
#   PROFILE [default]
#   SKIP_BUILD [0], KURA_BIN [], KEEP [0], BENCH_TMPDIR [$TMPDIR or /tmp]
#   MEDIA_DIR [../shared/media/video], SOURCE_CACHE [$BENCH_TMPDIR/kura-transcode-sources]
#   OUT [$BENCH_TMPDIR/kura-fair-results.md]
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"

CONFIGS=${CONFIGS:-"dev cluster"}
LONG_SECONDS=${LONG_SECONDS:-120}
SHORT_SECONDS=${SHORT_SECONDS:-10}
SHORTS=${SHORTS:-4}
FIRST_SHORT_AFTER=${FIRST_SHORT_AFTER:-10}
SHORT_EVERY=${SHORT_EVERY:-15}
PROFILE=${PROFILE:-default}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
MEDIA_DIR=${MEDIA_DIR:-$ROOT/../shared/media/video}
SOURCE_CACHE=${SOURCE_CACHE:-$BENCH_TMPDIR/kura-transcode-sources}
OUT=${OUT:-$BENCH_TMPDIR/kura-fair-results.md}
FPS=25
API_KEY="bench-api-key-$RANDOM$RANDOM"
SECRET="bench-cluster-secret-$RANDOM$RANDOM$RANDOM"
BUCKET=bench

# shellcheck source=lib.sh
. "$HERE/lib.sh"
for tool in ffmpeg curl jq awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (run scripts/install-deps.sh)"
done

find_kura
make_tmp kura-fair
mkdir -p "$SOURCE_CACHE"
LONG_SRC=$(make_source "$LONG_SECONDS" 1280x720)
SHORT_SRC=$(make_source "$SHORT_SECONDS" 1280x720)
start_transcoding
log "cluster up: gateway $GW, coordinator $CO"

put() { # put FILE KEY
  curl -fsS -o /dev/null -T "$1" -H "$AUTH" -H 'Content-Type: video/mp4' "$GW/v1/o/$BUCKET/$2"
}
submit() { # submit KEY: prints the job id
  curl -fsS -H "$AUTH" -H 'Content-Type: application/json' \
    -d "{\"source\":\"$BUCKET/$1\",\"profile\":\"$PROFILE\"}" "$GW/v1/jobs" | jq -r .id
}
# wait_done ID...: waits until every job succeeded; prints "id seconds_to_done
# seconds_to_playable" for each (playable: the first master playlist was published;
# binaries before progressive readiness: the same as done).
wait_done() {
  local id j state
  for id in "$@"; do
    while :; do
      j=$(curl -fsS -H "$AUTH" "$GW/v1/jobs/$id")
      state=$(jq -r .state <<<"$j")
      case "$state" in
      succeeded) break ;;
      failed | cancelled) die "job $id $state: $j" ;;
      esac
      sleep 1
    done
    echo "$id $(jq -r '"\((.updated_ms - .created_ms) / 1000) \(((.playable_ms // .updated_ms) - .created_ms) / 1000)"' <<<"$j")"
  done
}

put "$LONG_SRC" long.mp4
for i in $(seq 1 "$SHORTS"); do
  put "$SHORT_SRC" "alone-$i.mp4"
  put "$SHORT_SRC" "mixed-$i.mp4"
done
log "uploaded the long video and $((2 * SHORTS)) short clips"

start_workers() { # start_workers CONFIG: sets WPIDS
  local n threads i
  case "$1" in
  dev) n=1 threads=$(nproc) ;;
  cluster) n=2 threads=1 ;;
  *) die "unknown config $1" ;;
  esac
  WPIDS=()
  for i in $(seq 1 "$n"); do
    "$KURA" worker --coordinator "$CO" --gateway "$GW" --api-key "$API_KEY" \
      --cluster-secret "$SECRET" --slots 1 --threads-per-task "$threads" \
      --worker-id "$1-w$i" --workdir "$TMP/work-$1-$i" >"$TMP/logs/worker-$1-$i.log" 2>&1 &
    WPIDS+=($!)
    PIDS+=($!)
  done
  sleep 2 # every worker long-polling before the first job
}
stop_workers() {
  local p
  for p in "${WPIDS[@]}"; do stop_pid "$p"; done
}
pcts() { # pcts FILE COL: "p50 p95" of column COL (nearest rank)
  sort -g -k"$2" "$1" | awk -v c="$2" '{ a[NR] = $c } END { i = int(0.95 * NR + 0.999); printf "%.1f %.1f\n", a[int((NR + 1) / 2)], a[i] }'
}

say() { printf '%s\n' "$*" | tee -a "$TMP/summary.md" >&2; }
say "## fair scheduling benchmark $(date -u +%FT%TZ)"
say ""
say "- kura: \`$KURA\` ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
say "- long: ${LONG_SECONDS} s 1280x720; short: ${SHORT_SECONDS} s 1280x720; profile $PROFILE; $SHORTS short clips, the first ${FIRST_SHORT_AFTER} s after the long job, then every ${SHORT_EVERY} s"
say ""
if [ "$SHORTS" = 0 ]; then
  say "| workers | long: to playable | to done | playable / done |"
  say "| --- | --- | --- | --- |"
  for c in $CONFIGS; do
    start_workers "$c"
    read -r _ d p < <(wait_done "$(submit long.mp4)")
    stop_workers
    log "$c: long done $d s, playable $p s"
    say "| $c | $p s | $d s | $(calc "100 * $p / $d" 0)% |"
  done
  cp "$TMP/summary.md" "$OUT"
  log "summary in $OUT"
  exit 0
fi
say "| workers | to | short alone p50 | short mixed p50 / p95 | **short mixed p50 / alone** | p95 / alone | long alone | long mixed | **long mixed / alone** | floor | short mixed (s) |"
say "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for c in $CONFIGS; do
  start_workers "$c"
  : >"$TMP/$c-alone"
  for i in $(seq 1 "$SHORTS"); do
    wait_done "$(submit "alone-$i.mp4")" >>"$TMP/$c-alone"
  done
  wait_done "$(submit long.mp4)" >"$TMP/$c-long-alone"
  log "$c alone: shorts $(cut -d' ' -f2- "$TMP/$c-alone" | paste -sd' ') s, long $(cut -d' ' -f2- "$TMP/$c-long-alone") s (done playable)"
  long=$(submit long.mp4)
  sleep "$FIRST_SHORT_AFTER"
  ids=()
  for i in $(seq 1 "$SHORTS"); do
    ids+=("$(submit "mixed-$i.mp4")")
    [ "$i" = "$SHORTS" ] || sleep "$SHORT_EVERY"
  done
  wait_done "${ids[@]}" >"$TMP/$c-mixed"
  wait_done "$long" >"$TMP/$c-long-mixed"
  log "$c mixed: shorts $(cut -d' ' -f2- "$TMP/$c-mixed" | paste -sd' ') s, long $(cut -d' ' -f2- "$TMP/$c-long-mixed") s (done playable)"
  stop_workers
  for col in 3 2; do
    label=done
    [ "$col" = 3 ] && label=playable
    read -r a50 _ < <(pcts "$TMP/$c-alone" "$col")
    read -r m50 m95 < <(pcts "$TMP/$c-mixed" "$col")
    la=$(awk -v c="$col" '{ print $c }' "$TMP/$c-long-alone")
    lm=$(awk -v c="$col" '{ print $c }' "$TMP/$c-long-mixed")
    floor=-
    if [ "$col" = 2 ]; then
      floor=$(calc "($la + $(awk '{ s += $2 } END { print s }' "$TMP/$c-alone")) / $la")
    fi
    say "| $c | $label | $a50 s | $m50 / $m95 s | **$(calc "$m50 / $a50")** | $(calc "$m95 / $a50") | $la s | $lm s | **$(calc "$lm / $la")** | $floor | $(awk -v c="$col" '{ print $c }' "$TMP/$c-mixed" | paste -sd' ') |"
  done
done
cp "$TMP/summary.md" "$OUT"
log "summary in $OUT"
