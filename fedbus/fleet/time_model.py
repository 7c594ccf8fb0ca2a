"""How long a device takes for one round: the Bliss time model and FedScale's (pure).

Bliss form (ALGORITHMS 4.1), phase after phase, each phase integrated across trace
segments (it continues at the next segment's speed when it crosses a breakpoint, wraps
at the end of the cycle, stalls through zero segments and takes ``inf`` when the cycle
has no speed at all):

- bandwidth(t) = peak_throughput_mbps * rate(t) / 54            [Mb/s]
- download: ``download_bytes * 8 / 1e6`` Mb at bandwidth(t)
- compute:  ``compute_flops`` at (cpu_flops + gpu_flops) * availability(t)/100
  * battery_factor(battery(t)) * noise                          [FLOP/s]
- upload:   ``upload_bytes * 8 / 1e6`` Mb at bandwidth(t) / 2 (half the download speed)

``noise`` is one lognormal draw per round from the caller's generator. "Mean 0.9,
sigma 0.25" is read as: the factor's arithmetic mean is 0.9 and the underlying normal
has sigma 0.25, so mu = ln(0.9) - 0.25**2 / 2 (median ~0.873). ``rng=None`` means no
noise (factor 1). The time model never looks at the activity windows: callers check
``profile.is_active`` at the start and at ``start + total``.

FedScale form (ALGORITHMS 2.2): computation = 3 * batch * steps * ms_per_sample / 1000 s;
communication = 2 * model_bytes / 1024 * 8 kbit / Kbps, split evenly into download and
upload; availability is ``t mod finish_time`` inside closed ``[active[j], inactive[j]]``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedbus.fleet.profile import DeviceProfile
from fedbus.fleet.trace import RATE_MAX, battery_factor

Direction = Literal["download", "upload"]

UPLOAD_SPEED_FACTOR = 0.5
"""Upload runs at this fraction of the download bandwidth."""
AUGMENTATION_FACTOR = 3.0
"""Training FLOPs per parameter per sample: forward plus about 2x for backward."""
NOISE_MEAN = 0.9
NOISE_SIGMA = 0.25
NOISE_MU = math.log(NOISE_MEAN) - NOISE_SIGMA**2 / 2
"""mu of the underlying normal, chosen so that E[noise] = NOISE_MEAN."""
BITS_PER_BYTE = 8


@dataclass(frozen=True)
class PhaseTimes:
    """Seconds spent downloading, computing and uploading, and their sum."""

    t_dl: float
    t_comp: float
    t_ul: float
    total: float

    @classmethod
    def of(cls, t_dl: float, t_comp: float, t_ul: float) -> PhaseTimes:
        return cls(t_dl, t_comp, t_ul, t_dl + t_comp + t_ul)


def workload_flops(num_params: int, batch_size: int, steps: int) -> float:
    """Training work of one round: 3 * params * batch * steps FLOPs."""
    return AUGMENTATION_FACTOR * num_params * batch_size * steps


def draw_noise(rng: np.random.Generator | None) -> float:
    """One per-round compute-speed factor; exactly one draw, or 1.0 without a generator."""
    if rng is None:
        return 1.0
    return float(rng.lognormal(mean=NOISE_MU, sigma=NOISE_SIGMA))


def bandwidth_mbps(profile: DeviceProfile, t: float) -> float:
    """Download bandwidth at time ``t``: peak * rate / 54, in Mb/s."""
    return profile.peak_throughput_mbps * profile.trace.rate.value_at(t) / RATE_MAX


def compute_rate(profile: DeviceProfile, t: float, rng_factor: float = 1.0) -> float:
    """Compute speed at time ``t`` in FLOP/s, times the round's noise factor."""
    trace = profile.trace
    return (
        profile.peak_flops
        * trace.availability.value_at(t)
        / 100.0
        * battery_factor(trace.battery.value_at(t))
        * rng_factor
    )


def transfer_time(profile: DeviceProfile, start: float, nbytes: int, direction: Direction) -> float:
    """Seconds to move ``nbytes`` starting at ``start``; ``inf`` if it can never finish."""
    if nbytes <= 0:
        return 0.0
    if direction not in ("download", "upload"):
        raise ValueError(f"direction must be 'download' or 'upload', got {direction!r}")
    speed = UPLOAD_SPEED_FACTOR if direction == "upload" else 1.0
    mbps_per_rate_unit = profile.peak_throughput_mbps / RATE_MAX * speed
    if mbps_per_rate_unit <= 0:
        return math.inf
    megabits = nbytes * BITS_PER_BYTE / 1e6
    return profile.trace.rate.time_to_complete(start, megabits / mbps_per_rate_unit)


def compute_time(
    profile: DeviceProfile, start: float, flops: float, rng_factor: float = 1.0
) -> float:
    """Seconds to run ``flops`` starting at ``start``; ``inf`` if it can never finish."""
    if flops <= 0:
        return 0.0
    scale = profile.peak_flops * rng_factor
    if scale <= 0:
        return math.inf
    return profile.trace.compute_factor.time_to_complete(start, flops / scale)


def round_time(
    profile: DeviceProfile,
    start: float,
    download_bytes: int,
    upload_bytes: int,
    compute_flops: float,
    rng: np.random.Generator | None,
) -> PhaseTimes:
    """Download, then compute, then upload, each from where the previous one ended."""
    noise = draw_noise(rng)
    t_dl = transfer_time(profile, start, download_bytes, "download")
    if math.isinf(t_dl):
        return PhaseTimes.of(t_dl, math.inf, math.inf)
    t_comp = compute_time(profile, start + t_dl, compute_flops, noise)
    if math.isinf(t_comp):
        return PhaseTimes.of(t_dl, t_comp, math.inf)
    t_ul = transfer_time(profile, start + t_dl + t_comp, upload_bytes, "upload")
    return PhaseTimes.of(t_dl, t_comp, t_ul)


def fedscale_completion_time(
    compute_ms_per_sample: float,
    bandwidth_kbps: float,
    batch_size: int,
    local_steps: int,
    model_bytes: int,
) -> PhaseTimes:
    """FedScale's static estimate: 3*B*steps*ms/1000 s of compute, (up+down)/Kbps of comm."""
    t_comp = AUGMENTATION_FACTOR * batch_size * local_steps * compute_ms_per_sample / 1000.0
    one_way_kbit = model_bytes / 1024 * BITS_PER_BYTE
    one_way = one_way_kbit / bandwidth_kbps if bandwidth_kbps > 0 else math.inf
    if model_bytes <= 0:
        one_way = 0.0
    return PhaseTimes.of(one_way, t_comp, one_way)


def fedscale_is_active(
    t: float, active: Sequence[float], inactive: Sequence[float], finish_time: float
) -> bool:
    """FedScale availability: online iff active[j] <= t mod finish_time <= inactive[j].

    A binary search over the sorted ``active`` starts, so queries may come in any order
    (FedScale's original walks a cursor that assumes increasing times).
    """
    if finish_time <= 0 or not active:
        return False
    tau = float(t) % float(finish_time)
    j = bisect.bisect_right(active, tau) - 1
    return j >= 0 and j < len(inactive) and tau <= inactive[j]
