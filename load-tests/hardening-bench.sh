#!/usr/bin/env bash
# Cached pages while the proxy is under attack: the WooCommerce preset as
# shipped (CRS and the WordPress plugin loaded, access log on; TLS removed,
# loopback trusted as a CDN so X-Forwarded-For names the attackers) in front
# of the demo shop. wrk measures a cached product page with browser-like
# requests, alone and while:
#   - forms: 4 clients post 128 KiB forms of 20,000 fields (refused);
#   - fields: 4 clients post 2,900-field forms (inspected whole, off the I/O threads);
#   - bans: a scanner flood from ever new addresses (each one banned).
# Bounded: DURATION per measurement, loopback only.
#
#   cargo build --release && load-tests/hardening-bench.sh
#   DURATION=10s ROUNDS=3 load-tests/hardening-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=./target/release/rempart
CRS="${REMPART_CRS_DIR:-$(cd .. && pwd)/shared/crs}"
PLUGINS="${REMPART_CRS_PLUGINS_DIR:-$(cd .. && pwd)/shared/crs-plugins}"
DURATION="${DURATION:-10s}"
ROUNDS="${ROUNDS:-1}"
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
[ -d "$CRS/rules" ] || { echo "OWASP CRS not found at $CRS: set REMPART_CRS_DIR" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
for port in 18480 18481 19490 19491; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use (a proxy left from an earlier run?): stop it first" >&2
    exit 1
  fi
done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$BIN" demo --listen 127.0.0.1:18480 --admin-listen 127.0.0.1:19490 --origin-listen 127.0.0.1:18481 >"$work/demo.log" 2>&1 &
pids+=($!)

# The preset without its TLS block, loopback trusted as a CDN.
awk '/^tls:/ {skip=1; next} skip && /^[a-z_]+:/ {skip=0} !skip' policies/woocommerce.yaml |
  sed -e 's/^  trusted_proxies: \[\]/  trusted_proxies: ["127.0.0.1\/32"]/' >"$work/preset.yaml"
REMPART_CRS_DIR="$CRS" REMPART_CRS_PLUGINS_DIR="$PLUGINS" "$BIN" run --config "$work/preset.yaml" \
  --listen 127.0.0.1:18482 --admin-listen 127.0.0.1:19491 --upstream 127.0.0.1:18481 >"$work/rempart.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do curl -fs -o /dev/null http://127.0.0.1:19491/health && break; sleep 0.1; done

UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
PAGE=/product/hoodie-with-logo/
browser=(-H "Host: shop.example.com" -H "User-Agent: $UA"
  -H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
  -H "Accept-Language: fr-FR,fr;q=0.9" -H "Accept-Encoding: gzip, br"
  -H "Cookie: _ga=GA1.1.123.456; _ga_ABC=GS1.1.1716.1.1.1716.0.0.0; sbjs_current=typ%3Dorganic")
curl -fs -o /dev/null "${browser[@]}" "http://127.0.0.1:18482$PAGE"

# Attack scripts for wrk.
python3 - "$work" <<'EOF'
import sys
work = sys.argv[1]
heavy = "&".join(f"f{i}=x" for i in range(20000))[: 128 * 1024]
fields = "&".join(f"f{i}=value-{i}" for i in range(2900))
# Each request from a new address (a botnet): per-client limits do not
# stop them, only origin_global does, after the body is inspected.
for name, body in (("forms", heavy), ("fields", fields)):
    with open(f"{work}/{name}.lua", "w") as f:
        f.write(f'body = "{body}"\n')
        f.write('counter = 0\n')
        f.write('request = function()\n  counter = counter + 1\n')
        f.write('  local ip = string.format("10.%d.%d.%d", math.floor(counter / 65536) % 256, math.floor(counter / 256) % 256, counter % 256)\n')
        f.write('  return wrk.format("POST", "/", {["Host"] = "shop.example.com", ["User-Agent"] = "Mozilla/5.0 Chrome/126", ["Accept"] = "text/html", ["Accept-Language"] = "fr", ["Content-Type"] = "application/x-www-form-urlencoded", ["X-Forwarded-For"] = ip}, body)\nend\n')
with open(f"{work}/bans.lua", "w") as f:
    f.write('counter = 0\n')
    f.write('request = function()\n  counter = counter + 1\n')
    f.write('  local ip = string.format("10.%d.%d.%d", math.floor(counter / 65536) % 256, math.floor(counter / 256) % 256, counter % 256)\n')
    f.write('  return wrk.format("GET", "/?id=1", {["Host"] = "shop.example.com", ["User-Agent"] = "sqlmap/1.7", ["X-Forwarded-For"] = ip})\nend\n')
EOF

measure() { # label
  wrk -t1 -c16 -d"$DURATION" --latency "${browser[@]}" "http://127.0.0.1:18482$PAGE" 2>&1 |
    awk -v l="$1" '/Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {printf "%-10s cached page %9s req/s  p50 %-8s p99 %s\n", l, r, p50, p99}'
}
attack() { # script
  wrk -t1 -c4 -d"$DURATION" -s "$work/$1.lua" "http://127.0.0.1:18482/" >"$work/$1.out" 2>&1
}
for _ in $(seq 1 "$ROUNDS"); do
  measure idle
  for kind in forms fields bans; do
    attack "$kind" &
    a=$!
    sleep 1
    measure "$kind"
    wait "$a" || true
    awk -v k="$kind" '/Requests\/sec/ {r=$2} /Non-2xx/ {n=$NF} END {printf "           %s: %s attack req/s, %s refused\n", k, r, n}' "$work/$kind.out"
    grep -ao 'reason="[a-z_]*"' "$work/rempart.log" | sort | uniq -c | sort -rn | head -3 | sed 's/^/           /' || true
    : >"$work/rempart.log"
  done
done
echo "bans placed: $(curl -fs http://127.0.0.1:19491/bans | grep -o '"ip"' | wc -l)"
