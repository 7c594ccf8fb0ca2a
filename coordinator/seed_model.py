"""A job's initial weights: built from the model entry point, or read from a seed file.

Building runs the model's code, which imports torch: about 1-1.5 s of CPU on a small
machine, all of it between the coordinator's start and the first task. A seed file (as
FEDn's ``seed.npz``) is built once, by ``coordinator seed JOB.yaml``, and named in the
job as ``initial_model``; the coordinator then starts without importing torch at all,
and every run of the job starts from exactly the same weights.

A seed file is a NumPy ``.npz`` of the model's floating-point state, one array per
name (``edge_agent.torch_state.state_to_numpy``'s names), float32.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from fedbus.protocol.entry_points import resolve


class SeedModelError(ValueError):
    """A seed file that cannot be read, or does not hold a usable model."""


def build(model: str, seed: int) -> dict[str, np.ndarray]:
    """``torch.manual_seed(seed); model()``'s floating-point state as float32 arrays."""
    # torch is imported here, not at module import: a coordinator with a seed file never
    # needs it, and one without pays for it in a worker thread while it connects.
    import torch

    from edge_agent.torch_state import state_to_numpy

    torch.manual_seed(seed)
    return state_to_numpy(resolve(model)())


def save(path: Path, tensors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, **tensors)  # type: ignore[arg-type]  # numpy's stub: a key could be allow_pickle


def load(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a seed file; :class:`SeedModelError` names the file and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            tensors = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SeedModelError(f"{path}: not a readable .npz seed model: {exc}") from exc
    if not tensors:
        raise SeedModelError(f"{path}: the seed model holds no arrays")
    for name, array in tensors.items():
        if array.dtype != np.float32:
            raise SeedModelError(f"{path}: array {name!r} is {array.dtype}, not float32")
        if not np.isfinite(array).all():
            raise SeedModelError(f"{path}: array {name!r} is not finite everywhere")
    return tensors
