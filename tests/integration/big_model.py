"""A 100 MB model (25 M float32 parameters) on the digits data, for the chunking test."""

from __future__ import annotations

from torch import nn

HIDDEN = 333_334  # 64h + h + 10h + 10 = 75h + 10 parameters = 25,000,060


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
