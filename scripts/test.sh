#!/usr/bin/env bash
# Run the whole test suite (unit + integration against a real mosquitto).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
