"""Build fleets: synthetic, from the real FLASH-derived traces, or from FedScale pickles.

Every builder is deterministic in its seed, and client ``i`` draws from its own stream
(``SeedSequence(seed, spawn_key=(i,))``), so a fleet of 10 is the first 10 clients of
the fleet of 1,000 built with the same seed. Client ``i`` gets id ``c{i:05d}`` and
``partition = i``. docs/fleet.md gives every distribution and formula with units.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np

from fedbus.fleet.device_state import STATE_STEP_S, synthesize_state
from fedbus.fleet.fedscale import (
    REFERENCE_WORK_PER_SAMPLE,
    fedscale_profiles,
    read_behaviour,
    read_capacity,
)
from fedbus.fleet.flash_data import (
    DEFAULT_BANDWIDTH_SET,
    BenchmarkPhone,
    FlashSources,
    ReadyTrace,
    ThroughputSeries,
    load_flash_sources,
)
from fedbus.fleet.profile import DeviceProfile, Fleet, StaticValue, client_id_for
from fedbus.fleet.trace import DEFAULT_CYCLE_S, RATE_MAX, ActivityWindows, DeviceTrace, StepSeries

Availability = Literal["lab", "mobile"]
AVAILABILITY_CHOICES: tuple[str, ...] = ("lab", "mobile")
DAY_S = 86_400.0
FEDSCALE_MS_RANGE = (15.0, 199.0)
"""FedScale's observed compute range, ms per sample; FLASH phones are clipped into it."""
FEDSCALE_MS_MEAN = 78.0
LINK_MBPS_RANGE = (1.0, 204.0)
"""FedScale's static bandwidth range, Mb/s; MobiPerf medians are clipped into it."""
SYNTHETIC_FLOPS_RANGE = (5e9, 5e10)  # log-uniform: a 10x spread
SYNTHETIC_MBPS_RANGE = (1.0, 100.0)  # log-uniform: a 100x spread
_SYNTHETIC_DEVICES = (
    ("Samsung", "Galaxy A12", "phone"), ("Samsung", "Galaxy S10", "phone"),
    ("Samsung", "Galaxy Tab S6", "tablet"), ("Xiaomi", "Redmi Note 9", "phone"),
    ("Xiaomi", "Mi 10", "phone"), ("Huawei", "P30", "phone"), ("Google", "Pixel 5", "phone"),
    ("Oppo", "A53", "phone"), ("Motorola", "Moto G8", "phone"), ("OnePlus", "8T", "phone"),
    ("Apple", "iPhone 11", "phone"), ("Apple", "iPad Air", "tablet"),
)  # fmt: skip


def client_rng(seed: int, index: int) -> np.random.Generator:
    """Client ``index``'s own generator: independent of how many clients are built."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _wrapped(start: float, length: float, cycle: float) -> list[tuple[float, float]]:
    start %= cycle
    if start + length <= cycle:
        return [(start, start + length)]
    return [(start, cycle), (0.0, start + length - cycle)]


def mobile_windows(rng: np.random.Generator, cycle: float = DEFAULT_CYCLE_S) -> ActivityWindows:
    """Phone-like online windows: 80 % charge overnight; every day has 1 + Poisson(1.5)
    short idle spells of 2-30 min, so no phone is offline for the whole cycle."""
    nightly = rng.random() < 0.8
    intervals: list[tuple[float, float]] = []
    for day in range(max(1, int(cycle // DAY_S))):
        if nightly:
            start = day * DAY_S + rng.normal(23.5, 1.5) * 3600.0
            intervals += _wrapped(start, _log_uniform(rng, 1800.0, 8 * 3600.0), cycle)
        for _ in range(1 + rng.poisson(1.5)):
            start = day * DAY_S + rng.uniform(0.0, DAY_S)
            intervals += _wrapped(start, rng.uniform(120.0, 1800.0), cycle)
    rounded = [(round(a), round(b)) for a, b in intervals]
    return ActivityWindows.from_intervals(rounded, cycle)


def _synthetic_rate(rng: np.random.Generator, cycle: float) -> StepSeries:
    times = np.arange(0.0, cycle, STATE_STEP_S)
    level = rng.uniform(15.0, 50.0)
    z, noise = 0.0, np.empty(times.size)
    for i, e in enumerate(rng.normal(size=times.size)):
        z = 0.8 * z + 0.6 * e
        noise[i] = z
    return StepSeries(times, np.round(np.clip(level + 10.0 * noise, 1.0, RATE_MAX), 1), cycle)


def synthetic_profile(index: int, seed: int, availability: Availability) -> DeviceProfile:
    rng = client_rng(seed, index)
    brand, model, device_type = _SYNTHETIC_DEVICES[rng.integers(len(_SYNTHETIC_DEVICES))]
    total = _log_uniform(rng, *SYNTHETIC_FLOPS_RANGE)
    gpu_share = 0.0 if rng.random() < 0.5 else rng.uniform(0.2, 0.7)
    ios = brand == "Apple"
    static: dict[str, StaticValue] = {
        "cpu_flops": _sig(total * (1.0 - gpu_share)),
        "gpu_flops": _sig(total * gpu_share),
        "peak_throughput_mbps": _sig(_log_uniform(rng, *SYNTHETIC_MBPS_RANGE)),
        "ram_gb": float(rng.choice([2, 3, 4, 6, 8, 12])),
        "storage_gb": float(rng.choice([32, 64, 128, 256])),
        "battery_mah": float(round(rng.uniform(2500, 5500), -1)),
        "os": "iOS" if ios else "Android",
        "os_version": float(rng.choice([14, 15, 16] if ios else [8, 9, 10, 11, 12, 13])),
        "brand": brand,
        "model": f"{brand} {model}",
        "device_type": device_type,
    }
    cycle = DEFAULT_CYCLE_S
    active = ActivityWindows.always(cycle) if availability == "lab" else mobile_windows(rng, cycle)
    rate = _synthetic_rate(rng, cycle)
    avail, battery = synthesize_state(active, rng)
    return DeviceProfile(
        client_id_for(index), index, static, DeviceTrace(rate, avail, battery), active
    )


def build_synthetic(count: int, seed: int, availability: Availability = "mobile") -> Fleet:
    """A seeded fleet with ~10x compute and ~100x bandwidth spread."""
    if availability not in AVAILABILITY_CHOICES:
        raise ValueError(
            f"availability must be one of {AVAILABILITY_CHOICES}, got {availability!r}"
        )
    _check_count(count)
    profiles = tuple(synthetic_profile(i, seed, availability) for i in range(count))
    return Fleet(profiles, "synthetic", seed, f"synthetic, availability={availability}")


# ----------------------------------------------------------------------- FLASH-derived
def calibrate_ms_scale(scores: np.ndarray) -> float:
    """K such that clip(K / AI_Score, 15, 199) ms has mean 78 over the phones."""
    lo_ms, hi_ms = FEDSCALE_MS_RANGE
    lo, hi = math.log(lo_ms * scores.min()), math.log(hi_ms * scores.max())
    for _ in range(100):  # bisection on log K; the clipped mean grows with K
        mid = 0.5 * (lo + hi)
        if np.clip(math.exp(mid) / scores, lo_ms, hi_ms).mean() < FEDSCALE_MS_MEAN:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def ms_per_sample(phone: BenchmarkPhone, scale: float) -> float:
    return float(np.clip(scale / phone.ai_score, *FEDSCALE_MS_RANGE))


def replay_ready(trace: ReadyTrace, cycle: float = DEFAULT_CYCLE_S) -> ActivityWindows:
    """A phone's ready windows on the cycle: its first day-aligned slice with any window,
    or, for a trace shorter than the cycle, the whole trace repeated."""
    length = trace.end - trace.start
    if length >= cycle:
        base = trace.start
        for k in range(int((length - cycle) // DAY_S) + 1):
            lo = trace.start + k * DAY_S
            if any(min(b, lo + cycle) > max(a, lo) for a, b in trace.windows):
                base = lo
                break
        shifted = [(a - base, b - base) for a, b in trace.windows]
    else:
        shifted = [
            (a - trace.start + r * length, b - trace.start + r * length)
            for r in range(math.ceil(cycle / length))
            for a, b in trace.windows
        ]
    return ActivityWindows.from_intervals(shifted, cycle)


def series_rate(series: ThroughputSeries) -> StepSeries:
    """Bliss rate from a throughput series: 54 * mbps / max(mbps), clipped to [1, 54]."""
    times = np.round(series.times, 3)
    keep = np.concatenate(([True], np.diff(times) > 0))
    rate = np.clip(RATE_MAX * series.mbps / series.mbps.max(), 1.0, RATE_MAX)
    return StepSeries(times[keep], np.round(rate[keep], 2), round(series.duration, 3))


def _storage_gb(ram_gb: float) -> float:
    return float(min(512, max(4, 2 ** round(math.log2(16 * ram_gb)))))


def flash_profile(
    index: int, seed: int, sources: FlashSources, ready: ReadyTrace, ms_scale: float
) -> DeviceProfile:
    rng = client_rng(seed, index)
    phone = sources.phones[rng.integers(len(sources.phones))]
    link = float(np.clip(sources.link_mbps[rng.integers(len(sources.link_mbps))], *LINK_MBPS_RANGE))
    series = sources.series[rng.integers(len(sources.series))]
    ms = round(ms_per_sample(phone, ms_scale), 3)
    words = phone.model.split()
    static: dict[str, StaticValue] = {
        "cpu_flops": REFERENCE_WORK_PER_SAMPLE * 1000.0 / ms,
        "gpu_flops": 0.0,
        "peak_throughput_mbps": _sig(link),
        "ram_gb": phone.ram_gb,
        "storage_gb": _storage_gb(phone.ram_gb),
        "battery_mah": float(round(1500 + 250 * (phone.year - 2009) + rng.uniform(-300, 300), -1)),
        "os": "Android",
        "os_version": phone.android,
        "brand": phone.brand,
        "model": phone.model,
        "device_type": "tablet" if {"Tab", "Pad"} & set(words) else "phone",
    }
    active = replay_ready(ready)
    avail, battery = synthesize_state(active, rng)
    trace = DeviceTrace(series_rate(series), avail, battery)
    return DeviceProfile(
        client_id_for(index), index, static, trace, active,
        compute_ms_per_sample=ms, bandwidth_kbps=_sig(link) * 1000.0,
    )  # fmt: skip


def build_flash_fleet(sources: FlashSources, count: int, seed: int) -> Fleet:
    """Pure part of the FLASH builder: ``count`` profiles from already-read sources.

    Availability traces are dealt out in a seeded permutation (client i gets
    ``perm[i mod #traces]``); phone, MobiPerf link and throughput series are drawn per
    client from its own stream.
    """
    _check_count(count)
    perm = np.random.default_rng(seed).permutation(len(sources.ready))
    scale = calibrate_ms_scale(np.array([p.ai_score for p in sources.phones]))
    profiles = tuple(
        flash_profile(i, seed, sources, sources.ready[perm[i % perm.size]], scale)
        for i in range(count)
    )
    return Fleet(profiles, "flash", seed, f"FLASH-derived from {sources.root.name}")


def build_flash(
    traces_dir: str | Path, count: int, seed: int, bandwidth_set: str = DEFAULT_BANDWIDTH_SET
) -> Fleet:
    """Read the FLASH-derived files under ``traces_dir`` and build ``count`` profiles."""
    return build_flash_fleet(load_flash_sources(traces_dir, bandwidth_set), count, seed)


# ----------------------------------------------------------------------- FedScale
def build_fedscale(capacity: str | Path, behave: str | Path | None, count: int) -> Fleet:
    """Profiles from FedScale's capacity (and optional behaviour) pickles."""
    _check_count(count)
    behaviour = read_behaviour(behave) if behave is not None else None
    profiles = fedscale_profiles(read_capacity(capacity), behaviour, count)
    return Fleet(tuple(profiles), "fedscale", None, f"FedScale pickles {Path(capacity).name}")


def _check_count(count: int) -> None:
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
