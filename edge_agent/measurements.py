"""What an agent has measured about itself: step time, link throughput (pure, no clock).

The wall-clock budget planner needs the three numbers the time model gives an emulated
agent: seconds per SGD step on the job's model, seconds to download, seconds to upload
n bytes. A real agent measures them and keeps exponentially weighted moving averages
(the caller times things and reports seconds; this module never reads a clock):

* **step time** per model entry point: the warm-up steps of the job's first task, then
  every round's training (compute seconds / steps);
* **download throughput**: bytes of each global model over the seconds from its first
  message to its last (the link shaper's delay included);
* **upload throughput**: bytes of each update over the seconds from the publish call to
  its PUBACK. That time includes a round trip, so small payloads read as a slower link
  than the link is: the estimate errs on the side of a smaller upload, never a late one.

Before any upload was timed the agent takes the measured download rate (a symmetric link;
the first timed upload corrects it), and before even a download
:data:`UPLOAD_PRIOR_BYTES_PER_S` (1 Mbit/s, the slow end of the links the project plans
for). Assuming 1 Mbit/s whenever no upload was timed made every agent's first update a
sparse one, on 50 Mbit/s links too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

EWMA_WEIGHT = 0.5  # weight of the newest sample: rounds change devices' load quickly
UPLOAD_PRIOR_BYTES_PER_S = 125_000.0  # 1 Mbit/s


def _check(name: str, value: float, *, positive: bool = True) -> None:
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ValueError(
            f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {value}"
        )


def ewma(previous: float | None, sample: float, weight: float = EWMA_WEIGHT) -> float:
    return sample if previous is None else weight * sample + (1.0 - weight) * previous


@dataclass
class Measurements:
    """EWMAs of an agent's step time (per model), download and upload throughput."""

    step_seconds: dict[str, float] = field(default_factory=dict)
    download_bytes_per_s: float | None = None
    upload_bytes_per_s: float | None = None
    upload_prior_bytes_per_s: float = UPLOAD_PRIOR_BYTES_PER_S

    def observe_steps(self, model: str, steps: int, seconds: float) -> None:
        """``steps`` SGD steps of ``model`` took ``seconds`` (ignored when steps is 0)."""
        _check("seconds", seconds, positive=False)
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if steps == 0 or seconds == 0.0:
            return
        self.step_seconds[model] = ewma(self.step_seconds.get(model), seconds / steps)

    def observe_download(self, nbytes: int, seconds: float) -> None:
        _check("seconds", seconds, positive=False)
        if nbytes <= 0 or seconds <= 0.0:
            return
        self.download_bytes_per_s = ewma(self.download_bytes_per_s, nbytes / seconds)

    def observe_upload(self, nbytes: int, seconds: float) -> None:
        _check("seconds", seconds, positive=False)
        if nbytes <= 0 or seconds <= 0.0:
            return
        self.upload_bytes_per_s = ewma(self.upload_bytes_per_s, nbytes / seconds)

    def step_estimate(self, model: str) -> float | None:
        return self.step_seconds.get(model)

    def upload_seconds(self, nbytes: int) -> float:
        """Seconds an upload of ``nbytes`` is expected to take."""
        rate = self.upload_bytes_per_s
        if rate is None:
            # No upload timed yet: assume the link is symmetric (the first upload corrects
            # it), and 1 Mbit/s when not even a download was timed.
            rate = self.download_bytes_per_s or self.upload_prior_bytes_per_s
        return max(nbytes, 0) / rate

    def as_static(self, model: str | None = None) -> dict[str, float]:
        """The measured numbers as profile metadata (only those measured so far)."""
        static: dict[str, float] = {}
        if model is not None and model in self.step_seconds:
            static["step_time_s"] = self.step_seconds[model]
        if self.download_bytes_per_s is not None:
            static["download_bytes_per_s"] = self.download_bytes_per_s
        if self.upload_bytes_per_s is not None:
            static["upload_bytes_per_s"] = self.upload_bytes_per_s
        return static
