#!/usr/bin/env bash
# The agent side must run on Python 3.10 (NVIDIA's JetPack 6 torch wheels): vermin checks
# edge_agent and every fedbus package it imports for standard-library features newer than
# 3.10. Lines marked "# novm" are the 3.11 branches of edge_agent/compat.py.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/vermin --target=3.10- --violations --no-tips --eval-annotations -q \
  edge_agent fedbus/protocol fedbus/fleet fedbus/examples
echo "agent side: Python 3.10 compatible (vermin)"
