"""The time model on hand-computed cases (peak 8 Mb/s: rate 54 -> 8 Mb/s, 27 -> 4 Mb/s)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from fleet_factories import make_profile

from fedbus.fleet.time_model import (
    NOISE_MU,
    NOISE_SIGMA,
    PhaseTimes,
    compute_rate,
    compute_time,
    draw_noise,
    fedscale_completion_time,
    fedscale_is_active,
    round_time,
    transfer_time,
    workload_flops,
)
from fedbus.fleet.trace import DEFAULT_CYCLE_S

C = DEFAULT_CYCLE_S
MB = 1_000_000 // 8  # bytes in one megabit


def test_download_crossing_a_breakpoint_continues_at_the_next_rate() -> None:
    p = make_profile(rate=([0, 100], [54, 27]))

    # 20 s at 8 Mb/s = 160 Mb, then the remaining 40 Mb at 4 Mb/s = 10 s
    assert transfer_time(p, 80, 200 * MB, "download") == pytest.approx(30)


def test_transfer_wraps_the_48h_cycle() -> None:
    p = make_profile(rate=([0, C - 100], [54, 27]))

    # 10 s at 4 Mb/s before the wrap = 40 Mb, then 160 Mb at 8 Mb/s = 20 s
    assert transfer_time(p, C - 10, 200 * MB, "download") == pytest.approx(30)
    assert transfer_time(p, 5 * C - 10, 200 * MB, "download") == pytest.approx(30)


def test_zero_bandwidth_segment_stalls_the_transfer() -> None:
    p = make_profile(rate=([0, 100, 200], [54, 0, 54]))

    # 10 s -> 80 Mb, stalled 100 s, then 80 Mb in 10 s
    assert transfer_time(p, 90, 160 * MB, "download") == pytest.approx(120)
    # upload at half speed (4 Mb/s): 40 Mb, stall 100 s, 120 Mb in 30 s
    assert transfer_time(p, 90, 160 * MB, "upload") == pytest.approx(140)


def test_a_transfer_that_can_never_finish_is_inf() -> None:
    p = make_profile(rate=([0, 100], [0, 0]))

    times = round_time(p, 0, 10 * MB, 10 * MB, 1e9, rng=None)

    assert times.t_dl == math.inf
    assert times.total == math.inf
    assert transfer_time(p, 0, 0, "download") == 0  # nothing to send takes no time


def test_round_time_runs_the_three_phases_in_sequence() -> None:
    p = make_profile()  # 8 Mb/s, 1e10 FLOP/s, full availability, battery 99

    times = round_time(p, 1000, 8 * MB, 8 * MB, 1e10, rng=None)

    assert times == PhaseTimes(1.0, 1.0, 2.0, 4.0)


def test_compute_crosses_state_segments_with_availability_and_battery() -> None:
    # factor 1.0 on [0, 100), then 50 % availability x battery 60 % (0.9) = 0.45
    p = make_profile(state_times=[0, 100], availability=[100, 50], battery=[99, 60])

    assert compute_rate(p, 50) == pytest.approx(1e10)
    assert compute_rate(p, 150) == pytest.approx(4.5e9)
    # 10 s -> 1e11 FLOPs, then 1e11 at 4.5e9 FLOP/s
    assert compute_time(p, 90, 2e11) == pytest.approx(10 + 1e11 / 4.5e9)
    times = round_time(p, 90, 0, 0, 2e11, rng=None)
    assert times.t_comp == pytest.approx(10 + 1e11 / 4.5e9)


def test_compute_that_can_never_finish_is_inf() -> None:
    p = make_profile(availability=[0.0])

    times = round_time(p, 0, MB, MB, 1e9, rng=None)

    assert (times.t_dl, times.t_comp, times.t_ul) == (pytest.approx(0.125), math.inf, math.inf)


def test_noise_is_one_seeded_lognormal_draw_per_round() -> None:
    p = make_profile()
    first = round_time(p, 0, 0, 0, 1e10, np.random.default_rng(5))
    again = round_time(p, 0, 0, 0, 1e10, np.random.default_rng(5))
    noise = np.random.default_rng(5).lognormal(NOISE_MU, NOISE_SIGMA)

    assert first == again
    assert first.t_comp == pytest.approx(1.0 / noise)
    assert round_time(p, 0, 0, 0, 1e10, None).t_comp == 1.0


def test_noise_has_mean_0_9() -> None:
    rng = np.random.default_rng(11)
    draws = np.array([draw_noise(rng) for _ in range(20_000)])

    assert draws.mean() == pytest.approx(0.9, abs=0.005)
    assert np.log(draws).std() == pytest.approx(0.25, abs=0.005)
    assert draw_noise(None) == 1.0


def test_an_offline_window_is_the_callers_check_at_start_and_end() -> None:
    p = make_profile(active=[(0, 100)])
    times = round_time(p, 50, 400 * MB, 0, 0, rng=None)  # 50 s at 8 Mb/s

    assert p.is_active(50)
    assert not p.is_active(50 + times.total)  # offline at 100 s: the round is lost
    assert p.is_active(C + 50)  # online again in the next cycle


def test_workload_flops() -> None:
    assert workload_flops(1000, 32, 5) == 3 * 1000 * 32 * 5


def test_fedscale_completion_time() -> None:
    # compute 3 * 20 * 5 * 100 ms = 30 s; model 1,024,000 B = 8,000 kbit at 1,000 Kbps = 8 s
    times = fedscale_completion_time(100.0, 1000.0, 20, 5, 1_024_000)

    assert times == PhaseTimes(8.0, 30.0, 8.0, 46.0)


def test_fedscale_is_active_is_closed_cyclic_and_stateless() -> None:
    active, inactive = [10.0, 50.0], [20.0, 60.0]
    expected = {5: False, 10: True, 20: True, 20.5: False, 55: True, 61: False, 155: True}
    items = list(expected.items()) * 3
    random.Random(1).shuffle(items)

    for t, online in items:
        assert fedscale_is_active(t, active, inactive, 100.0) is online
    assert not fedscale_is_active(5, [], [], 100.0)
