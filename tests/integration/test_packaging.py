"""What ``pip install .`` puts at the top level of site-packages: fedbus's names, no generic ones."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

# The user-facing top level (DESIGN.md's layout); everything shared lives under fedbus.
EXPECTED_TOP_LEVEL = {"fedbus", "coordinator", "edge_agent", "client_selectors"}
# Not part of a source tree that is installed: environments, caches, run output.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "runs",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)


def test_pip_install_puts_only_fedbus_names_at_the_top_level(tmp_path: Path) -> None:
    # Prepare: the source tree, copied so the build leaves nothing in the repository.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    target = tmp_path / "site-packages"  # empty: all that is in it afterwards came from pip
    # Execute: offline (no dependencies, the build backend from this environment).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        timeout=300,
    )
    # Assert: the importable top-level names, as the wheel's RECORD lists them.
    (dist_info,) = target.glob("fedbus-*.dist-info")
    recorded = {
        line.split(",")[0].split("/")[0]
        for line in (dist_info / "RECORD").read_text().splitlines()
        if line
    }
    # Console scripts are recorded outside site-packages ("../../bin/..."), or under bin/.
    scripts = {"..", "bin"}
    top_level = {n for n in recorded if not n.endswith((".dist-info", ".data"))} - scripts
    assert top_level == EXPECTED_TOP_LEVEL
    # and on disk: nothing else landed beside them (console scripts go to bin/).
    on_disk = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")}
    assert on_disk - scripts == EXPECTED_TOP_LEVEL
