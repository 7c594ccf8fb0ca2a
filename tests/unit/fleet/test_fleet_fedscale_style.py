"""The FedScale-style fleet: heavy tails from the real profile files, FedScale's compute rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fleet_factories import TRACES_DIR

from fedbus.fleet.errors import TraceSourceError
from fedbus.fleet.fedscale_style import build_fedscale_style, read_training_latency
from fedbus.fleet.fleet_file import fleet_to_json
from fedbus.fleet.virtual_round import RoundWork, simulate_round

needs_traces = pytest.mark.skipif(
    not TRACES_DIR.is_dir(), reason=f"real trace files not present at {TRACES_DIR}"
)


@needs_traces
def test_deterministic_and_a_prefix_of_a_larger_fleet() -> None:
    small = build_fedscale_style(TRACES_DIR, 20, seed=3, charged_params=500_000)
    again = build_fedscale_style(TRACES_DIR, 20, seed=3, charged_params=500_000)
    large = build_fedscale_style(TRACES_DIR, 60, seed=3, charged_params=500_000)
    assert fleet_to_json(small) == fleet_to_json(again)
    assert [p.static for p in small] == [p.static for p in list(large)[:20]]


@needs_traces
def test_compute_follows_fedscales_rule_for_the_charged_model() -> None:
    # 3 * batch * steps * ms / 1000 seconds at full availability, whatever the charged size.
    for params in (100_000, 2_000_000):
        fleet = build_fedscale_style(TRACES_DIR, 5, seed=1, charged_params=params)
        for profile in fleet:
            flops = 3.0 * params * 10 * 5
            seconds = flops / profile.peak_flops
            expected = 3.0 * 10 * 5 * (profile.compute_ms_per_sample or 0.0) / 1000.0
            assert seconds == pytest.approx(expected, rel=1e-3)


@needs_traces
def test_compute_and_link_are_heavy_tailed_and_both_matter() -> None:
    params = 1_000_000
    fleet = build_fedscale_style(TRACES_DIR, 400, seed=1, charged_params=params)
    ms = np.array([p.compute_ms_per_sample for p in fleet])
    link = np.array([p.peak_throughput_mbps for p in fleet])
    assert np.percentile(ms, 90) / np.percentile(ms, 10) > 5
    assert np.percentile(link, 90) / np.percentile(link, 10) > 20
    times = [
        simulate_round(p, 43_200.0, RoundWork.dense(params, 10, 5), seed=1, round_=1) for p in fleet
    ]
    comp = np.median([t.t_comp for t in times])
    comm = np.median([t.t_dl + t.t_ul for t in times])
    assert 0.25 < comp / comm < 4.0


def test_latency_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "training_latency.json"
    bad.write_text('[{"Phone Model": "x", "ResNet Latency": "n/a"}]')
    with pytest.raises(TraceSourceError, match="ResNet Latency"):
        read_training_latency(bad)
    bad.write_text("{")
    with pytest.raises(TraceSourceError, match="unreadable"):
        read_training_latency(bad)
