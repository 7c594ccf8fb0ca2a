"""The selector plans PyramidFL overrides from this round's time-model estimates."""

from __future__ import annotations

import numpy as np

from client_selectors import ClientProfile, PyramidFLKnobs, PyramidFLSelector
from client_selectors.pyramidfl import adapted_steps, dropout_by_rank
from coordinator.selector_times import refresh_estimates
from fedbus.fleet.builders import build_synthetic
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
