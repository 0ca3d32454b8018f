#!/usr/bin/env bash
# WAF on versus WAF off: the same proxy and policy (the demo's, page cache on),
# once without and once with the full OWASP CRS at paranoia level 1, in front
# of the demo shop. wrk on loopback, bounded rounds; prints requests/s and p99
# for a cached product page and a cached search (the WAF runs before the cache).
#
#   cargo build --release && load-tests/waf-bench.sh
#   ROUNDS=3 DURATION=10s CONNECTIONS=32 REMPART_CRS_DIR=/etc/rempart/crs load-tests/waf-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/rempart
CRS="${REMPART_CRS_DIR:-$(cd .. && pwd)/shared/crs}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -d "$CRS/rules" ] || { echo "OWASP CRS not found at $CRS: set REMPART_CRS_DIR" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }

# A proxy left from an earlier run on one of these ports would answer in
# place of this run's (an older build, another policy): refuse to measure.
for port in 18180 18181 19190 18280 19290 18380 19390; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use (a proxy left from an earlier run?): stop it first" >&2
    exit 1
  fi
done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# The demo shop alone (the demo command also starts a proxy on 18180).
"$BIN" demo --listen 127.0.0.1:18180 --admin-listen 127.0.0.1:19190 --origin-listen 127.0.0.1:18181 >"$work/demo.log" 2>&1 &
pids+=($!)

policy() { # name port admin waf?
  sed -e "s/127.0.0.1:8080/127.0.0.1:$2/" -e "s/127.0.0.1:9090/127.0.0.1:$3/" \
      -e "s/127.0.0.1:8081/127.0.0.1:18181/" -e '/^bots:/,$d' policies/demo.yaml >"$work/$1.yaml"
  if [ "$4" = waf ]; then
    printf 'waf:\n  mode: block\n  paranoia_level: 1\n  crs:\n    path: "%s"\n' "$CRS" >>"$work/$1.yaml"
  fi
}
policy off 18280 19290 none
policy on 18380 19390 waf
"$BIN" run --config "$work/off.yaml" >"$work/off.log" 2>&1 & pids+=($!)
"$BIN" run --config "$work/on.yaml" >"$work/on.log" 2>&1 & pids+=($!)
for port in 18181 18280 18380; do
  for _ in $(seq 1 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.1; done
done

# A shop's own name as Host, as browsers send it: a numeric Host is itself a
# CRS warning (920350) and would make every WAF-on request write an audit record.
HOST="${HOST:-shop.example.com}"
run() { # label port path
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $HOST" "http://127.0.0.1:$2$3" 2>&1 |
    awk -v l="$1" '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {printf "%-28s %10s req/s  p99 %s\n", l, r, p}'
}
for path in ${PATHS:-"/product/hoodie-with-logo/" "/?s=men%27s+hoodie"}; do
  curl -fs -o /dev/null -H "Host: $HOST" "http://127.0.0.1:18280$path" || true
  curl -fs -o /dev/null -H "Host: $HOST" "http://127.0.0.1:18380$path" || true
  for round in $(seq 1 "$ROUNDS"); do
    run "waf off $path" 18280 "$path"
    run "waf on  $path" 18380 "$path"
  done
done
