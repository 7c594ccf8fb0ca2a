"""PyramidFL (MobiCom'22): Oort's selection plus per-client overrides (ALGORITHMS.md §3, §0).

Selection, scoring and the pacer are Oort's unchanged (they use ``reward``). PyramidFL adds
one stored field, the *gradient utility* gradU = ||Δ||₂ · bin / 100 that the agent reports
as ``extra["gradient_utility"]`` (the intended ||Δ||, not [P]'s Δ − w), initialised to the
client's sample count, and uses it only to plan the kept clients' round (``plan_overrides``):

1. rank the kept clients by stored gradU, rank 0 = largest (ties keep the given order);
   dropout d = d_low + rank · (d_high − d_low) / K with K = len(kept), as in [P] (so the
   last rank gets just under d_high);
2. expected time t_k = compute_k + (1 − upload_share · d_k) · comm_k from the stored
   compute/comm times (see below); the round lasts max t_k;
3. idle time becomes extra local steps: ratio = min(10, β · ⌊(max t − t_k) / (compute_k / E)⌋
   / E) + 1 and steps = ⌊E · ratio⌋, so at most 11·E (+10x); a client with no compute time
   estimate gets no extra steps. The agent runs at most max(5 · #batches, E) of them ([P]'s
   learner cap; E reaches it as ``TrainConfig.base_local_steps``).

The agent applies d as a magnitude top-k sparsification (§0), not [P]'s per-tensor
Bernoulli dropout. Stragglers receive the round's sample-weighted means of both reward and
gradient utility.

**What was wrong, and the fix (issue 22).** [P] zeroes whole tensors, which then are not
sent: dropping d of the parameters saves d of the upload. A top-k payload pays an index
per kept value (int32 + float32: twice the bytes of a dense entry), so top-k at
keep = 1 − d, as first built here, saved *nothing* for d < 0.5 (the agent sends the
cheaper dense delta) and 20 % at d = 0.6: on the FLASH fleet PyramidFL uploaded 482 MB
where Oort uploaded 489 MB. Yet the plan counted on (1 − d)·comm, so the idle-time steps
it handed out overran, and its rounds were *longer* than Oort's (9.64 s vs 9.35 s median).
Two corrections make the plan and the wire agree:

* d is now the fraction of the upload's *bytes* saved, as in [P]: the agent keeps
  ``keep = (1 − d) / sparse_entry_cost`` of the entries (``sparse_entry_cost`` = bytes per
  sparse entry over bytes per dense one: 2 for int32 + float32, 3 for int32 + float16),
  and ``ClientOverride.dropout_frac`` carries the fraction of entries *not* sent,
  1 − keep. With error feedback (on by default) the dropped entries go out in a later
  round instead of being lost.
* only the upload shrinks: t_k = compute_k + comm_k · (1 − upload_share · d), with
  ``upload_share`` the upload's part of comm_k (2/3 on fedbus's time model, which uploads at
  half the download speed; [P]'s 1.0 counts the download as saved too).

Where it should win (docs/results/pyramidfl.md): the round is bounded by the slowest
selected client's upload, compute speeds differ widely among the selected (idle time to
turn into steps), local steps still pay (FedProx keeps them from drifting on skewed
data), and uploads can shrink (a large model on slow links).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from client_selectors.base import ClientId, ClientOverride, ClientProfile, check_duration
from client_selectors.oort import OORT_COLUMNS, OortKnobs, OortSelector
from client_selectors.table import Column

MAX_EXTRA_RATIO = 10.0


class PyramidFLKnobs(OortKnobs):
    """Oort's knobs plus PyramidFL's override knobs ([P] defaults)."""

    enable_dropout: bool = True
    enable_adapt_local_epoch: bool = True
    adaptive_epoch_beta: float = Field(1.0, ge=0.0)
    dropout_low: float = Field(0.1, ge=0.0, lt=1.0)
    dropout_high: float = Field(0.6, ge=0.0, lt=1.0)
    # Bytes per kept sparse entry over bytes per dense entry (int32 index + float32 value).
    sparse_entry_cost: float = Field(2.0, ge=1.0)
    # The upload's share of a client's comm time (upload at half the download speed: 2/3).
    upload_share: float = Field(2.0 / 3.0, ge=0.0, le=1.0)

    @field_validator("dropout_high")
    @classmethod
    def _dropout_order(cls, high: float, info: ValidationInfo) -> float:
        low = info.data.get("dropout_low")
        if low is not None and high < low:
            raise ValueError(f"must be >= dropout_low ({low})")
        return high


PYRAMIDFL_COLUMNS: dict[str, Column] = {**OORT_COLUMNS, "gradient": Column("float64")}


def dropout_by_rank(gradient: np.ndarray, low: float, high: float) -> np.ndarray:
    """d = low + rank·(high − low)/K, rank 0 for the largest gradient utility."""
    k = gradient.shape[0]
    order = np.argsort(-gradient, kind="stable")
    rank = np.empty(k, dtype=np.float64)
    rank[order] = np.arange(k, dtype=np.float64)
    result: np.ndarray = low + rank * (high - low) / max(k, 1)
    return result


def entries_dropped(dropout: np.ndarray, entry_cost: float) -> np.ndarray:
    """Fraction of delta entries left out so the upload shrinks by ``dropout`` of its bytes.

    keep = (1 − d) / entry_cost; d = 0 stays dense (nothing dropped).
    """
    return np.where(dropout > 0.0, 1.0 - (1.0 - dropout) / entry_cost, 0.0)


def adapted_steps(
    compute: np.ndarray,
    comm: np.ndarray,
    dropout: np.ndarray,
    local_steps: int,
    beta: float,
    upload_share: float = 1.0,
) -> np.ndarray:
    """⌊E·ratio⌋ local steps that fill each client's idle time until the slowest finishes.

    Expected time compute + comm·(1 − upload_share·d): the dropout saves upload bytes only.
    """
    expected = compute + (1.0 - upload_share * dropout) * comm
    if expected.size == 0 or local_steps <= 0:
        return np.full(compute.shape[0], max(local_steps, 0), dtype=np.int64)
    idle = float(expected.max()) - expected
    with np.errstate(divide="ignore"):
        per_step = np.where(compute > 0.0, compute / local_steps, np.inf)
    idle_steps = np.floor(idle / per_step)  # 0 where there is no compute estimate
    ratio = np.minimum(MAX_EXTRA_RATIO, beta * idle_steps / local_steps) + 1.0
    result: np.ndarray = np.floor(local_steps * ratio).astype(np.int64)
    return result


class PyramidFLSelector(OortSelector):
    """Oort plus gradient-utility-ranked dropout and idle-time local steps."""

    name: ClassVar[str] = "pyramidfl"
    Knobs: ClassVar[type[PyramidFLKnobs]] = PyramidFLKnobs
    columns: ClassVar[Mapping[str, Column]] = PYRAMIDFL_COLUMNS
    straggler_columns: ClassVar[tuple[str, ...]] = ("reward", "gradient")
    knobs: PyramidFLKnobs

    def _on_register(self, row: int, profile: ClientProfile) -> None:
        super()._on_register(row, profile)
        self._table["gradient"][row] = float(profile.num_samples)

    def _check_extra(self, extra: Mapping[str, float]) -> None:
        super()._check_extra(extra)
        if "gradient_utility" in extra:
            check_duration("gradient_utility", extra["gradient_utility"])

    def _on_feedback(self, row: int, extra: Mapping[str, float]) -> None:
        if "gradient_utility" in extra:
            self._table["gradient"][row] = float(extra["gradient_utility"])

    def gradient_utility(self, client_id: ClientId) -> float:
        """The stored gradient utility of a client."""
        return float(self._table["gradient"][self._table.row(client_id)])

    def plan_overrides(
        self, kept: Sequence[ClientId], local_steps: int
    ) -> dict[ClientId, ClientOverride]:
        k = self.knobs
        if not kept or not (k.enable_dropout or k.enable_adapt_local_epoch):
            return {}
        kept = list(dict.fromkeys(kept))  # a duplicate must not take two ranks
        rows = np.array([self._table.row(c) for c in kept], dtype=np.int64)
        tab = self._table
        if k.enable_dropout:
            dropout = dropout_by_rank(tab["gradient"][rows], k.dropout_low, k.dropout_high)
        else:
            dropout = np.zeros(rows.size, dtype=np.float64)
        steps: list[int | None] = [None] * rows.size
        if k.enable_adapt_local_epoch:
            planned = adapted_steps(
                tab["compute_time"][rows],
                tab["comm_time"][rows],
                dropout,
                local_steps,
                k.adaptive_epoch_beta,
                k.upload_share,
            )
            steps = [int(s) for s in planned]
        dropped = entries_dropped(dropout, k.sparse_entry_cost)
        return {
            client_id: ClientOverride(dropout_frac=float(dropped[i]), local_steps=steps[i])
            for i, client_id in enumerate(kept)
        }
