"""Cyclic, piecewise-constant device traces and activity windows (pure, stateless).

Rules (ALGORITHMS.md 0, 4.1, 4.2):

- A :class:`StepSeries` holds sorted breakpoints ``times`` in ``[0, cycle)`` with
  ``times[0] == 0`` and one value per breakpoint; value ``values[i]`` holds on
  ``[times[i], times[i+1])`` and the last one until ``cycle``. The series repeats every
  ``cycle`` seconds (default 48 h = 172,800 s), so the value at any absolute time ``t``
  is looked up at ``t mod cycle`` by binary search. Nothing keeps a cursor.
- A :class:`DeviceTrace` is the Bliss triple: bandwidth ``rate`` (0-54; bandwidth =
  peak_throughput * rate / 54), CPU ``availability`` (0-100 %) and ``battery``
  (-1..100 %). Availability and battery share one time grid (Bliss's "carat"
  timestamps); the rate has its own grid and may have its own cycle (a short measured
  throughput series replayed on a loop).
- :class:`ActivityWindows` are half-open ``[start, end)`` intervals inside one cycle in
  which the device is online; :meth:`ActivityWindows.is_active` is a binary search.
- :func:`dynamic_windows` gives Bliss's 15 normalised window features.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from fedbus.fleet.errors import InvalidTrace

if TYPE_CHECKING:
    from fedbus.fleet.profile import DeviceProfile

DEFAULT_CYCLE_S = 172_800.0
"""48 hours: the cycle of Bliss traces."""

RATE_MAX = 54.0
"""Top of the Bliss rate scale (802.11g's 54 Mb/s); rate/54 is the fraction of peak."""

WINDOW_DEPTH = 5
"""Values per channel in :func:`dynamic_windows`."""

BATTERY_STEPS: tuple[tuple[float, float], ...] = (
    (70.0, 1.0),
    (50.0, 0.9),
    (30.0, 0.8),
    (10.0, 0.6),
)
"""(threshold %, compute factor): the first threshold the level reaches wins, else 0.4."""
BATTERY_FLOOR_FACTOR = 0.4


def battery_factor(level: float) -> float:
    """Compute-speed factor for a battery level in %: 1.0 at >= 70, ... 0.4 below 10."""
    for threshold, factor in BATTERY_STEPS:
        if level >= threshold:
            return factor
    return BATTERY_FLOOR_FACTOR


def _frozen(values: Iterable[float] | np.ndarray, field: str) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidTrace(field, f"must be a flat list, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InvalidTrace(field, "must be finite numbers")
    arr.flags.writeable = False
    return arr


def _check_cycle(cycle: float) -> float:
    cycle = float(cycle)
    if not (math.isfinite(cycle) and cycle > 0):
        raise InvalidTrace("cycle", f"must be a positive number of seconds, got {cycle}")
    return cycle


@dataclass(frozen=True, eq=False)
class StepSeries:
    """A cyclic piecewise-constant series: ``values[i]`` on ``[times[i], times[i+1])``."""

    times: np.ndarray
    values: np.ndarray
    cycle: float = DEFAULT_CYCLE_S

    def __post_init__(self) -> None:
        cycle = _check_cycle(self.cycle)
        times = _frozen(self.times, "times")
        values = _frozen(self.values, "values")
        if times.size == 0:
            raise InvalidTrace("times", "needs at least one breakpoint")
        if times.size != values.size:
            raise InvalidTrace("values", f"has {values.size} entries for {times.size} times")
        if times[0] != 0.0:
            raise InvalidTrace("times", f"must start at 0, got {times[0]}")
        if times.size > 1 and not np.all(np.diff(times) > 0):
            raise InvalidTrace("times", "must be strictly increasing")
        if times[-1] >= cycle:
            raise InvalidTrace("times", f"last breakpoint {times[-1]} is not below cycle {cycle}")
        object.__setattr__(self, "cycle", cycle)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)

    @classmethod
    def constant(cls, value: float, cycle: float = DEFAULT_CYCLE_S) -> StepSeries:
        return cls(np.zeros(1), np.array([value], dtype=np.float64), cycle)

    def __len__(self) -> int:
        return int(self.times.size)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StepSeries):
            return NotImplemented
        return (
            self.cycle == other.cycle
            and np.array_equal(self.times, other.times)
            and np.array_equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StepSeries({len(self)} steps, cycle={self.cycle:g}s)"

    def index_at(self, t: float) -> int:
        """Index of the segment holding absolute time ``t`` (at ``t mod cycle``)."""
        tau = float(t) % self.cycle
        return int(np.searchsorted(self.times, tau, side="right")) - 1

    def value_at(self, t: float) -> float:
        return float(self.values[self.index_at(t)])

    def segment_end(self, i: int) -> float:
        """End of segment ``i`` within the cycle (the next breakpoint, or ``cycle``)."""
        return float(self.times[i + 1]) if i + 1 < self.times.size else self.cycle

    def mean(self) -> float:
        """Time-weighted mean over one cycle."""
        widths = np.diff(np.append(self.times, self.cycle))
        return float(np.dot(widths, self.values) / self.cycle)

    @cached_property
    def _cumulative(self) -> np.ndarray:
        """Integral of the series from 0 to each breakpoint, and to ``cycle`` last."""
        if np.any(self.values < 0):
            raise InvalidTrace("values", "a rate series cannot be negative")
        widths = np.diff(np.append(self.times, self.cycle))
        return np.concatenate(([0.0], np.cumsum(self.values * widths)))

    def time_to_complete(self, start: float, work: float) -> float:
        """Seconds from ``start`` until the integral of the series reaches ``work``.

        The series is a rate (work per second): the work runs through segment after
        segment, wraps at the end of the cycle and stalls in zero segments. Returns
        ``inf`` when the whole cycle carries no rate, so the work can never finish.
        """
        if work <= 0:
            return 0.0
        cum = self._cumulative
        per_cycle = float(cum[-1])
        if per_cycle <= 0 or not math.isfinite(work):
            return math.inf
        cycles_before, tau = divmod(float(start), self.cycle)
        i = int(np.searchsorted(self.times, tau, side="right")) - 1
        target = float(cum[i]) + float(self.values[i]) * (tau - float(self.times[i])) + work
        extra_cycles, rest = divmod(target, per_cycle)
        if rest <= 0:  # lands exactly where a cycle's work completes: the earlier cycle
            extra_cycles -= 1
            rest = per_cycle
        j = int(np.searchsorted(cum, rest, side="left")) - 1  # cum[j] < rest <= cum[j+1]
        j = min(max(j, 0), self.times.size - 1)
        x = float(self.times[j]) + (rest - float(cum[j])) / float(self.values[j])
        finish = (cycles_before + extra_cycles) * self.cycle + x
        return max(finish - float(start), 0.0)


@dataclass(frozen=True, eq=False)
class ActivityWindows:
    """Sorted, disjoint half-open ``[start, end)`` online windows inside one cycle."""

    starts: np.ndarray
    ends: np.ndarray
    cycle: float = DEFAULT_CYCLE_S

    def __post_init__(self) -> None:
        cycle = _check_cycle(self.cycle)
        starts = _frozen(self.starts, "windows")
        ends = _frozen(self.ends, "windows")
        if starts.size != ends.size:
            raise InvalidTrace("windows", f"{starts.size} starts but {ends.size} ends")
        if starts.size:
            if starts[0] < 0 or ends[-1] > cycle:
                raise InvalidTrace("windows", f"must lie inside [0, {cycle:g}]")
            if not np.all(ends > starts):
                raise InvalidTrace("windows", "every window must end after it starts")
            if not np.all(starts[1:] >= ends[:-1]):
                raise InvalidTrace("windows", "must be sorted and must not overlap")
        object.__setattr__(self, "cycle", cycle)
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "ends", ends)

    @classmethod
    def always(cls, cycle: float = DEFAULT_CYCLE_S) -> ActivityWindows:
        return cls(np.array([0.0]), np.array([float(cycle)]), cycle)

    @classmethod
    def never(cls, cycle: float = DEFAULT_CYCLE_S) -> ActivityWindows:
        return cls(np.zeros(0), np.zeros(0), cycle)

    @classmethod
    def from_intervals(
        cls, intervals: Iterable[tuple[float, float]], cycle: float = DEFAULT_CYCLE_S
    ) -> ActivityWindows:
        """Sort, clip to ``[0, cycle]``, drop empty ones and merge touching/overlapping."""
        merged: list[list[float]] = []
        for a, b in sorted((max(0.0, float(a)), min(float(cycle), float(b))) for a, b in intervals):
            if b <= a:
                continue
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        arr = np.array(merged, dtype=np.float64).reshape(-1, 2)
        return cls(arr[:, 0], arr[:, 1], cycle)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ActivityWindows):
            return NotImplemented
        return (
            self.cycle == other.cycle
            and np.array_equal(self.starts, other.starts)
            and np.array_equal(self.ends, other.ends)
        )

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        return int(self.starts.size)

    def __repr__(self) -> str:
        return f"ActivityWindows({len(self)} windows, {self.fraction():.1%} online)"

    def is_active(self, t: float) -> bool:
        """Whether the device is online at absolute time ``t`` (looked up at t mod cycle)."""
        tau = float(t) % self.cycle
        i = int(np.searchsorted(self.starts, tau, side="right")) - 1
        return i >= 0 and tau < float(self.ends[i])

    def fraction(self) -> float:
        """Share of the cycle spent online."""
        return float(np.sum(self.ends - self.starts) / self.cycle)

    def intervals(self) -> list[tuple[float, float]]:
        return list(zip(self.starts.tolist(), self.ends.tolist(), strict=True))


@dataclass(frozen=True, eq=False)
class DeviceTrace:
    """Bliss's time-varying device state: bandwidth rate, CPU availability, battery."""

    rate: StepSeries
    availability: StepSeries
    battery: StepSeries

    def __post_init__(self) -> None:
        for name, series, lo, hi in (
            ("rate", self.rate, 0.0, RATE_MAX),
            ("availability", self.availability, 0.0, 100.0),
            ("battery", self.battery, -1.0, 100.0),
        ):
            if series.values.min() < lo or series.values.max() > hi:
                raise InvalidTrace(f"{name}.values", f"must lie in [{lo:g}, {hi:g}]")
        if self.availability.cycle != self.battery.cycle or not np.array_equal(
            self.availability.times, self.battery.times
        ):
            raise InvalidTrace("battery.times", "availability and battery must share one grid")

    @classmethod
    def constant(
        cls,
        rate: float = RATE_MAX,
        availability: float = 100.0,
        battery: float = 99.0,
        cycle: float = DEFAULT_CYCLE_S,
    ) -> DeviceTrace:
        return cls(
            StepSeries.constant(rate, cycle),
            StepSeries.constant(availability, cycle),
            StepSeries.constant(battery, cycle),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeviceTrace):
            return NotImplemented
        return (
            self.rate == other.rate
            and self.availability == other.availability
            and self.battery == other.battery
        )

    __hash__ = None  # type: ignore[assignment]

    @cached_property
    def compute_factor(self) -> StepSeries:
        """availability/100 x battery factor on the shared state grid (0..1)."""
        factors = [
            a / 100.0 * battery_factor(b)
            for a, b in zip(self.availability.values, self.battery.values, strict=True)
        ]
        return StepSeries(self.availability.times, np.array(factors), self.availability.cycle)


def _normalise(rates: np.ndarray, avail: np.ndarray, batt: np.ndarray) -> np.ndarray:
    return np.concatenate(((rates - 1.0) / 53.0, (avail - 35.0) / 65.0, (batt + 1.0) / 100.0))


def _last_values(series: StepSeries, active: ActivityWindows, t: float) -> np.ndarray:
    """The last WINDOW_DEPTH values at or before ``t``, newest last (ALGORITHMS 4.2).

    The value in force at ``t`` is always kept. Walking back one segment at a time, a
    value whose segment midpoint (in absolute time, so the 48 h wrap is seamless) falls
    in an offline period is replaced by the newer value kept after it.
    """
    n = len(series)
    cycle_start = math.floor(float(t) / series.cycle) * series.cycle
    i = series.index_at(t)
    kept = float(series.values[i])
    out = np.empty(WINDOW_DEPTH)
    out[-1] = kept
    for slot in range(WINDOW_DEPTH - 2, -1, -1):
        if i == 0:
            i = n - 1
            cycle_start -= series.cycle
        else:
            i -= 1
        midpoint = cycle_start + 0.5 * (float(series.times[i]) + series.segment_end(i))
        if active.is_active(midpoint):
            kept = float(series.values[i])
        out[slot] = kept
    return out


def dynamic_windows(profile: DeviceProfile, t: float) -> np.ndarray:
    """Bliss's 15 window features at time ``t``: rate, availability, battery x 5 each.

    Each block holds the last 5 values at or before ``t`` (newest last), normalised as
    rate (v-1)/53, availability (v-35)/65, battery (v+1)/100.
    """
    trace, active = profile.trace, profile.active
    return _normalise(
        _last_values(trace.rate, active, t),
        _last_values(trace.availability, active, t),
        _last_values(trace.battery, active, t),
    )
