#!/usr/bin/env bash
# The main job: installs what is missing, then runs broker + coordinator + 8 agents on digits.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m fedbus.examples.demo "$@"
