"""Checkpoints: the global model and the job's state, written atomically after each round.

``model.fbt`` is the model in the wire envelope (so it loads zero-copy); ``state.json``
holds the round, history, counters and the selector's state. Both are written to
temporary files and renamed into place, state last, so a crash leaves the previous
checkpoint intact: the state file never points at a model that was not fully written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.protocol.codec import decode, encode


def _atomic_write(path: Path, data: bytes | bytearray) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(
    directory: Path, version: int, tensors: dict[str, np.ndarray], state: dict[str, Any]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / f"model-v{version}.fbt"
    _atomic_write(model_path, encode({"version": version}, tensors))
    _atomic_write(
        directory / "state.json", json.dumps({**state, "model_file": model_path.name}).encode()
    )
    for old in directory.glob("model-v*.fbt"):
        if old != model_path:
            old.unlink(missing_ok=True)


def load(directory: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    state_path = directory / "state.json"
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    envelope = decode((directory / state["model_file"]).read_bytes())
    tensors = {k: np.array(v) for k, v in envelope.tensors.items() if isinstance(v, np.ndarray)}
    return state, tensors
