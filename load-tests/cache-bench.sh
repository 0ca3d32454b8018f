#!/usr/bin/env bash
# Side-by-side benchmark of a cached shop page: nginx proxy_cache against
# Rempart's page cache, both in front of the same origin, on loopback only.
#
#   origin   nginx       127.0.0.1:18180  serves a ~30 KB product page
#   nginx    proxy_cache 127.0.0.1:18181  -> origin
#   rempart  cache       127.0.0.1:18182  -> origin (admin 127.0.0.1:19182)
#
# Both proxies get the same CPU budget: one worker, pinned to the same single
# core. wrk (and the origin, idle once the caches are warm) run on another core
# so that the load generator never steals the proxies' CPU.
#
# Environment:
#   ROUNDS=3          alternating rounds (each: one wrk run per proxy)
#   DURATION=10s      length of each wrk run (wrk syntax: 10s, 1m)
#   CONNECTIONS=64    wrk connections
#   REMPART_BIN=...   Rempart binary (default target/release/rempart, built if missing)
#   NO_CACHE_BLOCK=1  leave the `cache:` block out of Rempart's policy (for a
#                     binary without the cache: Rempart then only proxies)
#
# Exit status: 0 whatever the ratio (a benchmark, not a test); non-zero when a
# server fails to start, a cache misbehaves, or wrk fails. Every step is
# bounded; with the defaults the measurements take about 70 s.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
NO_CACHE_BLOCK=${NO_CACHE_BLOCK:-0}
BIN=${REMPART_BIN:-target/release/rempart}

readonly ORIGIN_ADDR=127.0.0.1:18180
readonly NGINX_ADDR=127.0.0.1:18181
readonly REMPART_ADDR=127.0.0.1:18182
readonly ADMIN_ADDR=127.0.0.1:19182
readonly PAGE=/product/bench/
readonly SERVERS=(nginx rempart)

PIDS=()           # process-group leaders we started (each in its own session)
STOP_SIGNALS=()   # the signal that stops each one quickly
POLICY_RC_CREATED=0
WORKDIR=""

log() { printf '[cache-bench] %s\n' "$*"; }
warn() { printf '[cache-bench] WARNING: %s\n' "$*" >&2; }
die() { printf '[cache-bench] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup --

# Stops every process group we started: nginx masters take their workers
# with them. Rempart gets SIGINT (exit at once) rather than SIGTERM, which
# would wait for its grace period.
cleanup() {
  local rc=$? i alive
  trap - EXIT INT TERM
  for i in "${!PIDS[@]}"; do
    kill -"${STOP_SIGNALS[$i]}" -- "-${PIDS[$i]}" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do        # at most 5 s for a clean stop
    alive=0
    for i in "${!PIDS[@]}"; do
      kill -0 -- "-${PIDS[$i]}" 2>/dev/null && alive=1
    done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for i in "${!PIDS[@]}"; do
    kill -KILL -- "-${PIDS[$i]}" 2>/dev/null || true
    wait "${PIDS[$i]}" 2>/dev/null || true
  done
  if [ "$POLICY_RC_CREATED" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  [ -n "$WORKDIR" ] && log "raw outputs and logs kept in $WORKDIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------------- checks --

check_settings() {
  [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
  [[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer, not '$CONNECTIONS'"
  DURATION_S=$(duration_seconds "$DURATION") || die "DURATION must look like 10s, 1m or 1h, not '$DURATION'"
}

# wrk's duration syntax, in seconds (for the time-outs around wrk).
duration_seconds() {
  [[ $1 =~ ^([0-9]+)([smh]?)$ ]] || return 1
  local n=${BASH_REMATCH[1]}
  case ${BASH_REMATCH[2]} in
    m) echo $((n * 60)) ;;
    h) echo $((n * 3600)) ;;
    *) echo "$n" ;;
  esac
}

# The CPUs this process may use, one per line (honours cpusets and taskset,
# unlike assuming that cores 0 and 1 exist).
allowed_cpus() {
  local list part parts
  list=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
  IFS=, read -ra parts <<<"$list"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}

# Proxies on the first allowed core, wrk and the origin on the second.
choose_cpus() {
  local cpus
  mapfile -t cpus < <(allowed_cpus)
  PROXY_CPU=${cpus[0]}
  if [ "$(nproc)" -ge 2 ] && [ "${#cpus[@]}" -ge 2 ]; then
    LOAD_CPU=${cpus[1]}
  else
    LOAD_CPU=$PROXY_CPU
    warn "fewer than 2 cores: everything runs on core $PROXY_CPU; wrk competes with the proxies and the figures are only indicative"
  fi
  log "proxies on core $PROXY_CPU; origin and wrk on core $LOAD_CPU"
}

port_in_use() { (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null; }

check_ports_free() {
  local addr
  for addr in "$ORIGIN_ADDR" "$NGINX_ADDR" "$REMPART_ADDR" "$ADMIN_ADDR"; do
    if port_in_use "$addr"; then die "$addr is already in use (an earlier run still going?)"; fi
  done
}

# ---------------------------------------------------------------- install --

# Installs nginx and wrk (and curl) with apt when missing. Debian's nginx
# package would start the system nginx service on port 80: a policy-rc.d that
# says "no" keeps it stopped during the install, unless one is already there.
install_tools() {
  local missing=() nginx_pkg=nginx
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}; run as root to install them with apt"
  log "installing ${missing[*]} with apt"
  timeout 600 apt-get update -qq
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    # nginx-light is enough (proxy and cache are core modules); some releases drop it.
    if apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]'; then nginx_pkg="nginx-light"; fi
    missing=("${missing[@]/#nginx/$nginx_pkg}")
  fi
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ "$POLICY_RC_CREATED" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
  hash -r
}

nginx_bin() { command -v nginx 2>/dev/null || echo /usr/sbin/nginx; }

ensure_rempart() {
  if [ -n "${REMPART_BIN:-}" ]; then
    [ -x "$BIN" ] || die "REMPART_BIN=$BIN is not an executable file"
  elif [ ! -x "$BIN" ]; then
    log "building Rempart (cargo build --release); this takes several minutes the first time"
    timeout 3600 cargo build --release
  fi
  BIN=$(realpath "$BIN")
}

# ------------------------------------------------------------------- page --

# A deterministic product page of about 30 KB: head with inline CSS, header
# and navigation, gallery, buy box, description, specifications, reviews and
# related products. Reviews are added until the page reaches 30,000 bytes.
write_page() {
  local out=$1 i top bottom reviews="" related="" specs=""
  local -a names=(Amelie Bruno Chloe Damien Elise Farid Gaelle Hugo Ines Jules Karim Lea)
  local -a colours=("Heather grey" "Navy blue" "Forest green" Burgundy Mustard Charcoal)
  for i in $(seq 1 12); do
    specs+="<tr><th>Spec $i</th><td>Value $((i * 7 % 13)) &middot; ${colours[$((i % 6))]}</td></tr>"$'\n'
  done
  for i in $(seq 1 16); do
    related+="<li class=\"card\"><a href=\"/product/related-$i/\"><img src=\"/media/related-$i-300x300.webp\" width=\"300\" height=\"300\" loading=\"lazy\" alt=\"Related product $i\"><span class=\"name\">Merino ${colours[$((i % 6))]} beanie, model $i</span><span class=\"price\">$((19 + i)).90&nbsp;&euro;</span></a></li>"$'\n'
  done
  top=$(page_head; page_body_top; printf '%s' "$specs"; page_reviews_heading)$'\n'
  bottom=$(page_related_heading; printf '%s' "$related"; page_footer)$'\n'
  i=0
  while [ $((${#top} + ${#reviews} + ${#bottom})) -lt 30000 ]; do
    i=$((i + 1))
    reviews+="<article class=\"review\" id=\"review-$i\"><header><span class=\"author\">${names[$((i % 12))]} ${names[$(((i * 5) % 12))]:0:1}.</span> <span class=\"stars\" aria-label=\"$((3 + i % 3)) out of 5\">$(printf '&#9733;%.0s' $(seq 1 $((3 + i % 3))))</span> <time datetime=\"2024-$(printf '%02d' $((1 + i % 12)))-$(printf '%02d' $((1 + i % 28)))\">verified purchase</time></header><p>Review number $i. The knit is soft and warm, the size runs true and the ${colours[$((i % 6))]} colour is exactly as on the photos. Washed it several times at 30&deg;C without any pilling. Delivery took $((1 + i % 4)) days. Would buy again for the whole family.</p></article>"$'\n'
  done
  printf '%s%s%s' "$top" "$reviews" "$bottom" >"$out"
}

page_head() {
  cat <<'EOF'
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Merino beanie, heather grey &ndash; Rempart Bench Shop</title>
<meta name="description" content="A soft merino wool beanie, knitted in Europe. Free delivery from 50 euros, returns within 30 days.">
<link rel="canonical" href="https://shop.example/product/bench/">
<meta property="og:type" content="product">
<meta property="og:title" content="Merino beanie, heather grey">
<meta property="og:image" content="https://shop.example/media/beanie-grey-1200x1200.webp">
<link rel="preload" href="/assets/theme.7f3a9c.css" as="style">
<link rel="stylesheet" href="/assets/theme.7f3a9c.css">
<script type="application/ld+json">{"@context":"https://schema.org","@type":"Product","name":"Merino beanie, heather grey","sku":"BEANIE-GREY-01","brand":{"@type":"Brand","name":"Rempart Bench"},"offers":{"@type":"Offer","price":"24.90","priceCurrency":"EUR","availability":"https://schema.org/InStock"},"aggregateRating":{"@type":"AggregateRating","ratingValue":"4.6","reviewCount":"128"}}</script>
<style>
:root{--ink:#1d1d1f;--muted:#6e6e73;--accent:#0a6cff;--line:#e5e5ea}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink)}
a{color:inherit}header.site{display:flex;align-items:center;justify-content:space-between;padding:12px 24px;border-bottom:1px solid var(--line)}
nav.main ul{display:flex;gap:20px;list-style:none;margin:0;padding:0}.breadcrumb{font-size:13px;color:var(--muted);padding:8px 24px}
.product{display:grid;grid-template-columns:1fr 1fr;gap:32px;padding:24px}.gallery img{width:100%;height:auto;border-radius:8px}
.buy .price{font-size:28px;font-weight:700}.buy button{background:var(--accent);color:#fff;border:0;border-radius:6px;padding:12px 28px;font-size:16px}
table.specs{border-collapse:collapse;width:100%}table.specs th,table.specs td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left}
.review{border-bottom:1px solid var(--line);padding:12px 0}.review .stars{color:#f5a623}.review time{color:var(--muted);font-size:13px}
ul.related{display:grid;grid-template-columns:repeat(4,1fr);gap:16px;list-style:none;padding:0}.card img{width:100%;height:auto}
footer.site{background:#f5f5f7;padding:32px 24px;font-size:14px;color:var(--muted)}
@media (max-width:800px){.product{grid-template-columns:1fr}ul.related{grid-template-columns:repeat(2,1fr)}}
</style>
</head>
EOF
}

page_body_top() {
  cat <<'EOF'
<body class="product-template single-product">
<header class="site"><a class="logo" href="/">Rempart Bench Shop</a>
<nav class="main" aria-label="Main"><ul><li><a href="/category/women/">Women</a></li><li><a href="/category/men/">Men</a></li><li><a href="/category/kids/">Kids</a></li><li><a href="/category/accessories/">Accessories</a></li><li><a href="/category/sale/">Sale</a></li></ul></nav>
<form class="search" action="/search/" method="get"><input type="search" name="q" placeholder="Search the shop" aria-label="Search"></form>
<a class="cart" href="/cart/">Cart (0)</a></header>
<div class="breadcrumb"><a href="/">Home</a> / <a href="/category/accessories/">Accessories</a> / <a href="/category/accessories/hats/">Hats</a> / Merino beanie</div>
<main>
<section class="product">
<div class="gallery">
<img src="/media/beanie-grey-800x800.webp" width="800" height="800" alt="Merino beanie, heather grey, front">
<img src="/media/beanie-grey-side-800x800.webp" width="800" height="800" loading="lazy" alt="Merino beanie, side">
<img src="/media/beanie-grey-worn-800x800.webp" width="800" height="800" loading="lazy" alt="Merino beanie, worn">
</div>
<div class="buy">
<h1>Merino beanie, heather grey</h1>
<p class="price"><span class="amount">24.90&nbsp;&euro;</span> <small>incl. VAT, free delivery from 50&nbsp;&euro;</small></p>
<p class="stock in-stock">In stock: ships within 24 hours</p>
<form class="cart" action="/cart/" method="post">
<input type="hidden" name="add-to-cart" value="4242">
<label>Size <select name="attribute_size"><option>S/M</option><option selected>M/L</option><option>L/XL</option></select></label>
<label>Quantity <input type="number" name="quantity" value="1" min="1" max="12"></label>
<button type="submit">Add to cart</button>
</form>
<ul class="usp"><li>30-day free returns</li><li>Knitted in Europe from mulesing-free merino</li><li>Secure payment by card, PayPal or bank transfer</li></ul>
</div>
</section>
<section class="description">
<h2>Description</h2>
<p>A close-fitting beanie knitted from extra-fine merino wool, 18.5 microns, for a soft touch that does not itch. The double-layer cuff keeps the ears warm on the coldest mornings, and the fine rib keeps its shape wash after wash.</p>
<p>Merino regulates temperature and does not retain odours: wear it cycling to work, on the slopes or on a winter walk. Each beanie is knitted on seamless machines in a family workshop, then steamed and inspected by hand.</p>
<p>Care: machine wash at 30&deg;C on the wool cycle, dry flat, do not tumble dry. Composition: 100% merino wool. Weight: 85 g.</p>
</section>
<section class="specifications">
<h2>Specifications</h2>
<table class="specs">
EOF
}

page_reviews_heading() {
  cat <<'EOF'
</table>
</section>
<section class="reviews" id="reviews">
<h2>Customer reviews</h2>
EOF
}

page_related_heading() {
  cat <<'EOF'
</section>
<section class="related-products">
<h2>You may also like</h2>
<ul class="related">
EOF
}

page_footer() {
  cat <<'EOF'
</ul>
</section>
</main>
<footer class="site">
<nav aria-label="Footer"><ul><li><a href="/legal/">Legal notice</a></li><li><a href="/terms/">Terms and conditions</a></li><li><a href="/privacy/">Privacy policy</a></li><li><a href="/delivery/">Delivery and returns</a></li><li><a href="/contact/">Contact</a></li></ul></nav>
<p>&copy; Rempart Bench Shop. Prices include VAT.</p>
</footer>
<script src="/assets/theme.7f3a9c.js" defer></script>
</body>
</html>
EOF
}

# ----------------------------------------------------------------- config --

# Settings shared by both nginx instances: everything inside the temp dir,
# no access log, one worker (pinning is done by taskset from outside).
nginx_common() {
  local name=$1
  cat <<EOF
worker_processes 1;
daemon off;
pid $WORKDIR/$name.pid;
error_log $WORKDIR/$name-error.log warn;
events { worker_connections 4096; }
EOF
}

nginx_http_common() {
  local name=$1
  cat <<EOF
    access_log off;
    types { text/html html; }
    default_type application/octet-stream;
    client_body_temp_path $WORKDIR/$name-tmp/body;
    proxy_temp_path $WORKDIR/$name-tmp/proxy;
EOF
}

write_origin_conf() {
  {
    nginx_common origin
    echo "http {"
    nginx_http_common origin
    cat <<EOF
    server {
        listen $ORIGIN_ADDR;
        root $WORKDIR/www;
        # Every path answers with the product page, cacheable for an hour.
        location / {
            try_files /product.html =404;
            add_header Cache-Control "public, max-age=3600";
        }
    }
}
EOF
  } >"$WORKDIR/origin.conf"
}

write_nginx_proxy_conf() {
  {
    nginx_common nginx-proxy
    echo "http {"
    nginx_http_common nginx-proxy
    cat <<EOF
    # nginx keeps cached bodies in files under proxy_cache_path: once warm they
    # are read from the kernel page cache, as in production. open_file_cache
    # is left at its default (off), as in a stock install.
    proxy_cache_path $WORKDIR/nginx-cache levels=1:2 keys_zone=shop:64m max_size=256m inactive=60m use_temp_path=off;
    upstream origin {
        server $ORIGIN_ADDR;
        keepalive 32;
    }
    server {
        listen $NGINX_ADDR;
        location / {
            proxy_cache shop;
            proxy_cache_valid 200 10m;
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            add_header X-Cache \$upstream_cache_status;
        }
    }
}
EOF
  } >"$WORKDIR/nginx-proxy.conf"
}

write_rempart_policy() {
  cat >"$WORKDIR/rempart.yaml" <<EOF
server:
  listen: ["$REMPART_ADDR"]
  admin_listen: "$ADMIN_ADDR"
  threads: 1
  access_log: false
upstream:
  servers: ["$ORIGIN_ADDR"]
EOF
  if [ "$NO_CACHE_BLOCK" != 1 ]; then
    cat >>"$WORKDIR/rempart.yaml" <<EOF
cache:
  max_size: 256MiB
  max_object_size: 8MiB
  default_ttl: 10m
EOF
  fi
}

# ---------------------------------------------------------------- servers --

# Starts a command in a session of its own, pinned to a core, so that cleanup
# can stop it with all its children (nginx workers) through its process group.
start_pinned() {
  local cpu=$1 stop_signal=$2 logfile=$3
  shift 3
  setsid taskset -c "$cpu" "$@" >"$logfile" 2>&1 </dev/null &
  PIDS+=("$!")
  STOP_SIGNALS+=("$stop_signal")
}

# Polls a URL until it answers 200: at most 10 s, and only while the process
# (group) is alive, so a crash is reported at once.
wait_for_200() {
  local url=$1 pid=$2 name=$3 logfile=$4
  for _ in $(seq 1 100); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" = 200 ]; then return 0; fi
    if ! kill -0 -- "-$pid" 2>/dev/null; then
      echo "--- $logfile" >&2; cat "$logfile" >&2 || true
      die "$name exited before answering"
    fi
    sleep 0.1
  done
  echo "--- $logfile" >&2; cat "$logfile" >&2 || true
  die "$name did not answer 200 on $url within 10 s"
}

start_nginx() {
  local name=$1 cpu=$2 url=$3 nginx
  nginx=$(nginx_bin)
  mkdir -p "$WORKDIR/$name-tmp"
  # -e: the error log is ours from the start, not the system's /var/log/nginx.
  if ! timeout 10 "$nginx" -t -q -e "$WORKDIR/$name-error.log" -c "$WORKDIR/$name.conf" -p "$WORKDIR" 2>"$WORKDIR/$name-check.log"; then
    cat "$WORKDIR/$name-check.log" >&2
    die "nginx refused $WORKDIR/$name.conf"
  fi
  # SIGTERM is nginx's fast shutdown.
  start_pinned "$cpu" TERM "$WORKDIR/$name.out" "$nginx" -e "$WORKDIR/$name-error.log" -c "$WORKDIR/$name.conf" -p "$WORKDIR"
  wait_for_200 "$url" "${PIDS[-1]}" "nginx $name" "$WORKDIR/$name-error.log"
  log "nginx $name up on $(echo "${url#http://}" | cut -d/ -f1) (core $cpu)"
}

# `rempart check` first: a policy this binary refuses is reported before any
# server starts, with the way out when the cache is what it does not know.
check_rempart_policy() {
  if ! timeout 30 "$BIN" check --config "$WORKDIR/rempart.yaml" >"$WORKDIR/rempart-check.log" 2>&1; then
    cat "$WORKDIR/rempart-check.log" >&2
    if grep -q "unknown block \`cache\`" "$WORKDIR/rempart-check.log"; then
      die "this Rempart binary has no page cache yet; NO_CACHE_BLOCK=1 benchmarks plain proxying instead"
    fi
    die "Rempart refused the generated policy $WORKDIR/rempart.yaml"
  fi
}

start_rempart() {
  start_pinned "$PROXY_CPU" INT "$WORKDIR/rempart.log" "$BIN" run --config "$WORKDIR/rempart.yaml"
  wait_for_200 "http://$ADMIN_ADDR/ready" "${PIDS[-1]}" "Rempart" "$WORKDIR/rempart.log"
  log "rempart up on $REMPART_ADDR (core $PROXY_CPU, admin $ADMIN_ADDR)"
}

# ------------------------------------------------------------------ warmup --

# Prints the value of the X-Cache header (any case) of one GET, or "-".
# Fails when the status is not 200 or the body is not the whole page.
x_cache_of() {
  local url=$1 headers status size value
  headers=$(curl -s --max-time 5 -D - -o "$WORKDIR/warmup-body" "$url") || die "GET $url failed"
  status=$(printf '%s\n' "$headers" | awk 'NR == 1 {print $2}')
  [ "$status" = 200 ] || die "GET $url answered $status, not 200"
  size=$(wc -c <"$WORKDIR/warmup-body")
  [ "$size" -eq "$PAGE_BYTES" ] || die "GET $url returned $size bytes, not the page's $PAGE_BYTES"
  value=$(printf '%s\n' "$headers" | tr -d '\r' | awk -F': *' 'tolower($1) == "x-cache" {print $2; exit}')
  echo "${value:--}"
}

# A few requests per proxy; the second must be a cache hit.
warm_up() {
  local name url seen value
  for name in "${SERVERS[@]}"; do
    url=$(server_url "$name")
    seen=()
    for _ in 1 2 3 4; do
      value=$(x_cache_of "$url")   # (a failure inside exits here, through set -e)
      seen+=("$value")
    done
    log "warm-up $name: x-cache ${seen[*]}"
    if [ "${seen[1]}" != HIT ]; then
      if [ "$name" = nginx ]; then die "nginx did not report X-Cache: HIT on the second request; its proxy_cache is not working"; fi
      warn "Rempart did not report a cache HIT; its figures are for proxying, not caching"
    fi
  done
  # A short throw-away wrk run per proxy: connection pools, allocators and the
  # page cache settle before anything is measured.
  for name in "${SERVERS[@]}"; do
    timeout 30 taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d2s "$(server_url "$name")" \
      >"$WORKDIR/wrk-warmup-$name.txt" 2>&1 || die "wrk warm-up against $name failed: $(cat "$WORKDIR/wrk-warmup-$name.txt")"
  done
}

server_url() {
  case $1 in
    nginx) echo "http://$NGINX_ADDR$PAGE" ;;
    rempart) echo "http://$REMPART_ADDR$PAGE" ;;
  esac
}

# ------------------------------------------------------------- measuring --

# "busy total" jiffies of one CPU from /proc/stat (idle and iowait are not busy).
cpu_ticks() {
  awk -v cpu="cpu$1" '$1 == cpu {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat
}

busy_percent() {  # before after ("busy total" each)
  echo "$1 $2" | awk '{dt = $4 - $2; printf "%.0f", (dt > 0 ? 100 * ($3 - $1) / dt : 0)}'
}

# wrk latency (e.g. 812.00us, 3.41ms, 1.02s, 1.50m) in milliseconds.
to_ms() {
  echo "$1" | awk '{
    v = $1; u = $1; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u)
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
    if (f < 0 || v == "") exit 1
    printf "%.3f", v * f
  }'
}

RESULTS=()   # "round server rps p99_ms proxy_core% wrk_core%"

# One measured wrk run; wrk on the load core, bounded by a time-out.
measure() {
  local round=$1 name=$2 out p0 l0 p1 l1 rps p99 p99_ms
  out="$WORKDIR/wrk-round$round-$name.txt"
  p0=$(cpu_ticks "$PROXY_CPU"); l0=$(cpu_ticks "$LOAD_CPU")
  if ! timeout $((DURATION_S + 30)) taskset -c "$LOAD_CPU" \
      wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$(server_url "$name")" >"$out" 2>&1; then
    cat "$out" >&2
    die "wrk against $name failed (round $round)"
  fi
  p1=$(cpu_ticks "$PROXY_CPU"); l1=$(cpu_ticks "$LOAD_CPU")
  # Fast error pages would inflate the figures: any non-2xx/3xx invalidates the run.
  if grep -q 'Non-2xx or 3xx responses' "$out"; then
    cat "$out" >&2
    die "$name answered errors under load (round $round); see $out"
  fi
  if grep -q 'Socket errors' "$out"; then warn "$name: $(grep 'Socket errors' "$out" | sed 's/^ *//') (round $round)"; fi
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  p99=$(awk '$1 == "99%" {print $2; exit}' "$out")
  if [ -z "$rps" ] || [ -z "$p99" ]; then cat "$out" >&2; die "cannot read wrk's output $out"; fi
  p99_ms=$(to_ms "$p99") || die "unknown latency unit in '$p99' ($out)"
  awk -v r="$rps" 'BEGIN {exit !(r > 0)}' || die "wrk measured no requests against $name ($out)"
  RESULTS+=("$round $name $rps $p99_ms $(busy_percent "$p0" "$p1") $(busy_percent "$l0" "$l1")")
  log "round $round $name: $rps req/s, p99 $p99_ms ms"
}

# Alternate the order so that neither proxy always runs on a warmer (or
# hotter, throttled) machine: nginx first in odd rounds, Rempart in even ones.
run_rounds() {
  local round
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then
      measure "$round" nginx; measure "$round" rempart
    else
      measure "$round" rempart; measure "$round" nginx
    fi
  done
}

# Median of one column (3 = rps, 4 = p99) for one server.
median() {
  local name=$1 col=$2
  printf '%s\n' "${RESULTS[@]}" | awk -v n="$name" -v c="$col" '$2 == n {print $c}' | sort -g |
    awk '{v[NR] = $1} END {if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

print_table() {
  local line name ratio p99_ratio
  echo
  printf '%-7s %-8s %12s %10s %12s %10s\n' round server "req/s" "p99 ms" "proxy core" "wrk core"
  for line in "${RESULTS[@]}"; do
    # shellcheck disable=SC2086
    set -- $line
    printf '%-7s %-8s %12.2f %10.3f %11s%% %9s%%\n' "$1" "$2" "$3" "$4" "$5" "$6"
  done
  for name in "${SERVERS[@]}"; do
    printf '%-7s %-8s %12s %10s\n' median "$name" "$(median "$name" 3)" "$(median "$name" 4)"
  done
  # (In awk a bare `>` after print/printf redirects to a file: hence the parentheses.)
  ratio=$(awk -v a="$(median rempart 3)" -v b="$(median nginx 3)" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
  p99_ratio=$(awk -v a="$(median rempart 4)" -v b="$(median nginx 4)" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
  echo
  echo "ratio rempart/nginx rps = $ratio   (target >= 1.10: $(awk -v r="$ratio" 'BEGIN {print ((r >= 1.10) ? "met" : "not met")}'))"
  echo "ratio rempart/nginx p99 = $p99_ratio   (lower is better)"
  [ "$REMPART_CACHED" = 1 ] || echo "NOTE: Rempart did not serve from a cache; its figures are for proxying, not caching"
  # A full load core means wrk may have set the pace rather than the proxy:
  # that figure is then a lower bound of what the proxy can do (and with the
  # proxy core idle at times, certainly one).
  for line in "${RESULTS[@]}"; do
    # shellcheck disable=SC2086
    set -- $line
    if [ "$6" -ge 95 ] && [ "$5" -lt 90 ]; then
      echo "NOTE: round $1 $2: the wrk core was saturated (${6}%) but the proxy core was not (${5}%): wrk was the limit, not $2"
    elif [ "$6" -ge 95 ]; then
      echo "NOTE: round $1 $2: the wrk core was saturated too (${6}%): wrk may have been the limit as much as $2"
    fi
  done
}

# ------------------------------------------------------------------- main --

main() {
  check_settings
  install_tools
  ensure_rempart
  choose_cpus
  check_ports_free

  WORKDIR=$(mktemp -d /tmp/rempart-cache-bench.XXXXXX)
  # nginx workers drop root privileges: they must be able to read the page
  # and write their cache under the temp dir.
  chmod 755 "$WORKDIR"
  mkdir -p "$WORKDIR/www"
  write_page "$WORKDIR/www/product.html"
  PAGE_BYTES=$(wc -c <"$WORKDIR/www/product.html")
  log "work dir $WORKDIR; page $PAGE_BYTES bytes"
  log "rounds $ROUNDS x ${SERVERS[*]}, wrk -t1 -c$CONNECTIONS -d$DURATION"

  write_origin_conf
  write_nginx_proxy_conf
  write_rempart_policy
  check_rempart_policy
  # The origin shares the load core with wrk: it only works during warm-up
  # and cache misses.
  start_nginx origin "$LOAD_CPU" "http://$ORIGIN_ADDR$PAGE"
  # Probed on another path, so that the warm-up below sees the page's MISS.
  start_nginx nginx-proxy "$PROXY_CPU" "http://$NGINX_ADDR/__probe"
  start_rempart

  warm_up
  REMPART_CACHED=1
  local last
  last=$(x_cache_of "$(server_url rempart)")
  [ "$last" = HIT ] || REMPART_CACHED=0
  run_rounds
  print_table
  log "done in ${SECONDS}s"
}

main "$@"
