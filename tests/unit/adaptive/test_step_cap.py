"""PyramidFL's learner step cap, max(5 * batches, E), with E the job's base local steps."""

from __future__ import annotations

import pytest

from edge_agent.adaptive import knobs_of
from edge_agent.step_cap import adaptive_max_steps, base_steps, data_step_cap, fixed_steps
from fedbus.protocol.messages import TrainConfig


def _config(local_steps: int, base: int | None = None, batch_size: int = 10) -> TrainConfig:
    return TrainConfig(
        model="m:f",
        data="d:f",
        local_steps=local_steps,
        base_local_steps=base,
        batch_size=batch_size,
    )


@pytest.mark.parametrize(
    ("num_train", "base", "cap"),
    [
        (4, 5, 5),  # one batch: five passes = 5 steps, floor E = 5
        (4, 2, 5),
        (95, 5, 50),  # ten batches (the last one partial)
        (100, 5, 50),
        (101, 5, 55),
        (0, 3, 3),  # no data: E
    ],
)
def test_data_step_cap_is_five_passes_with_floor_e(num_train: int, base: int, cap: int) -> None:
    assert data_step_cap(base, num_train, batch_size=10) == cap


def test_base_steps_default_to_local_steps() -> None:
    assert base_steps(_config(7)) == 7
    assert base_steps(_config(55, base=5)) == 5


def test_fixed_steps_never_cut_the_jobs_own_steps() -> None:
    # 50 steps on 4 samples is what the job asked for: not an override, not capped.
    assert fixed_steps(_config(50), num_train=4) == 50
    assert fixed_steps(_config(50, base=50), num_train=4) == 50


def test_fixed_steps_cap_an_override_above_the_base() -> None:
    raised = _config(55, base=5)  # PyramidFL: E = 5, ratio 11
    assert fixed_steps(raised, num_train=4) == 5  # one batch: max(5, E)
    assert fixed_steps(raised, num_train=95) == 50  # ten batches: five passes
    # plenty of data: the override stands up to the job's max_steps_factor (10) x E
    assert fixed_steps(raised, num_train=10_000) == 50
    assert fixed_steps(_config(45, base=5), num_train=10_000) == 45
    assert fixed_steps(_config(12, base=5), num_train=95) == 12  # under the cap: as asked


def test_adaptive_cap_is_ten_times_the_base_not_the_override() -> None:
    raised = _config(55, base=5)
    assert adaptive_max_steps(raised) == 50  # 10 x E, not 10 x 55
    assert knobs_of(raised).max_steps == 50
    assert knobs_of(raised, num_train=4).max_steps == 5  # the data cap uses E too
    assert knobs_of(raised, num_train=95).max_steps == 50
    assert knobs_of(raised, num_train=10_000).max_steps == 50


def test_adaptive_cap_is_at_least_one_step() -> None:
    assert adaptive_max_steps(_config(0)) == 1
    assert adaptive_max_steps(_config(0), num_train=0) == 1


def test_the_jobs_max_steps_factor_bounds_the_adaptive_ceiling() -> None:
    # 200 samples: 20 batches, five passes = 100 steps; E = 5
    assert adaptive_max_steps(_config(5), num_train=200) == 50  # default 10 x E
    two = _config(5).model_copy(update={"max_steps_factor": 2})
    assert adaptive_max_steps(two, num_train=200) == 10
    assert adaptive_max_steps(two, num_train=20) == 10  # five passes (10) bind equally
    assert adaptive_max_steps(two, num_train=8) == 5  # one batch: five passes, floor E


def test_an_overrides_extra_steps_obey_the_jobs_max_steps_factor_too() -> None:
    # PyramidFL's idle-time override raised E = 5 to 40 steps; 200 samples allow 100
    raised = _config(40, base=5)
    assert fixed_steps(raised, num_train=200) == 40  # default factor 10: 50
    two = raised.model_copy(update={"max_steps_factor": 2})
    assert fixed_steps(two, num_train=200) == 10
    assert fixed_steps(_config(40).model_copy(update={"max_steps_factor": 2}), 200) == 40
