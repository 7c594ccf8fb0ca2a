"""StepSeries, ActivityWindows, DeviceTrace and Bliss's dynamic windows, hand-computed."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from fleet_factories import make_profile

from fedbus.fleet.errors import InvalidTrace
from fedbus.fleet.trace import (
    DEFAULT_CYCLE_S,
    ActivityWindows,
    DeviceTrace,
    StepSeries,
    battery_factor,
    dynamic_windows,
)

C = DEFAULT_CYCLE_S


def series(times: list[float], values: list[float], cycle: float = C) -> StepSeries:
    return StepSeries(np.array(times), np.array(values), cycle)


# ------------------------------------------------------------------ StepSeries
def test_value_at_is_piecewise_constant_and_cyclic() -> None:
    s = series([0, 100, 200], [1, 2, 3], cycle=300)

    assert [s.value_at(t) for t in (0, 99.9, 100, 250, 299.9)] == [1, 1, 2, 3, 3]
    assert s.value_at(300) == 1  # the next cycle
    assert s.value_at(3 * 300 + 150) == 2
    assert s.value_at(-50) == 3  # t mod cycle, also before 0


@pytest.mark.parametrize(
    ("times", "values", "cycle", "field"),
    [
        ([5, 10], [1, 2], 100, "times"),  # must start at 0
        ([0, 10, 10], [1, 2, 3], 100, "times"),  # strictly increasing
        ([0, 100], [1, 2], 100, "times"),  # below the cycle
        ([0, 10], [1], 100, "values"),  # lengths
        ([0], [math.nan], 100, "values"),
        ([0], [1], 0, "cycle"),
        ([], [], 100, "times"),
    ],
)
def test_bad_series_name_the_field(
    times: list[float], values: list[float], cycle: float, field: str
) -> None:
    with pytest.raises(InvalidTrace) as info:
        series(times, values, cycle)
    assert info.value.field == field


def test_series_is_read_only_and_compares_by_value() -> None:
    s = series([0, 10], [1, 2], 20)

    with pytest.raises(ValueError, match="read-only"):
        s.values[0] = 5
    assert s == series([0, 10], [1, 2], 20)
    assert s != series([0, 10], [1, 3], 20)
    assert s.mean() == pytest.approx(1.5)


def test_time_to_complete_crosses_segments_stalls_and_wraps() -> None:
    # rate 2 on [0,10), 0 on [10,20), 1 on [20,30); cycle 30 s carries 30 units
    s = series([0, 10, 20], [2, 0, 1], 30)

    assert s.time_to_complete(0, 10) == pytest.approx(5)  # inside the first segment
    assert s.time_to_complete(5, 14) == pytest.approx(5 + 10 + 4)  # 10, stall 10 s, then 4
    assert s.time_to_complete(25, 9) == pytest.approx(5 + 2)  # 5 units, wrap, 4 units at 2/s
    assert s.time_to_complete(0, 30) == pytest.approx(30)  # one whole cycle exactly
    assert s.time_to_complete(12, 65) == pytest.approx(8 + 10 + 30 + 20 + 5)  # two wraps
    assert s.time_to_complete(3, 0) == 0


def test_time_to_complete_is_inf_when_the_cycle_carries_nothing() -> None:
    assert series([0, 10], [0, 0], 20).time_to_complete(3, 1) == math.inf


# ------------------------------------------------------------------ ActivityWindows
def test_is_active_half_open_and_cyclic() -> None:
    w = ActivityWindows.from_intervals([(100, 200), (500, 600)], cycle=1000)

    answers = {t: w.is_active(t) for t in (0, 99, 100, 199.9, 200, 550, 600, 1150, 2599)}
    assert answers == {
        0: False, 99: False, 100: True, 199.9: True, 200: False,
        550: True, 600: False, 1150: True, 2599: True,
    }  # fmt: skip


def test_is_active_is_stateless_in_any_query_order() -> None:
    w = ActivityWindows.from_intervals([(10, 20), (40, 45), (90, 100)], cycle=100)
    queries = [i * 0.7 for i in range(2000)]
    forward = [w.is_active(t) for t in queries]
    shuffled = list(enumerate(queries))
    random.Random(3).shuffle(shuffled)

    assert all(w.is_active(t) == forward[i] for i, t in shuffled)


def test_from_intervals_sorts_clips_and_merges() -> None:
    w = ActivityWindows.from_intervals([(50, 70), (-5, 10), (60, 80), (90, 120), (30, 30)], 100)

    assert w.intervals() == [(0, 10), (50, 80), (90, 100)]
    assert w.fraction() == pytest.approx(0.5)


def test_always_and_never() -> None:
    assert ActivityWindows.always(50).is_active(49.99)
    assert ActivityWindows.always(50).fraction() == 1
    assert not ActivityWindows.never(50).is_active(0)


def test_overlapping_windows_are_rejected() -> None:
    with pytest.raises(InvalidTrace, match="overlap"):
        ActivityWindows(np.array([0.0, 5.0]), np.array([10.0, 12.0]), 100)


# ------------------------------------------------------------------ DeviceTrace
@pytest.mark.parametrize(
    ("level", "factor"),
    [(100, 1.0), (70, 1.0), (69.9, 0.9), (50, 0.9), (30, 0.8), (10, 0.6), (9, 0.4), (-1, 0.4)],
)
def test_battery_factor_steps(level: float, factor: float) -> None:
    assert battery_factor(level) == factor


def test_trace_checks_ranges_and_shared_state_grid() -> None:
    with pytest.raises(InvalidTrace) as info:
        DeviceTrace(series([0], [60]), series([0], [50]), series([0], [50]))
    assert info.value.field == "rate.values"
    with pytest.raises(InvalidTrace, match="share one grid"):
        DeviceTrace(series([0], [5]), series([0, 10], [50, 60]), series([0], [50]))


def test_compute_factor_merges_availability_and_battery() -> None:
    trace = DeviceTrace(series([0], [5]), series([0, 10], [50, 100]), series([0, 10], [80, 20]))

    assert trace.compute_factor.values.tolist() == [0.5 * 1.0, 1.0 * 0.6]


# ------------------------------------------------------------------ dynamic windows
def _denormalise(w: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    rate = [round(v * 53 + 1, 6) for v in w[:5]]
    avail = [round(v * 65 + 35, 6) for v in w[5:10]]
    batt = [round(v * 100 - 1, 6) for v in w[10:]]
    return rate, avail, batt


def test_dynamic_windows_last_five_newest_last() -> None:
    p = make_profile(
        rate=([0, 10, 20, 30, 40, 50, 60], [1, 2, 3, 4, 5, 6, 7]),
        state_times=[0, 100],
        availability=[40, 90],
        battery=[10, 20],
        cycle=1000,
    )

    w = dynamic_windows(p, 65)

    assert w.shape == (15,)
    rate, avail, batt = _denormalise(w)
    assert rate == [3, 4, 5, 6, 7]
    # state has two segments; walking back wraps into the previous cycle: 90, 40, 90, 40, 90
    assert avail == [40, 90, 40, 90, 40]
    assert batt == [10, 20, 10, 20, 10]


def test_dynamic_windows_normalisation() -> None:
    p = make_profile(rate=([0], [54]), availability=[35], battery=[-1])

    assert dynamic_windows(p, 123).tolist() == [1.0] * 5 + [0.0] * 5 + [0.0] * 5


def test_dynamic_windows_replace_values_whose_midpoint_is_offline() -> None:
    # segment [30, 40) has midpoint 35, inside the offline gap [32, 38): its value 4 is
    # replaced by the newer kept value 5. The current value is kept even when offline.
    p = make_profile(
        rate=([0, 10, 20, 30, 40, 50, 60], [1, 2, 3, 4, 5, 6, 7]),
        active=[(0, 32), (38, 61)],
        cycle=1000,
    )

    rate, _, _ = _denormalise(dynamic_windows(p, 65))

    # 7 holds at t=65 (kept unchecked, though offline); 6 (mid 55) and 5 (mid 45) are
    # online; 4 (mid 35) is offline -> 5 again; 3 (mid 25) is online.
    assert rate == [3, 5, 5, 6, 7]


def test_dynamic_windows_wrap_the_48h_cycle() -> None:
    # breakpoints near the end of the 48 h cycle; at t = 48 h + 5 s we are in segment 0
    # of the next cycle, and the four older values come from the end of the previous one.
    p = make_profile(rate=([0, C - 30, C - 20, C - 10], [10, 20, 30, 40]))

    rate, _, _ = _denormalise(dynamic_windows(p, C + 5))

    assert rate == [10, 20, 30, 40, 10]
