"""docs/tutorial.md, followed word for word in an empty temporary directory.

Its files are written as the page shows them and its commands run in order through bash,
with fedbus's console scripts on PATH and no PYTHONPATH: only the broker line is replaced
by the test's own mosquitto, and the port by that broker's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from coordinator.broker_process import BrokerProcess

REPO = Path(__file__).resolve().parents[2]
FILE_MARK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)
CONSOLE = re.compile(r"```console\n(.*?)```", re.S)


def tutorial_script(page: str, port: int) -> str:
    """The page as one bash script: files and commands in the order the page gives them."""
    steps: list[tuple[int, str]] = []
    for match in FILE_MARK.finditer(page):
        name, body = match.groups()
        steps.append((match.start(), f"cat > {name} <<'FEDBUS_EOF'\n{body}FEDBUS_EOF"))
    for match in CONSOLE.finditer(page):
        for line in match.group(1).splitlines():
            if not line.startswith("$ "):
                continue
            command = line[2:].replace("1883", str(port))
            if command.startswith("mosquitto"):
                continue  # the test's broker is already running on that port
            steps.append((match.start(), command))
    body = "\n".join(step for _, step in sorted(steps, key=lambda s: s[0]))
    return "set -e\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + body + "\n"


def test_tutorial_runs_from_an_empty_directory(tmp_path: Path, broker: BrokerProcess) -> None:
    # Prepare
    page = (REPO / "docs" / "tutorial.md").read_text()
    script = tutorial_script(page, broker.port)
    assert "coordinator run job.yaml" in script and script.count("edge-agent run") == 4
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["OMP_NUM_THREADS"] = "1"
    env["HOME"] = str(tmp_path)  # no package cache or config from the real home

    # Execute
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )

    # Assert: the job ran its ten rounds on code only the package carried, and learned.
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    local = [line for line in done.stdout.splitlines() if line.startswith('{"entry"')]
    assert [line.split('"')[3] for line in local] == ["train", "validate"]
    rounds = re.findall(r"^round +(\d+) +acc (\d\.\d+)", done.stdout, re.M)
    assert [int(r) for r, _ in rounds] == list(range(1, 11)), out[-3000:]
    final = re.search(r"job wine finished: final test accuracy (\d\.\d+)", done.stdout)
    assert final is not None and float(final.group(1)) > 0.8, out[-3000:]
    for i in range(4):
        assert len(list((tmp_path / "wine" / f"cache-{i}").iterdir())) == 1  # one package each
