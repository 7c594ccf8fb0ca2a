"""Builders: seeded determinism, realistic spreads, and the FLASH builder on the real files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fleet_factories import TRACES_DIR

from fedbus.fleet.builders import (
    FEDSCALE_MS_MEAN,
    FEDSCALE_MS_RANGE,
    build_flash,
    build_synthetic,
    calibrate_ms_scale,
    replay_ready,
    series_rate,
)
from fedbus.fleet.device_state import coverage, synthesize_state
from fedbus.fleet.errors import TraceSourceError
from fedbus.fleet.fedscale import REFERENCE_WORK_PER_SAMPLE
from fedbus.fleet.flash_data import ReadyTrace, ThroughputSeries, load_flash_sources
from fedbus.fleet.fleet_file import fleet_to_json
from fedbus.fleet.trace import DEFAULT_CYCLE_S, ActivityWindows

C = DEFAULT_CYCLE_S
needs_traces = pytest.mark.skipif(
    not TRACES_DIR.is_dir(), reason=f"real trace files not present at {TRACES_DIR}"
)


# ------------------------------------------------------------------ synthetic
def test_synthetic_is_deterministic_under_a_seed() -> None:
    a, b = build_synthetic(30, seed=4), build_synthetic(30, seed=4)

    assert fleet_to_json(a) == fleet_to_json(b)
    assert fleet_to_json(a) != fleet_to_json(build_synthetic(30, seed=5))


def test_a_small_fleet_is_the_prefix_of_a_larger_one() -> None:
    small, large = build_synthetic(5, seed=9), build_synthetic(40, seed=9)

    assert small.profiles == large.profiles[:5]


def test_ids_and_partitions_follow_the_index() -> None:
    fleet = build_synthetic(12, seed=0)

    assert [p.partition for p in fleet] == list(range(12))
    assert fleet[11].client_id == "c00011"
    assert fleet.by_id("c00003") is fleet[3]


def test_synthetic_spreads_are_about_10x_compute_and_100x_bandwidth() -> None:
    fleet = build_synthetic(400, seed=2)
    flops = np.array([p.peak_flops for p in fleet])
    mbps = np.array([p.peak_throughput_mbps for p in fleet])

    assert 7 < flops.max() / flops.min() <= 10.01
    assert 50 < mbps.max() / mbps.min() <= 100.1


def test_availability_lab_is_always_on_and_mobile_is_sparse() -> None:
    lab = build_synthetic(50, seed=1, availability="lab")
    mobile = build_synthetic(300, seed=1, availability="mobile")
    shares = np.array([p.active.fraction() for p in mobile])

    assert all(p.active.fraction() == 1.0 for p in lab)
    assert 0.03 < shares.mean() < 0.3
    assert shares.min() < 0.05
    assert shares.max() < 1.0


def test_unknown_availability_choice_is_rejected() -> None:
    with pytest.raises(ValueError, match="availability"):
        build_synthetic(3, seed=0, availability="office")  # type: ignore[arg-type]


# ------------------------------------------------------------------ device state
def test_coverage_of_thirty_minute_cells() -> None:
    w = ActivityWindows.from_intervals([(900, 2700), (7200, 9000)], cycle=10_800)

    assert coverage(w).tolist() == [0.5, 0.5, 0.0, 0.0, 1.0, 0.0]


def test_synthesised_state_stays_in_bliss_ranges() -> None:
    w = ActivityWindows.from_intervals([(0, 3600), (80_000, 90_000)])
    avail, batt = synthesize_state(w, np.random.default_rng(0))

    assert avail.values.min() >= 35 and avail.values.max() <= 100
    assert batt.values.min() >= 1 and batt.values.max() <= 99
    assert np.array_equal(avail.times, batt.times) and len(avail) == 96


# ------------------------------------------------------------------ FLASH pieces
def test_replay_ready_slices_the_first_48h_with_any_window() -> None:
    day = 86_400.0
    # 4-day trace starting at 1000; nothing in days 0-1 except an empty window
    trace = ReadyTrace(
        "g", 1000.0, 1000 + 4 * day, ((2000.0, 2000.0), (1000 + day + 50, 1000 + day + 150))
    )

    w = replay_ready(trace)

    # day 0 to 2 holds the 100 s window (only the empty one is skipped): offset 0
    assert w.intervals() == [(day + 50, day + 150)]


def test_replay_ready_tiles_a_trace_shorter_than_the_cycle() -> None:
    day = 86_400.0
    trace = ReadyTrace("g", 500.0, 500 + day, ((600.0, 700.0),))

    assert replay_ready(trace).intervals() == [(100.0, 200.0), (day + 100, day + 200)]


def test_series_rate_scales_to_the_series_peak() -> None:
    s = ThroughputSeries("t", np.array([0.0, 1.0, 2.0]), np.array([1.0, 2.0, 4.0]), 3.0)

    rate = series_rate(s)

    assert rate.values.tolist() == [13.5, 27.0, 54.0]
    assert rate.cycle == 3.0


def test_calibration_hits_fedscale_mean() -> None:
    scores = np.array([200.0, 1_000.0, 5_000.0, 20_000.0, 80_000.0])
    k = calibrate_ms_scale(scores)

    assert np.clip(k / scores, *FEDSCALE_MS_RANGE).mean() == pytest.approx(FEDSCALE_MS_MEAN)


def test_missing_traces_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceSourceError, match="is not a directory"):
        build_flash(tmp_path / "absent", 3, seed=0)


# ------------------------------------------------------------------ FLASH, real files
@needs_traces
def test_flash_builder_on_the_real_files() -> None:
    fleet = build_flash(TRACES_DIR, 120, seed=7)
    sources = load_flash_sources(TRACES_DIR)
    ms = np.array([p.compute_ms_per_sample for p in fleet])
    durations = {round(s.duration, 3) for s in sources.series}

    assert len(fleet) == 120 and fleet.source == "flash"
    assert ms.min() >= 15 and ms.max() <= 199 and ms.max() / ms.min() > 5
    for p in fleet:
        assert p.static["cpu_flops"] == pytest.approx(
            REFERENCE_WORK_PER_SAMPLE * 1000 / p.compute_ms_per_sample
        )
        assert 1 <= p.peak_throughput_mbps <= 204
        assert p.trace.rate.cycle in durations
        assert p.active.cycle == C
    shares = np.array([p.active.fraction() for p in fleet])
    assert 0.02 < shares.mean() < 0.3  # FLASH: median ready share 5.5 %, mean 9.5 %
    assert not any(math.isclose(s, 1.0) for s in shares)


@needs_traces
def test_flash_builder_is_deterministic_and_prefix_stable() -> None:
    a = build_flash(TRACES_DIR, 40, seed=3)

    assert fleet_to_json(a) == fleet_to_json(build_flash(TRACES_DIR, 40, seed=3))
    assert build_flash(TRACES_DIR, 10, seed=3).profiles == a.profiles[:10]
    assert fleet_to_json(a) != fleet_to_json(build_flash(TRACES_DIR, 40, seed=4))


@needs_traces
def test_flash_calibration_on_the_real_phones() -> None:
    sources = load_flash_sources(TRACES_DIR)
    scores = np.array([p.ai_score for p in sources.phones])
    ms = np.clip(calibrate_ms_scale(scores) / scores, *FEDSCALE_MS_RANGE)

    assert len(sources.phones) == 333
    assert ms.mean() == pytest.approx(78.0)
    assert len(sources.ready) == 710  # the isSuccess devices
