"""PyramidFL overrides (ALGORITHMS.md §3 steps 4-5, §7 #10) and gradient-utility bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

from client_selectors import (
    ClientOverride,
    ClientProfile,
    OortSelector,
    PyramidFLKnobs,
    PyramidFLSelector,
    UnknownClientError,
)
from client_selectors.pyramidfl import adapted_steps, dropout_by_rank


def test_dropout_is_linear_in_gradient_rank() -> None:
    # ranks: 5 -> 0, first 3 -> 1, second 3 -> 2, 1 -> 3; d = 0.1 + rank * 0.5 / 4
    dropout = dropout_by_rank(np.array([5.0, 1.0, 3.0, 3.0]), 0.1, 0.6)
    np.testing.assert_allclose(dropout, [0.1, 0.475, 0.225, 0.35])


def test_extra_steps_fill_idle_time() -> None:
    # expected t = compute + (1 - d) * comm = [3.8, 5.3, 4.2]; the round lasts 5.3
    steps = adapted_steps(
        compute=np.array([2.0, 4.0, 1.0]),
        comm=np.array([2.0, 2.0, 8.0]),
        dropout=np.array([0.1, 0.35, 0.6]),
        local_steps=5,
        beta=1.0,
    )
    # c0: floor(1.5 / 0.4) = 3 idle steps -> ratio 1 + 3/5 -> 8; c1: none; c2: floor(1.1/0.2)=5 -> 10
    assert steps.tolist() == [8, 5, 10]
    halved = adapted_steps(
        np.array([2.0, 4.0, 1.0]), np.array([2.0, 2.0, 8.0]), np.array([0.1, 0.35, 0.6]), 5, 0.5
    )
    assert halved.tolist() == [6, 5, 7]  # ratios 1 + 1.5/5 and 1 + 2.5/5


def test_extra_steps_are_capped_at_ten_times_and_need_a_compute_estimate() -> None:
    steps = adapted_steps(
        compute=np.array([0.01, 100.0, 0.0]),
        comm=np.zeros(3),
        dropout=np.zeros(3),
        local_steps=5,
        beta=1.0,
    )
    assert steps.tolist() == [55, 5, 5]  # 11 * E at most; no compute estimate -> no extra


def pyramid(**knobs: object) -> PyramidFLSelector:
    selector = PyramidFLSelector(PyramidFLKnobs.model_validate(knobs), 0)
    timings = {"a": (2.0, 2.0), "b": (4.0, 2.0), "c": (1.0, 8.0), "d": (1.0, 1.0)}
    for client_id, (compute, comm) in timings.items():
        profile = ClientProfile(
            num_samples=100, duration=compute + comm, compute_time=compute, comm_time=comm
        )
        selector.register_client(client_id, profile)
    return selector


def entries(saved: float) -> float:
    """Entries dropped so int32 + float32 top-k saves ``saved`` of the upload bytes."""
    return 1.0 - (1.0 - saved) / 2.0


def test_plan_overrides_ranks_stored_gradient_utility() -> None:
    selector = pyramid(upload_share=1.0)  # [P]'s arithmetic: all of comm shrinks
    selector.select_participants(4, 0.0, ["a", "b", "c", "d"])
    for client_id, grad in {"a": 9.0, "b": 5.0, "c": 1.0}.items():
        selector.register_feedback(client_id, 1.0, 1, 3.0, True, gradient_utility=grad)
    plan = selector.plan_overrides(["c", "b", "a"], local_steps=5)
    # ranks a 0, b 1, c 2 of K = 3: d = 0.1 + rank / 6 of the upload bytes saved
    assert plan["a"].dropout_frac == pytest.approx(entries(0.1))
    assert plan["b"].dropout_frac == pytest.approx(entries(0.1 + 0.5 / 3))
    assert plan["c"].dropout_frac == pytest.approx(entries(0.1 + 1.0 / 3))
    # t = [2 + 0.9*2, 4 + (1 - 0.2667)*2, 1 + (1 - 0.4333)*8] = [3.8, 5.467, 5.533]
    assert plan["c"].local_steps == 5  # the slowest has no idle time
    assert plan["a"].local_steps == 5 + 4  # floor(1.733 / 0.4) = 4 idle steps
    assert plan["b"].local_steps == 5  # floor(0.067 / 0.8) = 0
    assert list(plan) == ["c", "b", "a"]


def test_dropout_saves_exactly_its_share_of_the_upload_bytes() -> None:
    # The bug this guards: top-k at keep = 1 - d pays an index per value, so d < 0.5 saved
    # nothing on the wire while the plan counted on (1 - d) of the upload.
    from edge_agent.compression import upload_bytes

    params = 100_000
    selector = pyramid(upload_share=1.0)
    selector.select_participants(4, 0.0, ["a", "b", "c", "d"])
    for client_id, grad in {"a": 9.0, "b": 5.0, "c": 1.0, "d": 0.5}.items():
        selector.register_feedback(client_id, 1.0, 1, 3.0, True, gradient_utility=grad)
    plan = selector.plan_overrides(["a", "b", "c", "d"], local_steps=5)
    saved = {"a": 0.1, "b": 0.225, "c": 0.35, "d": 0.475}  # 0.1 + rank * 0.5 / 4
    dense = upload_bytes(params, 1.0)
    for client_id, override in plan.items():
        sent = upload_bytes(params, 1.0 - override.dropout_frac)
        assert sent / dense == pytest.approx(1.0 - saved[client_id], abs=1e-4)


def test_only_the_upload_share_of_comm_shrinks() -> None:
    # One client, d = 0.6: comm 6 s of which 2/3 upload -> t = 1 + 6 * (1 - 0.4) = 4.6,
    # against [P]'s 1 + 6 * 0.4 = 3.4; a fast client fills the gap up to the slow one.
    compute, comm = np.array([1.0, 1.0]), np.array([6.0, 0.0])
    dropout = np.array([0.6, 0.1])
    ours = adapted_steps(compute, comm, dropout, 5, 1.0, upload_share=2.0 / 3.0)
    theirs = adapted_steps(compute, comm, dropout, 5, 1.0, upload_share=1.0)
    assert ours.tolist() == [5, 5 + 18]  # idle 3.6 s / 0.2 s per step
    assert theirs.tolist() == [5, 5 + 12]  # idle 2.4 s


def test_gradient_utility_starts_at_num_samples_and_stragglers_get_the_mean() -> None:
    selector = pyramid()
    assert selector.gradient_utility("d") == 100.0
    selector.select_participants(4, 0.0, ["a", "b", "c", "d"])
    selector.register_feedback("a", 2.0, 1, 3.0, True, gradient_utility=6.0, num_samples=1.0)
    selector.register_feedback("b", 4.0, 1, 3.0, True, gradient_utility=12.0, num_samples=2.0)
    selector.register_stragglers(["d"], {"d": 7.0}, 1)
    assert selector.gradient_utility("d") == pytest.approx((6.0 + 2 * 12.0) / 3)
    assert selector.gradient_utility("c") == 100.0


def test_switches_and_edge_cases() -> None:
    selector = pyramid(enable_dropout=False, enable_adapt_local_epoch=False)
    assert selector.plan_overrides(["a", "b"], 5) == {}
    only_steps = pyramid(enable_dropout=False)
    plan = only_steps.plan_overrides(["a", "b"], 5)
    assert plan["a"] == ClientOverride(dropout_frac=0.0, local_steps=5 + 5)  # idle 2 / 0.4
    only_dropout = pyramid(enable_adapt_local_epoch=False)
    plan = only_dropout.plan_overrides(["a"], 5)
    assert plan == {"a": ClientOverride(pytest.approx(entries(0.1)), None)}  # type: ignore[arg-type]
    no_dropout = pyramid(enable_adapt_local_epoch=False, dropout_low=0.0, dropout_high=0.0)
    assert no_dropout.plan_overrides(["a"], 5) == {"a": ClientOverride(0.0, None)}  # dense
    assert pyramid().plan_overrides([], 5) == {}
    with pytest.raises(UnknownClientError):
        pyramid().plan_overrides(["a", "zz"], 5)
    dup = pyramid().plan_overrides(["a", "a", "b"], 5)
    assert set(dup) == {"a", "b"} and dup["b"].dropout_frac == pytest.approx(entries(0.35))


def test_selection_is_oorts() -> None:
    pyr = pyramid()
    plain = OortSelector.from_state(pyr.state() | {"name": "oort", "knobs": {}})
    online = ["a", "b", "c", "d"]
    for r in range(5):
        assert pyr.select_participants(2, 0.0, online).clients == (
            plain.select_participants(2, 0.0, online).clients
        ), r
