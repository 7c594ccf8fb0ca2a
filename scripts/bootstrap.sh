#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks to run fedbus: mosquitto, tmux and
# systemd-analyze (Debian packages) and a virtual environment .venv with torch 2.13.0 (CPU) and fedbus[test].
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, each installed only when its command is missing: the broker and its
# clients; tmux (the test that drives `coordinator watch` in a pseudo-terminal); systemd
# (`systemd-analyze verify` checks the units in deploy/systemd).
missing=()
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv" >&2
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "installing torch 2.13.0 (CPU)" >&2
  .venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
fi
if ! .venv/bin/python -c "import coordinator, xgboost, pytest_asyncio" 2>/dev/null || [ pyproject.toml -nt .venv/.fedbus-installed ]; then
  echo "installing fedbus[test]" >&2
  .venv/bin/pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
  touch .venv/.fedbus-installed
fi
