#!/usr/bin/env bash
# Install the Debian packages the tests need beyond the venv. Idempotent: installs only what is missing.
#   chromium       test/core/test_eval_report.py renders the evaluation report with headless Chromium
#   espeak-ng      test/core/test_voice.py and bench/bench_audio.py synthesise real speech with it
#   libportaudio2  the PortAudio library behind the `sounddevice` package (ALSA microphone source)
# Runs as root (CI and this machine; no sudo).
# Usage: scripts/install_system_deps.sh
set -euo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
ldconfig -p 2>/dev/null | grep -q 'libportaudio\.so\.2' || missing+=(libportaudio2)

if [ ${#missing[@]} -eq 0 ]; then
  echo "chromium: already installed ($(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium))"
  echo "espeak-ng: already installed ($(espeak-ng --version 2>/dev/null | head -1))"
  echo "libportaudio2: already installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install_system_deps.sh: needs root to apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}"
echo "installed: ${missing[*]}"
