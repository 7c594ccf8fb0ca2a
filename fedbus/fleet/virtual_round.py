"""One device's simulated round on the virtual clock, the same on both sides of the bus.

The coordinator estimates completion times to pick the K fastest (non-adaptive path) and
the emulated agent reports its timings from the very same function, so a duration is a
model estimate, as in FedScale, and both sides agree on it bit for bit. The per-round
compute noise comes from a generator seeded by (job seed, round, partition): a round is
reproducible, and different clients and rounds draw independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedbus.fleet.profile import DeviceProfile
from fedbus.fleet.time_model import (
    PhaseTimes,
    compute_time,
    draw_noise,
    round_time,
    transfer_time,
    workload_flops,
)

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class RoundWork:
    """What a round costs a device: bytes down, FLOPs of training, bytes up."""

    download_bytes: int
    flops: float
    upload_bytes: int

    @classmethod
    def dense(
        cls, num_params: int, batch_size: int, steps: int, upload_bytes: int | None = None
    ) -> RoundWork:
        model = num_params * FLOAT32_BYTES
        return cls(
            model,
            workload_flops(num_params, batch_size, steps),
            model if upload_bytes is None else upload_bytes,
        )


def round_rng(seed: int, round_: int, partition: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, round_, partition])


def simulate_round(
    profile: DeviceProfile, start: float, work: RoundWork, *, seed: int, round_: int
) -> PhaseTimes:
    """Download, compute and upload from ``start`` with this round's noise draw."""
    rng = round_rng(seed, round_, profile.partition)
    return round_time(profile, start, work.download_bytes, work.upload_bytes, work.flops, rng)


def noise_factor(profile: DeviceProfile, *, seed: int, round_: int) -> float:
    """The same compute-noise factor :func:`simulate_round` draws for this round."""
    return draw_noise(round_rng(seed, round_, profile.partition))


def step_seconds(
    profile: DeviceProfile, start: float, flops_per_step: float, noise: float, steps: int = 1
) -> float:
    return compute_time(profile, start, flops_per_step * steps, noise)


def upload_seconds(profile: DeviceProfile, start: float, nbytes: int) -> float:
    return transfer_time(profile, start, nbytes, "upload")


def download_seconds(profile: DeviceProfile, start: float, nbytes: int) -> float:
    return transfer_time(profile, start, nbytes, "download")
