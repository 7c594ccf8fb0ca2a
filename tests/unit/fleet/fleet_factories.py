"""Helpers for the fleet tests: small hand-made profiles with known numbers.

(Not a conftest: a uniquely named module, so test folders never shadow each other.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedbus.fleet.profile import DeviceProfile
from fedbus.fleet.trace import DEFAULT_CYCLE_S, ActivityWindows, DeviceTrace, StepSeries

TRACES_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "traces"

STATIC = {
    "cpu_flops": 8e9,
    "gpu_flops": 2e9,
    "peak_throughput_mbps": 8.0,
    "ram_gb": 4.0,
    "storage_gb": 64.0,
    "battery_mah": 4000.0,
    "os": "Android",
    "os_version": 10.0,
    "brand": "Samsung",
    "model": "Galaxy S10",
    "device_type": "phone",
}


def make_profile(
    *,
    rate: tuple[Sequence[float], Sequence[float]] | None = None,
    availability: Sequence[float] | None = None,
    battery: Sequence[float] | None = None,
    state_times: Sequence[float] | None = None,
    active: Sequence[tuple[float, float]] | None = None,
    cycle: float = DEFAULT_CYCLE_S,
    **static: float | str,
) -> DeviceProfile:
    """Peak 8 Mb/s (1 Mb/s per 6.75 rate units), 1e10 FLOP/s, always on unless told."""
    r_times, r_values = rate if rate is not None else ([0.0], [54.0])
    times = list(state_times) if state_times is not None else [0.0]
    avail = list(availability) if availability is not None else [100.0] * len(times)
    batt = list(battery) if battery is not None else [99.0] * len(times)
    trace = DeviceTrace(
        StepSeries(np.array(r_times), np.array(r_values), cycle),
        StepSeries(np.array(times), np.array(avail), cycle),
        StepSeries(np.array(times), np.array(batt), cycle),
    )
    windows = (
        ActivityWindows.always(cycle)
        if active is None
        else ActivityWindows.from_intervals(active, cycle)
    )
    return DeviceProfile("dev-1", 0, {**STATIC, **static}, trace, windows)
