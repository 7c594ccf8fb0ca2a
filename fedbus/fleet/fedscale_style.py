"""A FedScale-style fleet from the shipped device profiles: heavy tails in compute and link.

FedScale's own trace pickles are not available here (shared/data/traces/README.md); this
builds a fleet with their character from files that are:

* **compute**, FedScale's unit (ms per training sample of the job's model): the measured
  on-device ResNet latency of a random row of FLHetBench's ``training_latency.json`` (997
  phones, 40 ms to 15 s; median 172 ms), clipped to [15, 2000] ms. The long tail is kept:
  FedScale's 15-199 ms range comes from its own models, these are measurements of one
  heavier one. ``cpu_flops`` is set so that a forward pass of one sample of the *charged*
  model (``charged_params`` FLOPs; training charges 3x) takes exactly that long, which is
  FedScale's rule (computation = 3 * batch * steps * ms / 1000 s) for any charged size.
* **link**: a two-population mixture like a phone fleet's: with probability
  ``cellular_share`` (0.6) a Norway 3G/HSDPA throughput trace, replayed (mean 0.6-4.6 Mb/s),
  else a MobiPerf speed test's median (mostly 30-98 Mb/s on WiFi); clipped to FedScale's
  1-204 Mb/s after a floor of 0.2. The rate trace over the day is that 3G series.
* **availability**: phone-like windows (:func:`~fedbus.fleet.builders.mobile_windows`:
  80 % charge overnight, short idle spells by day), not the FLASH replay.
* static metadata (brand, RAM, Android version) from a random AI-Benchmark phone, so
  Bliss's features have something to read.

Deterministic in ``seed``; client ``i`` draws from its own stream, as every builder does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fedbus.fleet.builders import (
    _storage_gb,
    client_rng,
    mobile_windows,
    series_rate,
)
from fedbus.fleet.device_state import synthesize_state
from fedbus.fleet.errors import TraceSourceError
from fedbus.fleet.flash_data import FlashSources, load_flash_sources
from fedbus.fleet.profile import DeviceProfile, Fleet, StaticValue, client_id_for
from fedbus.fleet.trace import DEFAULT_CYCLE_S, DeviceTrace

TRAINING_LATENCY = Path("device_profiles_flash") / "training_latency.json"
MS_RANGE = (15.0, 2000.0)
LINK_FLOOR_MBPS = 0.2
LINK_CAP_MBPS = 204.0


def read_training_latency(path: Path) -> tuple[float, ...]:
    """The positive ``ResNet Latency`` values (ms) of FLHetBench's table, in file order."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TraceSourceError(str(path), f"unreadable ({exc})") from exc
    if not isinstance(rows, list):
        raise TraceSourceError(str(path), "must be a list of rows")
    values = []
    for row in rows:
        value = row.get("ResNet Latency") if isinstance(row, dict) else None
        if isinstance(value, int | float) and value > 0:
            values.append(float(value))
    if not values:
        raise TraceSourceError(str(path), "no row has a positive 'ResNet Latency'")
    return tuple(values)


def fedscale_style_profile(
    index: int,
    seed: int,
    sources: FlashSources,
    latencies_ms: tuple[float, ...],
    work_per_sample: float,
    cellular_share: float,
) -> DeviceProfile:
    rng = client_rng(seed, index)
    ms = float(np.clip(latencies_ms[rng.integers(len(latencies_ms))], *MS_RANGE))
    series = sources.series[rng.integers(len(sources.series))]
    if rng.random() < cellular_share:
        # The time model scales the peak by the rate trace (rate / 54, the series over its
        # own maximum): the peak of the series itself replays the measured throughput.
        link = float(series.mbps.max())
    else:
        link = sources.link_mbps[rng.integers(len(sources.link_mbps))]
    link = float(np.clip(max(link, LINK_FLOOR_MBPS), 1.0, LINK_CAP_MBPS))
    phone = sources.phones[rng.integers(len(sources.phones))]
    static: dict[str, StaticValue] = {
        "cpu_flops": work_per_sample * 1000.0 / ms,
        "gpu_flops": 0.0,
        "peak_throughput_mbps": float(f"{link:.4g}"),
        "ram_gb": phone.ram_gb,
        "storage_gb": _storage_gb(phone.ram_gb),
        "battery_mah": float(round(1500 + 250 * (phone.year - 2009), -1)),
        "os": "Android",
        "os_version": phone.android,
        "brand": phone.brand,
        "model": phone.model,
        "device_type": "phone",
    }
    active = mobile_windows(rng, DEFAULT_CYCLE_S)
    avail, battery = synthesize_state(active, rng)
    trace = DeviceTrace(series_rate(series), avail, battery)
    return DeviceProfile(
        client_id_for(index),
        index,
        static,
        trace,
        active,
        compute_ms_per_sample=round(ms, 3),
        bandwidth_kbps=float(f"{link:.4g}") * 1000.0,
    )


def build_fedscale_style(
    traces_dir: str | Path,
    count: int,
    seed: int,
    charged_params: int,
    cellular_share: float = 0.6,
) -> Fleet:
    """``count`` heavy-tailed phones whose ms/sample figures describe a ``charged_params`` model."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if charged_params < 1:
        raise ValueError(f"charged_params must be at least 1, got {charged_params}")
    if not 0.0 <= cellular_share <= 1.0:
        raise ValueError(f"cellular_share must be in [0, 1], got {cellular_share}")
    sources = load_flash_sources(traces_dir)
    latencies = read_training_latency(Path(traces_dir) / TRAINING_LATENCY)
    work = float(charged_params)  # the time model charges AUGMENTATION_FACTOR x this
    profiles = tuple(
        fedscale_style_profile(i, seed, sources, latencies, work, cellular_share)
        for i in range(count)
    )
    return Fleet(profiles, "fedscale-style", seed, f"FedScale-style from {Path(traces_dir).name}")
