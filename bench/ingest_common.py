"""What every part of ``bench/ingest.py`` shares: the payload's size, and how children start.

The bench starts itself as child processes (``bench/ingest.py --child ...``): stock paho
publishers and subscriber for the bare phase, replay publishers for the replay phase.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbus.protocol import paho_speedups

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "ingest.py"
IN_FEATURES, OUT_FEATURES = 11_000, 1_000  # bench/big_model.py (not imported: no torch here)
UPDATE_BYTES = (IN_FEATURES * OUT_FEATURES + OUT_FEATURES) * 4
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
MB = 1e6


def speedups_from_env() -> frozenset[str]:
    """The paho speed-ups to use, as every fedbus command reads them ($FEDBUS_PAHO_SPEEDUPS);
    children inherit the variable, so every process of a run uses the same ones."""
    return paho_speedups.parse_speedups(os.environ.get(paho_speedups.ENV_VAR, "on"))


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass(frozen=True)
class Launcher:
    """Starts the bench's child processes; every publisher (bare publishers, agents, replay)
    runs at ``nice`` (``--publisher-nice``)."""

    nice: int = 0

    def publisher_prefix(self) -> list[str]:
        return ["nice", "-n", str(self.nice)] if self.nice else []

    def child(
        self, argv: list[str], *, stdout: Any = subprocess.PIPE, publisher: bool = False
    ) -> subprocess.Popen[bytes]:
        """``bench/ingest.py ARGV`` as a child process."""
        return subprocess.Popen(
            [*(self.publisher_prefix() if publisher else []), sys.executable, str(SCRIPT), *argv],
            stdout=stdout,
            stderr=None if stdout == subprocess.PIPE else subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **CHILD_ENV},
        )
