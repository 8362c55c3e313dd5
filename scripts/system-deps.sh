#!/usr/bin/env bash
# The system packages the whole test suite needs beyond the lock: a Chromium browser, which
# opens the run report in its test, and Debian's PostgreSQL server, which the PostgreSQL tests
# start on loopback (.ci/postgres; each pytest worker its own). Graphs are drawn by
# graphviz-pure, from the lock. Installed on Debian or Ubuntu, with sudo when not root, before
# the tests start (parallel workers must not race apt); anywhere else they are named and
# `make test` stops before running anything.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[ ${#missing[@]} -eq 0 ] && exit 0
if command -v apt-get >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  echo "Installing the system packages the tests need: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  exit 0
fi
echo "error: the tests need these system packages, and they are not installed: ${missing[*]}" >&2
echo "  (a Chromium browser on PATH as 'chromium'; PostgreSQL's server, initdb and pg_ctl)." >&2
echo "  Install them with your system's package manager, then run 'make test' again." >&2
echo "  'make test-fast' runs without them." >&2
exit 1
