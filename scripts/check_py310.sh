#!/usr/bin/env bash
# The agent side must run on Python 3.10 (NVIDIA's JetPack 6 torch wheels): vermin checks
# edge_agent and every fedbus package it imports for standard-library features newer than
# 3.10. Lines marked "# novm" are the 3.11 branches of edge_agent/compat.py.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/vermin --target=3.10- --violations --no-tips --eval-annotations -q \
  edge_agent fedbus/protocol fedbus/fleet fedbus/examples fedbus/packages
echo "agent side: Python 3.10 compatible (vermin)"
# Where a real 3.10 interpreter is at hand (pyenv on the project machines), it also
# compiles every agent-side file: a syntax error vermin's rules miss fails here.
py310=$(ls /root/.pyenv/versions/3.10.*/bin/python 2>/dev/null | head -n 1 || true)
[ -n "$py310" ] || ! python3.10 -c "" 2>/dev/null || py310=python3.10
if [ -n "$py310" ]; then
  "$py310" -c "
import pathlib, sys
paths = [p for d in sys.argv[1:] for p in sorted(pathlib.Path(d).rglob('*.py'))]
for p in paths:
    compile(p.read_text(encoding='utf-8'), str(p), 'exec', dont_inherit=True)
print(f'agent side: {len(paths)} files compile on', sys.version.split()[0])
" edge_agent fedbus/protocol fedbus/fleet fedbus/examples fedbus/packages
fi
