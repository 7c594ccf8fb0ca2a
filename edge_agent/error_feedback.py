"""Error feedback for top-k updates: what compression dropped is sent later, not lost.

"Sparsified SGD with memory" (Stich, Cordonnier & Jaggi, NeurIPS'18; Karimireddy et al.,
ICML'19, EF-SGD): an agent that uploads only the top-k entries of its delta keeps the rest,
the *residual*, and adds it to its next delta for the same job before choosing the top k
again. Every coordinate's update is then delivered eventually, and top-k at keep 0.1 trains
as well as dense instead of losing what small coordinates carry round after round.

    compensated = delta + residual          (the residual of this job's last upload)
    sent        = top_k(compensated)        (exactly what goes on the wire)
    residual   <- compensated - sent        (what was dropped, plus value-cast rounding)

Decisions:

* **Pure.** :func:`compress` takes arrays, returns arrays; :class:`ResidualStore` is a
  plain bounded map. No I/O, no clock, no asyncio: the agent's shell calls it.
* **Exact.** With float32 values the residual is *exactly* ``compensated`` at every
  dropped index and 0 at every sent one; with float16 values a sent entry leaves its
  rounding error behind (what the coordinator receives is the float16 value).
* **Keyed by (agent, job), tagged with the run.** One process may host many agents
  (the emulator) and one agent may serve several jobs. A residual belongs to one run of a
  job's global model: it is dropped when the model's layout changes (another model) or its
  version goes backwards (the job started again; a resumed job keeps counting up).
* **Bounded.** Residuals are dense float32 vectors (P floats each); the store holds at most
  ``max_bytes`` of them and evicts the least recently used first. An evicted agent simply
  starts again without memory (plain top-k for one round); nothing else changes.
* **Failed rounds consume nothing.** :meth:`ResidualStore.take` only reads; the residual
  is replaced by :meth:`ResidualStore.keep` once an update was built, so a training
  failure leaves the memory for the next round.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_agent.compression import SparseDelta, is_dense, sparsify
from edge_agent.model_store import GlobalModel
from edge_agent.trainer import TrainOutcome
from fedbus.protocol.codec import SparseTensor, Tensor
from fedbus.protocol.messages import Task
from fedbus.protocol.params import ParamLayout

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Compressed",
    "ResidualStore",
    "RunMark",
    "compress",
    "compress_with_memory",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Residual memory per process: ~640 residuals of the 100k-parameter Fashion-MNIST MLP."""


@dataclass(frozen=True)
class RunMark:
    """Which run of a job's global model a residual was computed against."""

    layout: tuple[tuple[str, tuple[int, ...]], ...]
    version: int

    @classmethod
    def of(cls, layout: ParamLayout, version: int) -> RunMark:
        return cls(tuple((slot.name, slot.shape) for slot in layout.slots), version)

    def continues(self, earlier: RunMark) -> bool:
        """True when this model comes from the same run as ``earlier``, at or after it."""
        return self.layout == earlier.layout and self.version >= earlier.version


@dataclass(frozen=True)
class Compressed:
    """One upload under error feedback: the payload and the memory it leaves behind."""

    sparse: SparseDelta | None  # None: sent dense (keep_frac >= 1)
    dense: np.ndarray | None  # the compensated delta when sent dense
    residual: np.ndarray | None  # None when nothing was left behind


def compress(
    delta: np.ndarray,
    residual: np.ndarray | None,
    keep_frac: float,
    value_dtype: npt.DTypeLike = np.float32,
) -> Compressed:
    """Top-k of ``delta + residual``; the new residual is everything that was not sent.

    ``keep_frac >= 1`` sends the compensated delta dense and leaves no residual (up to the
    value cast, which then stays with the coordinator's dense decode and is not kept).
    Raises ``ValueError`` for a residual of another size or a non-finite delta.
    """
    if residual is not None and residual.shape != delta.shape:
        raise ValueError(f"residual has shape {residual.shape}, the delta {delta.shape}")
    compensated = delta.astype(np.float32, copy=True)
    if residual is not None:
        compensated += residual
    if is_dense(keep_frac):
        return Compressed(sparse=None, dense=compensated, residual=None)
    sparse = sparsify(compensated, keep_frac, value_dtype)
    # What the coordinator will add: the sent values as it decodes them, in float32.
    compensated[sparse.indices] -= np.asarray(sparse.values, dtype=np.float32)
    return Compressed(sparse=sparse, dense=None, residual=compensated)


class ResidualStore:
    """Residuals per (agent, job), tagged with their model run, at most ``max_bytes``."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str], tuple[RunMark, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def take(self, agent: str, job: str, run: RunMark) -> np.ndarray | None:
        """The residual to add to ``agent``'s next delta for ``job``; None if there is none.

        A residual from another run (other layout, or a version that went backwards) is
        dropped here.
        """
        key = (agent, job)
        entry = self._entries.get(key)
        if entry is None:
            return None
        mark, residual = entry
        if not run.continues(mark):
            self.drop(agent, job)
            return None
        self._entries.move_to_end(key)
        return residual

    def keep(self, agent: str, job: str, run: RunMark, residual: np.ndarray | None) -> None:
        """Store what the upload just built for ``run`` left behind (None: nothing)."""
        self.drop(agent, job)
        if residual is None or residual.nbytes > self.max_bytes:
            return
        while self._entries and self._bytes + residual.nbytes > self.max_bytes:
            _, (_, old) = self._entries.popitem(last=False)
            self._bytes -= old.nbytes
            self.evicted += 1
        self._entries[(agent, job)] = (run, residual)
        self._bytes += residual.nbytes

    def drop(self, agent: str, job: str) -> None:
        entry = self._entries.pop((agent, job), None)
        if entry is not None:
            self._bytes -= entry[1].nbytes


def compress_with_memory(
    task: Task,
    agent_id: str,
    outcome: TrainOutcome,
    model: GlobalModel,
    residuals: ResidualStore,
    value_dtype: type[np.floating],
) -> tuple[dict[str, Tensor], str, float]:
    """(tensors, encoding, grad_norm) of an update's ``delta + residual``; keeps the rest.

    What :func:`edge_agent.agent.build_update` sends under the task's ``error_feedback``:
    the norm is that of what is uploaded, as without error feedback.
    """
    run = RunMark.of(model.layout, task.model_version)
    residual = residuals.take(agent_id, task.job, run)
    if residual is not None and residual.shape != outcome.delta.shape:
        residual = None  # cannot happen with a matching layout; never mix vectors
    packed = compress(outcome.delta, residual, outcome.keep_frac, value_dtype)
    residuals.keep(agent_id, task.job, run, packed.residual)
    if packed.sparse is not None:
        sparse = packed.sparse
        return (
            {"delta": SparseTensor(sparse.size, sparse.indices, sparse.values)},
            "sparse",
            _l2_norm(np.asarray(sparse.values, dtype=np.float32)),
        )
    assert packed.dense is not None
    dense = packed.dense
    return (
        dict(model.layout.unflatten(dense.astype(value_dtype, copy=False))),
        "dense",
        _l2_norm(dense),
    )


def _l2_norm(values: np.ndarray) -> float:
    return math.sqrt(float(np.einsum("i,i->", values, values, dtype=np.float64)))
