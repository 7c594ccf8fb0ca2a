"""A real agent's measured profile becomes its selector registration."""

from __future__ import annotations

import pytest

from coordinator.measured_profile import measured_client_profile


def test_nothing_measured_keeps_the_selector_default() -> None:
    client = measured_client_profile(50, {"site": "lab"}, local_steps=20, num_params=1000)
    assert (client.num_samples, client.duration, client.static) == (50, 1.0, {"site": "lab"})


def test_step_time_and_throughputs_make_a_round_estimate() -> None:
    static = {"step_time_s": 0.01, "download_bytes_per_s": 4000.0, "upload_bytes_per_s": 2000.0}
    client = measured_client_profile(50, static, local_steps=20, num_params=1000)
    assert client.compute_time == pytest.approx(0.2)
    assert client.comm_time == pytest.approx(4000 / 4000 + 4000 / 2000)  # 4 kB each way
    assert client.duration == pytest.approx(3.2)
    # Bliss's link feature comes from the faster measured direction: 4 kB/s = 0.032 Mbit/s.
    assert client.static == {**static, "peak_throughput_mbps": pytest.approx(0.032)}


def test_only_the_compute_part_when_the_link_is_not_measured_yet() -> None:
    client = measured_client_profile(5, {"step_time_s": 0.5}, local_steps=4, num_params=None)
    assert (client.duration, client.comm_time) == (2.0, 0.0)
