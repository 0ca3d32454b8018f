#!/usr/bin/env bash
# Quick start, command 2: the whole test suite, as CI runs it.
#   formatting, lints, unit and integration tests, `rempart check` on every
#   shipped policy, and the k6 smoke test against `rempart demo` on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --for-tests

step() { printf '\n== %s\n' "$*"; }

# The WAF tests replay the OWASP CRS regression suite: they need a CRS v4
# release folder (rules/ and tests/) and the WordPress exclusion plugin.
export REMPART_CRS_DIR="${REMPART_CRS_DIR:-$(cd .. && pwd)/shared/crs}"
export REMPART_CRS_PLUGINS_DIR="${REMPART_CRS_PLUGINS_DIR:-$(cd .. && pwd)/shared/crs-plugins}"
if [ ! -d "$REMPART_CRS_DIR/rules" ]; then
  echo "OWASP CRS not found at $REMPART_CRS_DIR: set REMPART_CRS_DIR to a CRS v4 release folder (rules/ and tests/)" >&2
  exit 1
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test"
cargo test --all-targets

step "cargo build --release"
cargo build --release --quiet

step "rempart check on every shipped policy"
for policy in policies/*.yaml; do
  ./target/release/rempart check --config "$policy"
done

step "k6 smoke test against rempart demo (loopback, bounded)"
scripts/smoke.sh

printf '\nall checks passed\n'
