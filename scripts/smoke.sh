#!/usr/bin/env bash
# Runs load-tests/smoke.js against `rempart demo` on loopback ports of its own,
# then stops the demo. Bounded: the scenario lasts under a minute and the
# whole run is killed after 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${REMPART_BIN:-target/release/rempart}
[ -x "$BIN" ] || cargo build --release --quiet
SHOP=127.0.0.1:18080 ADMIN=127.0.0.1:19090 ORIGIN=127.0.0.1:18081
log=$(mktemp)
"$BIN" demo --listen "$SHOP" --admin-listen "$ADMIN" --origin-listen "$ORIGIN" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://$ADMIN/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://$ADMIN/ready" >/dev/null || { echo "demo did not become ready:"; cat "$log"; exit 1; }
timeout 180 k6 run --quiet -e BASE_URL="http://$SHOP" load-tests/smoke.js
