"""A group's curve: the median over its runs and the min-max envelope on one grid.

Pure functions of numbers (no matplotlib): the plots draw what these return.
"""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

SMOOTH_AFTER = 40  # rounds; longer per-round curves are drawn as a rolling mean


@dataclass(frozen=True)
class Band:
    """A group's curve: the median over its runs and the min-max envelope, on one grid."""

    x: tuple[float, ...]
    median: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


def step_band(curves: Sequence[Sequence[tuple[float, float]]]) -> Band:
    """Median/min/max of sampled curves, each held at its last value until the next sample
    (and after its end); the grid is every sample time from the latest first sample on."""
    curves = [sorted(c) for c in curves if c]
    if not curves:
        return Band((), (), (), ())
    first = max(c[0][0] for c in curves)
    grid = sorted({x for c in curves for x, _ in c if x >= first})
    xs = [[x for x, _ in c] for c in curves]
    columns = []
    for x in grid:
        values = [c[bisect.bisect_right(cx, x) - 1][1] for c, cx in zip(curves, xs, strict=True)]
        columns.append((statistics.median(values), min(values), max(values)))
    return _band(grid, columns)


def round_band(series: Sequence[dict[int, float]]) -> Band:
    """Median/min/max per round over the runs that have that round."""
    rounds = sorted({r for s in series for r in s})
    columns = []
    for r in rounds:
        values = [s[r] for s in series if r in s]
        columns.append((statistics.median(values), min(values), max(values)))
    return _band([float(r) for r in rounds], columns)


def smoothing_window(rounds: int) -> int:
    """Rounds a per-round curve is averaged over: 1 (raw) up to 40 rounds, else odd ~rounds/20."""
    return 1 if rounds <= SMOOTH_AFTER else max(3, round(rounds / 20)) | 1


def rolling_mean(values: Sequence[float], window: int) -> tuple[float, ...]:
    """Centred moving average; near the ends the window shrinks to what is there."""
    half = window // 2
    return tuple(
        statistics.fmean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))
    )


def rank_band(participations: Sequence[Sequence[int]], points: int = 1001) -> Band:
    """Participation curves on a common x: % of agents, ranked by rounds kept (descending)."""
    participations = [p for p in participations if p]
    if not participations:
        return Band((), (), (), ())
    grid = [100.0 * i / (points - 1) for i in range(points)]
    columns = []
    for pct in grid:
        values = [p[min(int(pct / 100 * len(p)), len(p) - 1)] for p in participations]
        columns.append((statistics.median(values), min(values), max(values)))
    return _band(grid, columns)


def _band(grid: Sequence[float], columns: Sequence[tuple[float, float, float]]) -> Band:
    return Band(
        tuple(grid),
        tuple(c[0] for c in columns),
        tuple(c[1] for c in columns),
        tuple(c[2] for c in columns),
    )
