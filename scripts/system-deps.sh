#!/usr/bin/env bash
# The one system package the whole test suite needs beyond the lock: a Chromium browser,
# which opens the run report in its test (graphs are drawn by graphviz-pure, from the lock).
# Installed on Debian or Ubuntu, with sudo when not root; anywhere else it is named and
# `make test` stops before running anything.
set -euo pipefail
command -v chromium >/dev/null && exit 0
if command -v apt-get >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  echo "Installing the system package the tests need: chromium"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
  exit 0
fi
echo "error: the tests need a Chromium browser on PATH as 'chromium', and none is installed." >&2
echo "  Install it with your system's package manager, then run 'make test' again." >&2
echo "  'make test-fast' runs without it." >&2
exit 1
