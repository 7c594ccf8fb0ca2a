"""Statistical and gradient utility of one round's local training (pure numpy, no torch).

**Statistical utility** (Oort, fed back to the selectors as ``reward``) in the paper / [B]
form, ALGORITHMS §1.2 and §7 #1::

    U = |B| * sqrt( sum_k loss_k**2 / n )

* the sum and ``n`` run over **every** per-sample loss of the round, all batches and all
  epochs — not the last batch (FedScale's defect, issue #249), not an EMA of batch means
  (Oort's code), and it is the mean of the *squared* losses, not the squared mean loss;
* the bin ``|B| = min(|D_i|, steps * batch_size)``: the distinct samples the round can
  have touched, capped by the local data set. This is [B]'s bin and the same expression
  Oort uses for the reward a client is registered with (§1.1), so the first real
  feedback is on the scale of the prior. ``steps`` is the number of SGD steps actually
  run (with adaptive training it varies per round). With a partial last batch the nominal
  ``steps * batch_size`` exceeds the samples seen, but only once a whole epoch has run,
  i.e. once the bin is already capped at ``|D_i|``, so the two readings agree.

:class:`UtilityAccumulator` keeps two float64 scalars (the sum of squares and the count);
the training loop feeds it the per-sample losses of each batch (``reduction="none"``,
``.detach().cpu().numpy()`` on the torch side). More samples than ``steps * batch_size``
means a batch was added twice and raises. Non-finite losses raise at once: a diverged
round must not turn into a NaN reward.

**Gradient utility** (PyramidFL §3 step 3, with §0's fix)::

    gradU = ||delta||_2 * min(|D_i|, trained_samples) / 100

where ``delta`` is the update itself (PyramidFL's code subtracts the previous weights
from it, a bug). Pass the norm of what is uploaded: with a top-k payload that is
``compression.topk_norm(delta, keep_frac)`` at the final keep fraction — PyramidFL's
server computes it on the update it receives — and the same ``steps * batch_size`` as
``trained_samples`` so both utilities share one bin.

Errors are ``ValueError``: every one is a local fault of the caller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["UtilityAccumulator", "gradient_utility", "utility_bin"]


def utility_bin(num_local_samples: int, trained_samples: int) -> int:
    """``|B| = min(|D_i|, trained_samples)``: how many distinct samples the round counts."""
    if num_local_samples < 1:
        raise ValueError(f"num_local_samples must be >= 1, got {num_local_samples}")
    if trained_samples < 0:
        raise ValueError(f"trained_samples must be >= 0, got {trained_samples}")
    return min(num_local_samples, trained_samples)


class UtilityAccumulator:
    """Accumulates sum(loss**2) and the sample count over all batches of one round."""

    __slots__ = ("_count", "_sum_sq")

    def __init__(self) -> None:
        self._sum_sq = 0.0
        self._count = 0

    @property
    def num_samples(self) -> int:
        """Per-sample losses added so far."""
        return self._count

    @property
    def sum_sq_loss(self) -> float:
        """Sum of the squared per-sample losses added so far."""
        return self._sum_sq

    def rms_loss(self) -> float:
        """sqrt(mean squared per-sample loss) over every sample added."""
        if self._count == 0:
            raise ValueError("no per-sample losses were added this round")
        return math.sqrt(self._sum_sq / self._count)

    def add_batch(self, per_sample_losses: np.ndarray | Sequence[float]) -> None:
        """Add one batch's per-sample losses (any shape; flattened)."""
        losses = np.asarray(per_sample_losses, dtype=np.float64).reshape(-1)
        if losses.size == 0:
            return
        batch_sum = float(np.dot(losses, losses))
        if not math.isfinite(batch_sum):
            raise ValueError("per-sample losses contain NaN or inf")
        self._sum_sq += batch_sum
        self._count += int(losses.size)

    def utility(self, num_local_samples: int, steps: int, batch_size: int) -> float:
        """``min(|D_i|, steps * batch_size) * sqrt(sum(loss**2) / n)`` (module docstring)."""
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {steps}, {batch_size}")
        nominal = steps * batch_size
        if self._count > nominal:
            raise ValueError(
                f"{self._count} per-sample losses added but only {steps} steps x "
                f"{batch_size} = {nominal} samples trained: a batch was added twice?"
            )
        return utility_bin(num_local_samples, nominal) * self.rms_loss()


def gradient_utility(delta_norm: float, num_local_samples: int, trained_samples: int) -> float:
    """PyramidFL's ``||delta||_2 * min(|D_i|, trained_samples) / 100``."""
    if not (math.isfinite(delta_norm) and delta_norm >= 0.0):
        raise ValueError(f"delta_norm must be a finite number >= 0, got {delta_norm}")
    return delta_norm * utility_bin(num_local_samples, trained_samples) / 100.0
