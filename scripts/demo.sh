#!/usr/bin/env bash
# Quick start, command 1: the sample shop with Rempart in front of it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --quiet -- demo "$@"
