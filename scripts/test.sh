#!/usr/bin/env bash
# Runs kura's whole test suite: unit, property and multi-process tests (real RocksDB,
# real files, real processes on loopback). Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace --locked "$@"
