"""Character-level language model on Tiny Shakespeare: the code a user brings.

Each agent holds a contiguous block of the play text (``num_partitions`` blocks), the
last ``test_frac`` of its block held out. The model reads a window of characters and
predicts the next one at every position (a GRU); ``validate`` reports perplexity
(exp of the mean cross-entropy per character) and bits per character. The vocabulary is
the characters of the whole file, sorted, so every agent encodes text the same way.
No fedbus imports: ``context`` is duck-typed (``partition``, ``seed``, ``config``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import TensorDataset

WINDOW = 64
VOCAB = 65  # distinct characters of tinyshakespeare.txt
VALIDATE_CHARS = 8192


class CharGRU(nn.Module):
    def __init__(self, vocab: int = VOCAB, embed: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (batch, vocab) of the character after each window (built-in trainer's use)."""
        return self.sequence_logits(x)[:, -1, :]

    def sequence_logits(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(x))
        return self.head(out)


def make_model() -> nn.Module:
    return CharGRU()


@functools.lru_cache(maxsize=2)
def _encoded(path: str) -> np.ndarray:
    text = Path(path).read_text()
    chars = sorted(set(text))
    if len(chars) != VOCAB:
        raise ValueError(f"{path}: {len(chars)} distinct characters, the model expects {VOCAB}")
    table = {c: i for i, c in enumerate(chars)}
    return np.array([table[c] for c in text], dtype=np.int64)


def _block(
    path: str, partition: int, num_partitions: int, test_frac: float, max_chars: int
) -> tuple[np.ndarray, np.ndarray]:
    block = np.array_split(_encoded(path), num_partitions)[partition][:max_chars]
    cut = int(len(block) * (1 - test_frac))
    return block[:cut], block[cut:]


def _windows(ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    count = (len(ids) - 1) // WINDOW
    x = ids[: count * WINDOW].reshape(count, WINDOW)
    y = ids[WINDOW : (count + 1) * WINDOW : WINDOW][:count]
    return torch.from_numpy(x), torch.from_numpy(y)


def load_partition(
    partition: int,
    path: str,
    num_partitions: int = 4,
    test_frac: float = 0.1,
    max_chars: int = 200_000,
) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) windows of this agent's block: (64 characters, the next one)."""
    train, test = _block(path, partition, num_partitions, test_frac, max_chars)
    return TensorDataset(*_windows(train)), TensorDataset(*_windows(test))


def _data_args(context: Any) -> dict[str, Any]:
    return dict(context.config.get("data_args", {}))


def _load(model: nn.Module, weights: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})


def train(weights: dict[str, np.ndarray], context: Any) -> tuple[dict[str, np.ndarray], int, dict]:
    """``local_steps`` SGD steps on random windows, loss on every position."""
    config = context.config
    ids, _ = _block(
        **{
            "num_partitions": 4,
            "test_frac": 0.1,
            "max_chars": 200_000,
            **_data_args(context),
            "partition": context.partition,
        }
    )
    generator = torch.Generator().manual_seed(context.seed)
    model = make_model()
    _load(model, weights)
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config["learning_rate"], momentum=config["momentum"]
    )
    data = torch.from_numpy(ids)
    batch, losses = config["batch_size"], []
    for _ in range(config["local_steps"]):
        starts = torch.randint(0, len(ids) - WINDOW - 1, (batch,), generator=generator)
        offsets = starts[:, None] + torch.arange(WINDOW + 1)
        chunk = data[offsets]
        logits = model.sequence_logits(chunk[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), chunk[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    new = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    mean = float(np.mean(losses))
    return new, len(ids), {"loss": mean, "train_perplexity": math.exp(mean)}


@torch.no_grad()
def validate(weights: dict[str, np.ndarray], context: Any) -> dict[str, float]:
    """Perplexity and bits per character on this agent's held-out text."""
    args = {"num_partitions": 4, "test_frac": 0.1, "max_chars": 200_000, **_data_args(context)}
    _, ids = _block(partition=context.partition, **args)
    ids = ids[: VALIDATE_CHARS + 1]  # a fixed held-out slice: the same text every round
    model = make_model()
    _load(model, weights)
    model.eval()
    count = (len(ids) - 1) // WINDOW
    x = torch.from_numpy(ids[: count * WINDOW].reshape(count, WINDOW))
    y = torch.from_numpy(ids[1 : count * WINDOW + 1].reshape(count, WINDOW))
    logits = model.sequence_logits(x)
    nll = float(nn.functional.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1)))
    accuracy = float((logits.argmax(dim=-1) == y).float().mean())
    return {
        "num_examples": count * WINDOW,
        "loss": nll,
        "accuracy": accuracy,
        "perplexity": math.exp(nll),
        "bits_per_char": nll / math.log(2),
    }
