"""Bad input on the command line: one line naming what is wrong, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.broker_process import free_port

from .conftest import REPO

CLOSED_PORT = free_port()  # nothing listens there
SPEEDUPS_WARNING = "paho speed-ups not active"  # logged once when any is off (issue #21)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            [
                "coordinator.cli",
                "submit",
                "jobs/digits.yaml",
                "--broker",
                f"127.0.0.1:{CLOSED_PORT}",
            ],
            f"cannot reach the MQTT broker at 127.0.0.1:{CLOSED_PORT}",
        ),
        (["coordinator.cli", "run", "nosuch.yaml"], "nosuch.yaml: cannot read job file"),
        (
            [
                "coordinator.cli",
                "credentials",
                "add",
                "--passwd",
                "{tmp}/pw",
                "--user",
                "bad:user",
                "--generate",
            ],
            "username 'bad:user' is not allowed",
        ),
        (["edge_agent.cli", "run", "--id", "bad id"], "agent id 'bad id' is not allowed"),
        (["edge_agent.cli", "emulate", "--fleet", "nope.json.gz"], "nope.json.gz: cannot read"),
        (
            ["edge_agent.cli", "run", "--id", "a1", "--password-file", "{tmp}/none"],
            "No such file or directory",
        ),
    ],
    ids=["broker-port", "job-file", "username", "agent-id", "fleet-file", "password-file"],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], says: str, tmp_path: Path) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert says in output
    assert "Traceback" not in output
    # One line, besides the start-up warning a run with paho speed-ups switched off logs.
    lines = [line for line in output.strip().splitlines() if SPEEDUPS_WARNING not in line]
    assert len(lines) == 1, output


def test_a_cuda_device_on_a_cpu_build_is_refused_up_front(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    done = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "run", "--id", "a1", "--device", "cuda"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no usable CUDA device" in done.stderr and "Traceback" not in done.stderr
