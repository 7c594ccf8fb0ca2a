"""A wall-clock job that asks for what only the virtual clock does is refused at load."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.config import JobConfigError, parse_job

BASE: dict[str, Any] = {
    "name": "wall",
    "model": "fedbus.examples.digits:make_model",
    "data": "fedbus.examples.digits:load_partition",
    "rounds": 1,
    "num_participants": 2,
}


def test_an_adaptive_budget_the_round_cannot_wait_for_is_refused_with_the_reason() -> None:
    with pytest.raises(JobConfigError, match=r"t_budget \(300.0 s\) must be below round_timeout"):
        parse_job({**BASE, "adaptive_training": True, "round_timeout": 60}, "job.yaml")


def test_time_model_params_on_the_wall_clock_is_refused() -> None:
    with pytest.raises(JobConfigError, match=r"job\.yaml: .*time_model_params"):
        parse_job({**BASE, "time_model_params": 1000}, "job.yaml")


def test_a_budget_inside_the_round_is_accepted() -> None:
    config = parse_job(
        {**BASE, "adaptive_training": True, "t_budget": 2.0, "round_timeout": 30}, "job.yaml"
    )
    assert config.t_budget == 2.0
