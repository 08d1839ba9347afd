#!/usr/bin/env bash
# Runs kura's whole test suite: unit, property and multi-process tests (real RocksDB,
# real files, real processes on loopback). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
# Property tests draw from a fixed seed, so a run is reproducible; they must pass under
# any seed (try PROPTEST_RNG_SEED=N ./scripts/test.sh).
export PROPTEST_RNG_SEED="${PROPTEST_RNG_SEED:-20261203}"
# The multi-process tests' data, sizes and choices, likewise (any seed must pass).
export GATEWAY_TEST_SEED="${GATEWAY_TEST_SEED:-20261203}"
cargo test --workspace --locked "$@"
# Every fuzz target for a short, fixed-seed run (or, without nightly, a replay of the
# corpus and past findings); the whole suite only, not a selection.
if [ "$#" -eq 0 ]; then
  ./scripts/fuzz.sh "${FUZZ_SECS:-15}"
fi
