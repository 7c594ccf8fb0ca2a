"""What ``bench/vs_flower.py``'s engines share: the job, a result, the child environment."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@dataclass
class Job:
    n: int
    rounds: int
    local_steps: int
    batch_size: int
    lr: float
    momentum: float
    alpha: float | None
    seed: int

    def describe(self) -> str:
        split = f"Dirichlet({self.alpha})" if self.alpha else "IID"
        return (
            f"digits, MLP 64-128-10, {split} over {self.n} clients, {self.rounds} rounds, "
            f"all {self.n} clients per round, {self.local_steps} local steps of "
            f"{self.batch_size}, lr {self.lr}, momentum {self.momentum}, seed {self.seed}, "
            f"federated evaluation on every client after every round"
        )


@dataclass
class Result:
    engine: str
    ok: bool = True
    note: str = ""
    rounds: list[float] = field(default_factory=list)  # per-round cycle, s
    train_phase: list[float] = field(default_factory=list)
    first_task_s: float | None = None
    total_s: float | None = None
    accuracy: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_round(self) -> float | None:
        steady = self.rounds[1:] or self.rounds
        return statistics.median(steady) if steady else None

    @property
    def train(self) -> float | None:
        steady = self.train_phase[1:] or self.train_phase
        return statistics.median(steady) if steady else None


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())
