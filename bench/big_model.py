"""Entry points for ``bench/ingest.py``: an 11M-parameter model and tiny random data.

``make_model`` is one ``nn.Linear(11000, 1000)``: 11,001,000 float32 parameters, so a
dense update is 44.0 MB, the size of a ResNet-18 update. ``load_partition`` gives each
agent a handful of random samples, so a round's training is one cheap step and what the
benchmark sees is moving and aggregating the 44 MB updates.

Job file use: ``model: bench.big_model:make_model``, ``data: bench.big_model:load_partition``
(processes started with the repository root as working directory import ``bench`` as a
namespace package).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

IN_FEATURES = 11_000
OUT_FEATURES = 1_000
NUM_PARAMS = IN_FEATURES * OUT_FEATURES + OUT_FEATURES


def make_model() -> nn.Module:
    return nn.Linear(IN_FEATURES, OUT_FEATURES)


def load_partition(
    partition: int, num_partitions: int = 1, *, samples: int = 8, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + partition)
    x = torch.randn(2 * samples, IN_FEATURES, generator=generator)
    y = torch.randint(0, OUT_FEATURES, (2 * samples,), generator=generator)
    return TensorDataset(x[:samples], y[:samples]), TensorDataset(x[samples:], y[samples:])
