#!/usr/bin/env bash
# Fetches the console's third-party scripts from npm at their pinned versions into
# gateway/console/vendor/ and checks their sha256 against vendor/README.md's table.
# Run after changing a version there (and update the hash in the table).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/gateway/console/vendor"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

fetch() { # fetch PACKAGE VERSION PATH-IN-PACKAGE FILE
  (cd "$TMP" && npm pack --silent "$1@$2" >/dev/null && mkdir -p "$1" && tar xzf "$(ls -t ./*.tgz | head -1)" -C "$1" && rm -f ./*.tgz)
  cp "$TMP/$1/package/$3" "$VENDOR/$4"
}
want() { awk -F'|' -v f="\`$1\`" '$2 ~ f { gsub(/[ `]/, "", $7); print $7 }' "$VENDOR/README.md"; }

fetch hls.js 1.6.15 dist/hls.min.js hls.min.js
fetch tus-js-client 4.3.1 dist/tus.min.js tus.min.js
for f in hls.min.js tus.min.js; do
  got=$(sha256sum "$VENDOR/$f" | cut -d' ' -f1)
  [ "$got" = "$(want "$f")" ] || { echo "$f: sha256 $got does not match vendor/README.md" >&2; exit 1; }
  echo "$f ok"
done
