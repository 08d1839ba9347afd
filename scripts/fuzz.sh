#!/usr/bin/env bash
# Runs kura's fuzz targets (fuzz/, cargo-fuzz + libFuzzer with AddressSanitizer).
#   scripts/fuzz.sh SECONDS [TARGET...]   each target for SECONDS (default: all targets)
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`); without them it says so and replays the corpus and past
# findings on stable instead (fuzz/tests/corpus.rs). Runs use a fixed seed, so a run is
# repeatable; new inputs libFuzzer finds are kept in fuzz/corpus/. A crash leaves its
# input in fuzz/artifacts/; copy it to fuzz/regressions/TARGET/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/kura-fuzz-target}"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(range conditional names tokens records node_wire)
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain with cargo-fuzz here; replaying the corpus on stable" >&2
    exec cargo test --locked --release
fi
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
    echo "== $t: ${secs}s"
    log="$(mktemp)"
    status=0
    cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -seed=20261203 \
        -max_len=4096 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E "^(stat::number_of_executed_units|stat::peak_rss)" "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -60 "$log"
        echo "fuzz.sh: $t FAILED (input in fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    rm -f "$log"
done
