#!/usr/bin/env bash
# Quick start, command 2: the whole test suite, as CI runs it.
#   formatting, lints, unit and integration tests, `rempart check` on every
#   shipped policy, and the k6 smoke test against `rempart demo` on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --for-tests

step() { printf '\n== %s\n' "$*"; }

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
