#!/usr/bin/env bash
# Installs what kura needs (idempotent), builds it, and starts the local cluster
# (`kura dev`) with its data under ./kura-data. Extra arguments go to `kura dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked -p kura
exec "${CARGO_TARGET_DIR:-target}/release/kura" dev "$@"
