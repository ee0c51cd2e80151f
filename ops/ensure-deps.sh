#!/usr/bin/env bash
# System packages the tests need, installed from Debian's archive when missing (as root):
#   - PostgreSQL server binaries: the SQL sink tests start a throwaway server with them.
#   - Chromium (/usr/bin/chromium): the dashboard browser test (tests/e2e) drives it headless.
# Java 17+ and Maven (for the local Kafka stack) are checked and reported, not installed:
# `streams local up` gives the exact error and hint when they are missing.
set -euo pipefail

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; }

if ! have_postgres; then
  if [ "$(id -u)" = "0" ] && command -v apt-get > /dev/null; then
    echo "installing postgresql (server binaries for the sink tests)..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql > /dev/null \
      || { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql > /dev/null; }
  else
    echo "error: PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb)" >&2
    echo "hint: install them: sudo apt-get install postgresql" >&2
    exit 1
  fi
fi
# Chromium: the dashboard's browser test drives Debian's chromium with Playwright (no download).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get > /dev/null; then
    echo "installing chromium (headless browser for the dashboard test)..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium > /dev/null \
      || { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium > /dev/null; }
  else
    echo "error: /usr/bin/chromium not found (the dashboard browser test needs it)" >&2
    echo "hint: install it: sudo apt-get install chromium" >&2
    exit 1
  fi
fi
command -v java > /dev/null || echo "warning: java not on PATH; the local Kafka stack needs Java 17+" >&2
command -v mvn > /dev/null || echo "warning: mvn not on PATH; the first 'streams local up' needs Maven" >&2
exit 0
