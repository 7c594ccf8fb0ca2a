"""The agent's measured step time and throughputs: EWMAs, priors, profile metadata."""

from __future__ import annotations

import pytest

from edge_agent.measurements import UPLOAD_PRIOR_BYTES_PER_S, Measurements, ewma


def test_ewma_starts_at_the_first_sample_and_then_weighs_the_newest() -> None:
    assert ewma(None, 4.0) == 4.0
    assert ewma(4.0, 2.0, weight=0.5) == 3.0


def test_step_time_is_per_model_and_per_step() -> None:
    m = Measurements()
    m.observe_steps("a:model", 10, 1.0)
    m.observe_steps("a:model", 5, 1.0)  # 0.2 s a step now: EWMA of 0.1 and 0.2
    assert m.step_estimate("a:model") == pytest.approx(0.15)
    assert m.step_estimate("b:model") is None
    m.observe_steps("b:model", 0, 0.0)  # nothing ran: nothing learned
    assert m.step_estimate("b:model") is None


def test_upload_time_uses_the_download_then_the_prior_until_an_upload_was_timed() -> None:
    m = Measurements()
    assert m.upload_seconds(125_000) == pytest.approx(125_000 / UPLOAD_PRIOR_BYTES_PER_S)
    m.observe_download(10_000, 1.0)  # 10 kB/s down: the same up until an upload says
    assert m.upload_seconds(10_000) == pytest.approx(1.0)
    m.observe_upload(1_000_000, 2.0)
    assert m.upload_seconds(1_000_000) == pytest.approx(2.0)


def test_profile_metadata_carries_only_what_was_measured() -> None:
    m = Measurements()
    assert m.as_static("x:y") == {}
    m.observe_steps("x:y", 4, 0.2)
    m.observe_download(1000, 0.5)
    assert m.as_static("x:y") == {"step_time_s": 0.05, "download_bytes_per_s": 2000.0}


def test_a_bad_measurement_is_refused() -> None:
    m = Measurements()
    with pytest.raises(ValueError, match="seconds"):
        m.observe_upload(10, float("nan"))
    with pytest.raises(ValueError, match="steps"):
        m.observe_steps("x:y", -1, 1.0)
