"""The selector plans with current time-model estimates: before a selection, the
candidates' standard-work durations now; after it, PyramidFL's parts for this round."""

from __future__ import annotations

from typing import cast

import numpy as np
import pytest

from client_selectors import (
    ClientProfile,
    OortKnobs,
    OortSelector,
    PyramidFLKnobs,
    PyramidFLSelector,
)
from client_selectors.pyramidfl import adapted_steps, dropout_by_rank
from client_selectors.snapshot import unpack_array
from coordinator.selector_times import current_estimates, refresh_estimates
from fedbus.fleet.builders import build_synthetic
from fedbus.fleet.time_model import round_time
from fedbus.fleet.virtual_round import RoundWork, simulate_round


def test_overrides_are_planned_from_this_rounds_parts() -> None:
    # Prepare: registration-time numbers that no longer hold (identical for everyone).
    fleet = build_synthetic(3, seed=4, availability="lab")
    ids = [p.client_id for p in fleet]
    selector = PyramidFLSelector(PyramidFLKnobs(), 0)
    for cid in ids:
        selector.register_client(cid, ClientProfile(num_samples=50, compute_time=1.0))
    stale = selector.plan_overrides(ids, local_steps=5)
    work = RoundWork.dense(2_000_000, 10, 5)
    # Execute
    refresh_estimates(selector, fleet, ids, 7_200.0, lambda _a: work, seed=3, round_=5)
    plan = selector.plan_overrides(ids, local_steps=5)
    # Assert: the plan is the one this round's parts give.
    parts = [simulate_round(p, 7_200.0, work, seed=3, round_=5) for p in fleet]
    compute = np.array([t.t_comp for t in parts])
    comm = np.array([t.t_dl + t.t_ul for t in parts])
    dropout = dropout_by_rank(np.full(3, 50.0), 0.1, 0.6)
    expected = adapted_steps(compute, comm, dropout, 5, 1.0, upload_share=2.0 / 3.0)
    assert [plan[c].local_steps for c in ids] == expected.tolist()
    assert [stale[c].local_steps for c in ids] != expected.tolist()


def _durations(selector: OortSelector) -> np.ndarray:
    table = cast(dict[str, object], selector.state()["table"])
    return unpack_array(cast(dict[str, dict[str, object]], table["columns"])["duration"])


def test_a_selection_sees_each_candidates_speed_now_without_the_rounds_noise() -> None:
    # Prepare: durations stored long ago (registration, an earlier round), all alike.
    fleet = build_synthetic(6, seed=2, availability="lab")
    ids = [p.client_id for p in fleet]
    selector = OortSelector(OortKnobs(), 0)
    for cid in ids:
        selector.register_client(cid, ClientProfile(num_samples=50, duration=5.0))
    work = RoundWork.dense(2_000_000, 10, 5)
    # Execute
    current_estimates(selector, fleet, ids[:4], 9_000.0, lambda _a: work)
    # Assert: the 4 candidates carry the time model's noise-free estimate at 9,000 s ...
    now = [
        round_time(p, 9_000.0, work.download_bytes, work.upload_bytes, work.flops, None).total
        for p in fleet
    ]
    stored = _durations(selector)
    assert stored[:4].tolist() == pytest.approx(now[:4])
    assert stored[4:].tolist() == [5.0, 5.0]  # ... the others keep what they had
    # the estimate is the device's state, not this round's draw
    noisy = [simulate_round(p, 9_000.0, work, seed=1, round_=3).total for p in fleet[:4]]
    assert stored[:4].tolist() != pytest.approx(noisy)
