"""A short description of a fleet: size, spreads, availability (for ``fedbus-fleet show``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedbus.fleet.profile import Fleet
from fedbus.fleet.trace import RATE_MAX


@dataclass(frozen=True)
class Spread:
    """min / median / max of one quantity over the fleet."""

    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: np.ndarray) -> Spread:
        return cls(float(values.min()), float(np.median(values)), float(values.max()))

    @property
    def ratio(self) -> float:
        return self.high / self.low if self.low > 0 else float("inf")


@dataclass(frozen=True)
class FleetSummary:
    count: int
    source: str
    seed: int | None
    description: str
    peak_flops: Spread
    peak_mbps: Spread
    mean_mbps: Spread
    online_fraction: Spread
    mean_online: float
    always_on: int
    never_on: int
    windows_per_client: float
    ms_per_sample: Spread | None
    device_types: dict[str, int]


def summarize(fleet: Fleet) -> FleetSummary:
    flops = np.array([p.peak_flops for p in fleet])
    peak = np.array([p.peak_throughput_mbps for p in fleet])
    mean_rate = np.array([p.trace.rate.mean() for p in fleet])
    online = np.array([p.active.fraction() for p in fleet])
    ms = [p.compute_ms_per_sample for p in fleet if p.compute_ms_per_sample is not None]
    types: dict[str, int] = {}
    for p in fleet:
        key = str(p.static["device_type"])
        types[key] = types.get(key, 0) + 1
    return FleetSummary(
        count=len(fleet),
        source=fleet.source,
        seed=fleet.seed,
        description=fleet.description,
        peak_flops=Spread.of(flops),
        peak_mbps=Spread.of(peak),
        mean_mbps=Spread.of(peak * mean_rate / RATE_MAX),
        online_fraction=Spread.of(online),
        mean_online=float(online.mean()),
        always_on=int(np.sum(online >= 1.0)),
        never_on=int(np.sum(online <= 0.0)),
        windows_per_client=float(np.mean([len(p.active) for p in fleet])),
        ms_per_sample=Spread.of(np.array(ms)) if ms else None,
        device_types=dict(sorted(types.items())),
    )


def _row(name: str, s: Spread, fmt: str, unit: str) -> str:
    cells = f"{s.low:{fmt}} / {s.median:{fmt}} / {s.high:{fmt}}"
    return f"  {name:<22}{cells} {unit}  ({s.ratio:.1f}x)"


def render(s: FleetSummary) -> str:
    """Plain-text report, one fact per line."""
    lines = [
        f"fleet: {s.count} clients, source {s.source}, seed {s.seed}",
        f"  {s.description}",
        "                        min / median / max",
        _row("compute (peak)", s.peak_flops, ".3g", "FLOP/s"),
    ]
    if s.ms_per_sample is not None:
        lines.append(_row("compute (FedScale)", s.ms_per_sample, ".1f", "ms/sample"))
    lines += [
        _row("bandwidth (peak)", s.peak_mbps, ".3g", "Mb/s"),
        _row("bandwidth (mean)", s.mean_mbps, ".3g", "Mb/s"),
        f"  {'online share':<22}{s.online_fraction.low:.1%} / {s.online_fraction.median:.1%}"
        f" / {s.online_fraction.high:.1%}",
        f"  mean availability     {s.mean_online:.1%} of the time online;"
        f" {s.always_on} always on, {s.never_on} never on;"
        f" {s.windows_per_client:.1f} windows per client",
        "  device types          " + ", ".join(f"{k} {v}" for k, v in s.device_types.items()),
    ]
    return "\n".join(lines)
