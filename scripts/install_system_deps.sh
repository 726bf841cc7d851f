#!/usr/bin/env bash
# Install the Debian packages the tests need beyond the venv: headless Chromium, which
# test/core/test_eval_report.py uses to render the evaluation report. Idempotent: does
# nothing when /usr/bin/chromium is already there. Runs as root (CI and this machine; no sudo).
# Usage: scripts/install_system_deps.sh
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system_deps.sh: needs root to apt-get install chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium
echo "chromium: installed ($(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium))"
