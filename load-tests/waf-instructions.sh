#!/usr/bin/env bash
# Instructions per WAF inspection, counted by valgrind (cachegrind): unlike
# criterion's times, the figure does not move with the machine's load, so it
# shows what a change to the engine gains or loses. The same four shop
# requests as `cargo bench --bench waf`, full OWASP CRS.
#
#   load-tests/waf-instructions.sh                # PL1, every case
#   PARANOIA=2 COUNT=300 load-tests/waf-instructions.sh search_get
set -euo pipefail
cd "$(dirname "$0")/.."
PARANOIA="${PARANOIA:-1}"
COUNT="${COUNT:-200}"
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
bench=$(cargo bench --bench waf --no-run --message-format=json 2>/dev/null |
  grep '"kind":\["bench"\]' | grep '"name":"waf"' |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "could not build the waf bench" >&2; exit 1; }
instructions() { # case count
  WAF_BENCH_CASE="$1" WAF_BENCH_COUNT="$2" WAF_BENCH_PARANOIA="$PARANOIA" \
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bench" 2>&1 |
    awk '/I *refs/ {gsub(",", "", $NF); print $NF}'
}
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(product_page_get search_get checkout_post_form store_api_json_post)
for case in "${cases[@]}"; do
  # Loading the CRS and the warm-up are the same in both runs: the
  # difference is the inspections alone.
  base=$(instructions "$case" 0)
  total=$(instructions "$case" "$COUNT")
  [ -n "$base" ] && [ -n "$total" ] || { echo "$case: the bench did not run (see: WAF_BENCH_CASE=$case WAF_BENCH_COUNT=1 $bench)" >&2; exit 1; }
  printf 'PL%s %-22s %9d instructions per inspection\n' "$PARANOIA" "$case" $(( (total - base) / COUNT ))
done
