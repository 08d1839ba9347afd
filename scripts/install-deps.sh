#!/usr/bin/env bash
# Installs everything kura needs on Debian 12, idempotently: the system packages
# (FFmpeg libraries, RocksDB, clang for bindgen, nginx/wrk for benchmarks) and a Rust
# toolchain when none is present. Safe to run any number of times; fast when done.
set -euo pipefail

PACKAGES=(
  pkg-config clang libclang-dev
  librocksdb-dev
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev ffmpeg
  nginx-light wrk curl ca-certificates b3sum jq iproute2
  # Real S3 clients the tests drive (boto3 and the aws CLI come from PyPI, below).
  rclone s3cmd python3-venv
  # A real browser for the direct-upload test (its npm clients come below).
  chromium nodejs
  # The PostgreSQL job store (`kura coordinator --store postgres://...`); the tests start
  # their own servers from /usr/lib/postgresql/15/bin.
  postgresql
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # nginx is a benchmark baseline only; never leave Debian's default site running.
  $SUDO systemctl disable --now nginx >/dev/null 2>&1 || $SUDO service nginx stop >/dev/null 2>&1 || true
  # Nor the database Debian creates with the package: kura's tests run their own, and an
  # operator sets up theirs as the README says.
  if printf '%s\n' "${missing[@]}" | grep -qx postgresql; then
    $SUDO systemctl disable --now postgresql >/dev/null 2>&1 \
      || $SUDO pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "install-deps: installing Rust (rustup, stable)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
# Fuzzing (scripts/fuzz.sh) needs a nightly toolchain and cargo-fuzz. Where nightly
# cannot be fetched, fuzz.sh replays the corpus and past findings on stable instead.
if command -v rustup >/dev/null 2>&1 && ! rustup toolchain list | grep -q '^nightly'; then
  echo "install-deps: installing a nightly toolchain for fuzzing"
  timeout 600 rustup toolchain install nightly --profile minimal >/dev/null 2>&1 \
    || echo "install-deps: no nightly toolchain; fuzzing will replay the corpus only"
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly' && ! cargo fuzz --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-fuzz"
  cargo install -q cargo-fuzz --locked --version 0.13.2
fi
# boto3, the aws CLI and tuspy (a tus client) from PyPI, current versions (their default checksum settings
# are what the tests must satisfy; Debian's awscli 2.9 predates AWS_ENDPOINT_URL), in a
# virtual environment kept outside the clone like the build output.
VENV="${KURA_TEST_VENV:-/var/tmp/kura-test-venv}"
if [ ! -x "$VENV/bin/aws" ] || ! "$VENV/bin/python" -c 'import boto3, tusclient' 2>/dev/null; then
  echo "install-deps: creating $VENV with boto3, awscli and tuspy"
  /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade boto3 awscli tuspy
fi
# `aws` as the README types it, unless the machine has its own.
if [ ! -e /usr/local/bin/aws ] && [ ! -e /usr/bin/aws ]; then
  $SUDO ln -s "$VENV/bin/aws" /usr/local/bin/aws
fi
# npm itself (nodejs from NodeSource ships it; Debian's nodejs does not).
if ! command -v npm >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends npm
fi
# The browser test's clients (playwright-core drives Debian's chromium; it downloads no
# browser), pinned in cli/tests/browser/package.json, outside the clone.
NODE_DIR="${KURA_TEST_NODE:-/var/tmp/kura-test-node}"
HERE="$(cd "$(dirname "$0")" && pwd)"
if ! cmp -s "$HERE/../cli/tests/browser/package.json" "$NODE_DIR/package.json" \
  || [ ! -d "$NODE_DIR/node_modules/tus-js-client" ]; then
  echo "install-deps: installing the browser test clients into $NODE_DIR"
  mkdir -p "$NODE_DIR"
  cp "$HERE/../cli/tests/browser/package.json" "$NODE_DIR/package.json"
  (cd "$NODE_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent)
fi
echo "install-deps: ok"
