"""Wine classification: the code a user brings, with no fedbus imports.

``load_partition(partition, num_partitions, seed)`` gives each agent a disjoint shuffled
share of scikit-learn's wine data (standardised with the whole set's statistics, which a
real deployment would fix up front), 20 % of it held out for validation.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_wine
from torch import nn
from torch.utils.data import TensorDataset


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 3))


def _split(partition: int, num_partitions: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    x, y = load_wine(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    mine = np.array_split(order, num_partitions)[partition]
    cut = int(len(mine) * 0.8)
    return x[mine[:cut]], y[mine[:cut]], x[mine[cut:]], y[mine[cut:]]


def load_partition(
    partition: int, num_partitions: int = 4, seed: int = 0
) -> tuple[TensorDataset, TensorDataset]:
    tx, ty, vx, vy = _split(partition, num_partitions, seed)
    return (
        TensorDataset(torch.from_numpy(tx), torch.from_numpy(ty)),
        TensorDataset(torch.from_numpy(vx), torch.from_numpy(vy)),
    )


def validate(weights: dict[str, np.ndarray], context: object) -> dict[str, float]:
    """Loss, accuracy and macro F1 of ``weights`` on this agent's held-out share."""
    args = getattr(context, "config", {}).get("data_args", {})
    _, _, vx, vy = _split(getattr(context, "partition", 0), **args)
    model = make_model()
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    with torch.no_grad():
        logits = model(torch.from_numpy(vx))
        labels = torch.from_numpy(vy)
        loss = float(nn.functional.cross_entropy(logits, labels))
        pred = logits.argmax(dim=1).numpy()
    f1s = []
    for c in range(3):
        tp = int(((pred == c) & (vy == c)).sum())
        fp, fn = int(((pred == c) & (vy != c)).sum()), int(((pred != c) & (vy == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    return {
        "num_examples": len(vy),
        "loss": loss,
        "accuracy": float((pred == vy).mean()),
        "macro_f1": float(np.mean(f1s)),
    }
