#!/usr/bin/env bash
# Make .venv-oldest: the oldest paho-mqtt and aiomqtt pyproject.toml allows, in front of
# everything else from .venv (a .pth adds .venv's site-packages after its own), so CI can
# run the suite on both ends of the ranges without a second torch. Run bootstrap.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
PAHO=2.1.0     # pyproject.toml: paho-mqtt>=2.1
AIOMQTT=2.3.0  # pyproject.toml: aiomqtt>=2.3
base=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ ! -x .venv-oldest/bin/python ]; then
  echo "creating .venv-oldest" >&2
  # No pip or setuptools of its own: .venv's (newer) are found through the .pth below.
  .venv/bin/python -m venv --without-pip .venv-oldest
fi
own=$(.venv-oldest/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import site; site.addsitedir('$base')" > "$own/zz_fedbus_base.pth"
if ! .venv-oldest/bin/python -c "
import importlib.metadata as m, sys
sys.exit(not (m.version('paho-mqtt') == '$PAHO' and m.version('aiomqtt') == '$AIOMQTT'))
" 2>/dev/null; then
  echo "installing paho-mqtt $PAHO, aiomqtt $AIOMQTT into .venv-oldest" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --upgrade \
    --target "$own" "paho-mqtt==$PAHO" "aiomqtt==$AIOMQTT" 2>&1 | grep -v "^WARNING: Location" || true
fi
# The console scripts of pyproject's [project.scripts], run by this venv's python: the
# tests that start `coordinator` or `edge-agent` from the venv's bin (the tutorial, the
# systemd units, deploy/credentials.sh) then run them on the oldest versions too.
.venv-oldest/bin/python - <<'PY'
import sys
import tomllib
from pathlib import Path

bin_dir = Path(sys.executable).parent
python = bin_dir / Path(sys.executable).name
scripts = tomllib.loads(Path("pyproject.toml").read_text())["project"]["scripts"]
for name, target in scripts.items():
    module, function = target.split(":")
    script = bin_dir / name
    script.write_text(
        f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
    )
    script.chmod(0o755)
PY
