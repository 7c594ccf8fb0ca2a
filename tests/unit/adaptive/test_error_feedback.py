"""Error feedback: the residual is exactly what top-k left out, and it comes back later."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.agent import UpdatePlan, build_update
from edge_agent.compression import densify, topk_indices
from edge_agent.error_feedback import ResidualStore, RunMark, compress
from edge_agent.model_store import GlobalModel
from edge_agent.trainer import TrainOutcome
from fedbus.protocol.messages import Task, Timings, TrainConfig
from fedbus.protocol.params import ParamLayout

RUN = RunMark(layout=(("w", (8,)),), version=3)


def test_residual_is_exactly_what_topk_dropped() -> None:
    # Prepare
    rng = np.random.default_rng(7)
    delta = rng.normal(size=1000).astype(np.float32)
    residual = rng.normal(scale=0.5, size=1000).astype(np.float32)
    compensated = delta + residual
    # Execute
    packed = compress(delta, residual, 0.1)
    # Assert
    assert packed.sparse is not None and packed.residual is not None
    sent = np.asarray(packed.sparse.indices)
    np.testing.assert_array_equal(sent, topk_indices(compensated, 0.1))
    np.testing.assert_array_equal(np.asarray(packed.sparse.values), compensated[sent])
    dropped = np.setdiff1d(np.arange(1000), sent)
    np.testing.assert_array_equal(packed.residual[dropped], compensated[dropped])
    np.testing.assert_array_equal(packed.residual[sent], 0.0)
    # Nothing is lost: what was sent plus what is kept is the compensated delta.
    np.testing.assert_array_equal(densify(packed.sparse) + packed.residual, compensated)


def test_float16_values_leave_their_rounding_in_the_residual() -> None:
    delta = np.array([1.0001, -3.0002, 0.001, 0.002], dtype=np.float32)
    packed = compress(delta, None, 0.5, np.float16)
    assert packed.sparse is not None and packed.residual is not None
    received = densify(packed.sparse, np.float32)
    np.testing.assert_allclose(received + packed.residual, delta, rtol=0, atol=1e-7)
    assert packed.residual[1] != 0.0  # -3.0002 is not a float16


def test_dense_send_carries_the_residual_and_leaves_none() -> None:
    delta = np.ones(5, dtype=np.float32)
    residual = np.arange(5, dtype=np.float32)
    packed = compress(delta, residual, 1.0)
    assert packed.sparse is None and packed.residual is None
    assert packed.dense is not None
    np.testing.assert_array_equal(packed.dense, delta + residual)


def test_a_residual_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        compress(np.ones(4, np.float32), np.ones(3, np.float32), 0.5)


def test_repeated_rounds_deliver_every_coordinate_eventually() -> None:
    # A constant delta at keep 0.25: without memory the same quarter is sent every round,
    # with memory the sum of what was sent tracks the sum of the deltas.
    delta = np.linspace(1.0, 0.25, 16, dtype=np.float32)
    residual: np.ndarray | None = None
    sent_total = np.zeros(16, dtype=np.float32)
    for _ in range(40):
        packed = compress(delta, residual, 0.25)
        assert packed.sparse is not None
        sent_total += densify(packed.sparse)
        residual = packed.residual
    assert residual is not None
    np.testing.assert_allclose(sent_total + residual, 40 * delta, rtol=1e-5)
    assert np.all(sent_total > 0.0)  # every coordinate went out at least once
    assert float(np.max(residual)) <= 4.0 * float(delta.max())  # bounded: at most 1/keep rounds


def test_store_keeps_per_agent_and_job_and_drops_on_a_new_run() -> None:
    store = ResidualStore()
    r = np.ones(8, dtype=np.float32)
    store.keep("a", "job", RUN, r)
    store.keep("b", "job", RUN, 2 * r)
    assert store.take("a", "other", RUN) is None
    later = RunMark(RUN.layout, RUN.version + 2)
    np.testing.assert_array_equal(store.take("a", "job", later), r)
    # The job started again: the version went backwards.
    assert store.take("b", "job", RunMark(RUN.layout, 0)) is None
    assert store.take("b", "job", later) is None  # dropped for good
    # Another model: the layout changed.
    assert store.take("a", "job", RunMark((("w", (4, 2)),), 9)) is None
    assert len(store) == 0 and store.nbytes == 0


def test_store_evicts_the_least_recently_used_within_its_bound() -> None:
    r = np.zeros(8, dtype=np.float32)  # 32 bytes
    store = ResidualStore(max_bytes=3 * r.nbytes)
    for agent in "abc":
        store.keep(agent, "job", RUN, r.copy())
    assert store.take("a", "job", RUN) is not None  # a is now the most recent
    store.keep("d", "job", RUN, r.copy())
    assert store.take("b", "job", RUN) is None
    assert {a for a in "acd" if store.take(a, "job", RUN) is not None} == {"a", "c", "d"}
    assert store.nbytes == 3 * r.nbytes and store.evicted == 1
    store.keep("e", "job", RUN, np.zeros(100, dtype=np.float32))  # larger than the bound
    assert store.take("e", "job", RUN) is None and store.nbytes == 3 * r.nbytes


def _task(error_feedback: bool, version: int) -> Task:
    config = TrainConfig(model="m:f", data="d:f", error_feedback=error_feedback)
    return Task(job="job", round=1, task_id="t", kind="train", model_version=version, config=config)


def _outcome(delta: np.ndarray, keep: float, success: bool = True) -> UpdatePlan:
    outcome = TrainOutcome(
        delta=delta.copy(),
        num_examples=10,
        trained_samples=10,
        loss=0.1,
        utility=1.0,
        steps=1,
        compute_seconds=0.0,
        keep_frac=keep,
        success=success,
    )
    return UpdatePlan(outcome, Timings())


def test_build_update_sends_the_compensated_top_k_and_remembers_the_rest() -> None:
    layout = ParamLayout.from_tensors({"w": np.zeros(8, np.float32)})
    model = GlobalModel("job", 3, {"w": np.zeros(8, np.float32)}, layout)
    store = ResidualStore()
    first = np.array([8, 1, 7, 2, 6, 3, 5, 4], dtype=np.float32)
    meta, tensors = build_update(_task(True, 3), "a", _outcome(first, 0.25), model, None, store)
    assert meta.encoding == "sparse"
    np.testing.assert_array_equal(tensors["delta"].indices, [0, 2])  # type: ignore[union-attr]
    # A failed round neither sends nor consumes the memory.
    build_update(_task(True, 4), "a", _outcome(first, 0.25, success=False), model, None, store)
    model4 = GlobalModel("job", 4, model.tensors, layout)
    second = np.zeros(8, dtype=np.float32)
    _, tensors = build_update(_task(True, 4), "a", _outcome(second, 0.25), model4, None, store)
    sparse = tensors["delta"]
    np.testing.assert_array_equal(sparse.indices, [4, 6])  # type: ignore[union-attr]
    np.testing.assert_array_equal(sparse.values, [6, 5])  # type: ignore[union-attr]
    # Without error_feedback the store is not touched.
    before = store.nbytes
    build_update(_task(False, 5), "a", _outcome(second, 0.25), model4, None, store)
    assert store.nbytes == before
