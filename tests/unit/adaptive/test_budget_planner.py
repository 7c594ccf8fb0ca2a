"""The adaptive budget planner, driven by simulated SGD steps (no clock, no sleeps)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.budget_planner import (
    BudgetKnobs,
    BudgetPlanner,
    Finish,
    MeasureUtility,
    PlanAction,
    PlannerStateError,
    PlanReport,
    RunSteps,
    StopReason,
)
from edge_agent.compression import topk_norm, wire_bytes

UploadTime = Callable[[float], float]


def linear_upload(full_s: float) -> UploadTime:
    """Upload time proportional to keep (what §4.5's formula assumes)."""
    return lambda keep: full_s * min(keep, 1.0)


def sparse_upload(num_params: int, bytes_per_s: float, fixed_s: float = 0.0) -> UploadTime:
    """The real payload: int32 indices + float32 values below 1, dense at 1."""
    return lambda keep: fixed_s + wire_bytes(num_params, keep) / bytes_per_s


@dataclass
class Run:
    actions: list[PlanAction] = field(default_factory=list)
    spent_s: float = 0.0

    @property
    def finish(self) -> Finish:
        last = self.actions[-1]
        assert isinstance(last, Finish)
        return last


def drive(
    planner: BudgetPlanner,
    step_s: Callable[[], float],
    utilities: Iterator[float],
    measure_s: float | None = None,
    on_action: Callable[[PlanAction, float], None] | None = None,
) -> Run:
    """Carry out the planner's actions: steps take ``step_s()`` each, utilities come in order."""
    run = Run()
    for _ in range(100_000):
        action = planner.next_action()
        run.actions.append(action)
        if on_action is not None:
            on_action(action, run.spent_s)
        if isinstance(action, Finish):
            return run
        if isinstance(action, RunSteps):
            elapsed = sum(step_s() for _ in range(action.steps))
            run.spent_s += elapsed
            planner.steps_done(action.steps, elapsed)
        else:
            run.spent_s += measure_s or 0.0
            planner.utility_measured(next(utilities), measure_s)
    raise AssertionError("planner never finished")


def rising() -> Iterator[float]:
    """Utilities that always grow: only the budget can stop phase 2."""
    value = 0.0
    while True:
        value += 1.0
        yield value


def test_budget_too_small_for_one_step_is_a_reported_failure() -> None:
    for budget, step, upload in ((1.0, 2.0, 0.1), (1.0, 0.5, 0.6), (-5.0, 0.1, 0.0)):
        # Execute
        planner = BudgetPlanner(budget, BudgetKnobs(), linear_upload(upload / 0.3), step)

        # Assert: no work, nothing to upload, not a crash
        action = planner.next_action()
        assert action == Finish(keep_frac=0.0, reason=StopReason.BUDGET_TOO_SMALL, success=False)
        assert action.reason == "budget too small for one step"
        report = planner.report
        assert report.success is False and report.steps == 0 and report.over_budget is False
        assert planner.next_action() == action  # stays finished
        with pytest.raises(PlannerStateError):
            planner.steps_done(1, 1.0)
        with pytest.raises(PlannerStateError):
            planner.utility_measured(1.0)


def test_phase_1_only_fills_the_budget_with_the_full_upload() -> None:
    # Prepare: 1 s steps, full upload 10 s, budget 42 s
    knobs = BudgetKnobs(budget_recheck_steps=5, run_phase_2=False)
    planner = BudgetPlanner(42.0, knobs, linear_upload(10.0), step_time_estimate=1.0)

    # Execute
    run = drive(planner, lambda: 1.0, rising())

    # Assert: six blocks of 5 while 5 s + 10 s fit (42 -> 12), then the 2 steps that fit
    assert run.actions[:-1] == [RunSteps(5, 1)] * 6 + [RunSteps(2, 1)]
    assert run.finish == Finish(keep_frac=1.0, reason=StopReason.BUDGET_SPENT, success=True)
    report = planner.report
    assert (report.steps_phase1, report.steps_phase2, report.num_gains) == (32, 0, 0)
    assert report.budget_left_s == pytest.approx(10.0) and report.upload_s == 10.0


def test_phase_1_only_shrinks_the_payload_when_steps_ran_slow() -> None:
    # The estimate says 1 s a step; the first block takes 25 s of the 30 s budget.
    planner = BudgetPlanner(
        30.0, BudgetKnobs(run_phase_2=False), linear_upload(10.0), step_time_estimate=1.0
    )

    run = drive(planner, lambda: 5.0, rising())

    assert run.actions[0] == RunSteps(5, 1)
    assert run.finish.success and run.finish.reason == StopReason.BUDGET_SPENT
    assert run.finish.keep_frac == pytest.approx(0.5)  # 5 s left / 10 s full upload
    assert planner.report.step_time_s == 5.0 and not planner.report.over_budget


def test_phase_1_only_runs_one_step_when_only_a_smaller_payload_fits() -> None:
    planner = BudgetPlanner(
        8.0, BudgetKnobs(run_phase_2=False), linear_upload(10.0), step_time_estimate=1.0
    )

    run = drive(planner, lambda: 1.0, rising())

    assert run.actions[0] == RunSteps(1, 1)
    assert run.finish.keep_frac == pytest.approx(0.7)


def test_phase_2_stops_when_the_smoothed_gain_turns_non_positive() -> None:
    # Prepare: phase 1 spends 150 -> 100 s in ten blocks; then a baseline of 10 and gains
    # that rise, plateau and dip.
    gains = [1.0, 1.0, 0.5, 0.0, -0.2, -0.2, -0.2, -0.2, -0.2, -0.2]
    utilities = iter(np.cumsum([10.0, *gains]).tolist())
    planner = BudgetPlanner(150.0, BudgetKnobs(), linear_upload(100.0), step_time_estimate=1.0)

    # Execute
    run = drive(planner, lambda: 1.0, utilities)

    # Assert: s = 1, 1, 0.85, 0.595, 0.3565, 0.18955, 0.072685, -0.0091205 -> stop at gain 8
    # (with the weight 0.7 on the *new* gain instead it would stop at gain 6)
    assert run.actions[:10] == [RunSteps(5, 1)] * 10
    assert run.actions[10] == MeasureUtility(keep_frac=1.0)  # baseline
    assert run.finish.reason == StopReason.GAIN_NON_POSITIVE and run.finish.success
    report = planner.report
    assert (report.steps_phase1, report.steps_phase2, report.num_gains) == (50, 8, 8)
    assert report.smoothed_gain == pytest.approx(-0.0091205)
    assert planner.gains == pytest.approx(gains[:8])
    assert run.finish.keep_frac == pytest.approx(0.92)  # 92 s left of a 100 s full upload


def test_phase_2_stops_on_a_first_non_positive_gain() -> None:
    planner = BudgetPlanner(150.0, BudgetKnobs(), linear_upload(100.0), step_time_estimate=1.0)

    run = drive(planner, lambda: 1.0, iter([5.0, 5.0]))

    assert run.finish.reason == StopReason.GAIN_NON_POSITIVE
    assert planner.report.steps_phase2 == 1 and planner.report.smoothed_gain == 0.0


def test_phase_2_on_a_real_delta_whose_norm_plateaus() -> None:
    # Prepare: delta_t = w * (1 - exp(-t / 15)); upload the real sparse payload.
    rng = np.random.default_rng(11)
    w = rng.standard_normal(20_000).astype(np.float32) * rng.exponential(size=20_000).astype(
        np.float32
    )
    steps_run = 0
    upload = sparse_upload(20_000, bytes_per_s=4_000.0, fixed_s=0.5)  # full upload 20.5 s
    planner = BudgetPlanner(80.0, BudgetKnobs(), upload, step_time_estimate=1.0)

    # Execute
    while not isinstance(action := planner.next_action(), Finish):
        if isinstance(action, RunSteps):
            steps_run += action.steps
            planner.steps_done(action.steps, float(action.steps))
        else:
            delta = w * np.float32(1.0 - math.exp(-steps_run / 15.0))
            planner.utility_measured(topk_norm(delta, action.keep_frac))

    # Assert: stopped by the gain, well before the budget ran out, upload fits
    report = planner.report
    assert action.reason == StopReason.GAIN_NON_POSITIVE and action.success
    assert report.steps_phase2 >= 1 and report.num_gains == report.steps_phase2
    assert 0.3 <= action.keep_frac <= 0.5  # sparse only pays below the crossover
    assert upload(action.keep_frac) <= report.budget_left_s
    assert report.budget_left_s - 1.0 >= upload(0.3)  # another step would have fitted


def test_payload_never_goes_below_the_floor_and_phase_2_stops_before_it() -> None:
    # Prepare: utilities always rise, so only the budget stops phase 2.
    keeps: list[float] = []
    knobs = BudgetKnobs(min_payload_frac=0.3)
    planner = BudgetPlanner(60.0, knobs, linear_upload(40.0), step_time_estimate=1.0)

    # Execute
    def record(action: PlanAction, _spent: float) -> None:
        if isinstance(action, MeasureUtility):
            keeps.append(action.keep_frac)

    run = drive(planner, lambda: 1.0, rising(), on_action=record)

    # Assert: keep shrinks with the budget, stays >= floor, and the plan stops when one
    # more step + the floor payload (1 s + 12 s) no longer fits
    assert keeps == sorted(keeps, reverse=True) and min(keeps) >= 0.3
    assert run.finish.reason == StopReason.NO_TIME_FOR_STEP
    left = planner.report.budget_left_s
    assert 12.0 <= left < 13.0 and run.finish.keep_frac == pytest.approx(left / 40.0)


def test_payload_floor_stop_when_the_upload_jumps_above_the_floor() -> None:
    # The floor payload costs 2 s, anything larger 10 s * keep (e.g. a different encoding).
    def upload(keep: float) -> float:
        return 2.0 if keep <= 0.3 else 10.0 * min(keep, 1.0)

    planner = BudgetPlanner(14.0, BudgetKnobs(), upload, step_time_estimate=0.5)

    run = drive(planner, lambda: 0.5, rising())

    assert run.finish == Finish(keep_frac=0.3, reason=StopReason.PAYLOAD_FLOOR, success=True)
    assert planner.report.budget_left_s == pytest.approx(3.0)


def test_slow_step_ends_at_the_floor_and_flags_the_overrun() -> None:
    steps = iter([1.0] * 10 + [30.0])  # phase 1 on estimate, then one very slow step
    planner = BudgetPlanner(30.0, BudgetKnobs(), linear_upload(20.0), step_time_estimate=1.0)

    run = drive(planner, lambda: next(steps), rising())

    assert run.finish == Finish(keep_frac=0.3, reason=StopReason.NO_TIME_FOR_STEP, success=True)
    report = planner.report
    assert report.over_budget and report.budget_left_s < report.upload_s


def test_keep_fits_the_affine_sparse_upload_not_just_the_proportional_formula() -> None:
    # Prepare: real payload (indices double the bytes per kept entry) + 1 s fixed cost
    upload = sparse_upload(1_000_000, bytes_per_s=1e6, fixed_s=1.0)  # full: 5 s
    planner = BudgetPlanner(12.0, BudgetKnobs(), upload, step_time_estimate=1.0)

    # Execute
    finish_keeps: list[tuple[float, float]] = []

    def record(action: PlanAction, spent: float) -> None:
        if isinstance(action, MeasureUtility):
            finish_keeps.append((action.keep_frac, 12.0 - spent))

    drive(planner, lambda: 1.0, rising(), on_action=record)

    # Assert: every keep's upload fits what is left; the proportional rule would not
    assert finish_keeps
    for keep, left in finish_keeps:
        assert upload(keep) <= left + 1e-9
        if left < upload(1.0):
            assert upload(min(1.0, max(0.3, left / upload(1.0)))) > left


def test_max_steps_caps_both_phases() -> None:
    planner = BudgetPlanner(
        1e6, BudgetKnobs(max_steps=7), linear_upload(1.0), step_time_estimate=1.0
    )
    run = drive(planner, lambda: 1.0, rising())
    assert run.actions == [RunSteps(5, 1), RunSteps(2, 1), Finish(1.0, StopReason.MAX_STEPS, True)]

    planner = BudgetPlanner(
        20.0, BudgetKnobs(max_steps=12), linear_upload(10.0), step_time_estimate=1.0
    )
    run = drive(planner, lambda: 1.0, rising())
    assert run.finish.reason == StopReason.MAX_STEPS
    assert planner.report.steps == 12 and planner.report.steps_phase2 == 2


def test_non_finite_utility_fails_the_update() -> None:
    planner = BudgetPlanner(150.0, BudgetKnobs(), linear_upload(100.0), step_time_estimate=1.0)
    run = drive(planner, lambda: 1.0, iter([1.0, float("nan")]))
    assert run.finish == Finish(0.0, StopReason.NON_FINITE_UTILITY, False)


def test_illegal_inputs_raise_and_change_nothing() -> None:
    planner = BudgetPlanner(150.0, BudgetKnobs(), linear_upload(100.0), step_time_estimate=1.0)
    first = planner.next_action()
    assert first == RunSteps(5, 1) and planner.next_action() == first  # idempotent
    before = planner.report

    with pytest.raises(PlannerStateError):
        planner.utility_measured(1.0)
    with pytest.raises(ValueError):
        planner.steps_done(6, 1.0)
    with pytest.raises(ValueError):
        planner.steps_done(0, 1.0)
    with pytest.raises(ValueError):
        planner.steps_done(5, float("nan"))

    assert planner.report == before and planner.next_action() == first


def test_bad_knobs_and_arguments_are_refused() -> None:
    for bad in (
        {"budget_recheck_steps": 0},
        {"ewma_lambda": 1.0},
        {"min_payload_frac": 0.0},
        {"min_payload_frac": 1.5},
        {"max_steps": 0},
    ):
        with pytest.raises(ValueError):
            BudgetKnobs(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BudgetPlanner(10.0, BudgetKnobs(), linear_upload(1.0), step_time_estimate=0.0)
    with pytest.raises(ValueError):
        BudgetPlanner(float("nan"), BudgetKnobs(), linear_upload(1.0), step_time_estimate=1.0)
    with pytest.raises(ValueError):
        BudgetPlanner(10.0, BudgetKnobs(), lambda keep: -1.0, step_time_estimate=1.0)


def noisy_run(seed: int) -> tuple[list[PlanAction], PlanReport]:
    """A seeded driver: lognormal step-time noise and noisy, saturating utilities."""
    rng = np.random.default_rng(seed)
    planner = BudgetPlanner(
        120.0, BudgetKnobs(), sparse_upload(50_000, 10_000.0, 0.2), step_time_estimate=0.8
    )
    steps = 0

    def utilities() -> Iterator[float]:
        while True:
            yield max(0.0, 10.0 * (1.0 - math.exp(-steps / 20.0)) + rng.normal(0.0, 0.05))

    source = utilities()
    actions: list[PlanAction] = []
    while not isinstance(action := planner.next_action(), Finish):
        actions.append(action)
        if isinstance(action, RunSteps):
            steps += action.steps
            planner.steps_done(action.steps, float(rng.lognormal(0.0, 0.3, action.steps).sum()))
        else:
            planner.utility_measured(next(source), float(rng.uniform(0.01, 0.05)))
    actions.append(action)
    return actions, planner.report


def test_deterministic_under_a_seed() -> None:
    first, report = noisy_run(seed=123)
    again, report_again = noisy_run(seed=123)

    assert first == again and report == report_again
    assert any(isinstance(a, MeasureUtility) for a in first)
    assert noisy_run(seed=124)[0] != first


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    budget=st.floats(0.0, 500.0),
    step=st.floats(0.01, 20.0),
    full_upload=st.floats(0.0, 100.0),
    fixed=st.floats(0.0, 5.0),
    shape=st.sampled_from(["linear", "sparse", "dense_cheaper"]),
    recheck=st.integers(1, 8),
    lam=st.floats(0.0, 0.95),
    floor=st.floats(0.05, 1.0),
    phase_2=st.booleans(),
    max_steps=st.integers(1, 400),
    measure=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_budget_invariant_when_steps_take_the_estimate(
    budget: float,
    step: float,
    full_upload: float,
    fixed: float,
    shape: str,
    recheck: int,
    lam: float,
    floor: float,
    phase_2: bool,
    max_steps: int,
    measure: float,
    seed: int,
) -> None:
    # Prepare: upload shapes the planner must handle (proportional, affine sparse with a
    # fixed cost and 2x bytes per kept entry, and dense cheaper than sparse above 0.5)
    def upload(keep: float) -> float:
        if keep >= 1.0:
            return fixed + full_upload
        per_entry = 1.0 if shape == "linear" else 2.0
        return (fixed if shape != "linear" else 0.0) + per_entry * full_upload * keep

    knobs = BudgetKnobs(recheck, lam, floor, phase_2, max_steps)
    planner = BudgetPlanner(budget, knobs, upload, step, measure_time_estimate=measure)
    smallest = min(upload(floor), upload(1.0))
    rng = np.random.default_rng(seed)
    walk = iter(np.cumsum(rng.normal(0.2, 1.0, 10_000)).clip(0.0).tolist())

    def check(action: PlanAction, spent: float) -> None:
        left = budget - spent
        tolerance = 1e-9 * (1 + budget)
        if isinstance(action, RunSteps):  # planned work + the smallest upload fit
            assert action.steps * step + smallest <= left + tolerance
        elif isinstance(action, MeasureUtility):  # ... and a measurement + one more step
            assert floor - 1e-12 <= action.keep_frac <= 1.0
            assert upload(action.keep_frac) <= left + tolerance
            assert measure + step + smallest <= left + tolerance

    # Execute
    run = drive(planner, lambda: step, walk, measure_s=measure, on_action=check)

    # Assert
    finish, report = run.finish, planner.report
    assert report.steps <= max_steps
    assert report.steps_phase2 == 0 or phase_2
    if not finish.success:
        assert finish.reason in (StopReason.BUDGET_TOO_SMALL, StopReason.NON_FINITE_UTILITY)
        assert finish.reason != StopReason.BUDGET_TOO_SMALL or smallest > budget - step
        return
    assert report.steps >= 1
    assert floor - 1e-12 <= finish.keep_frac <= 1.0
    assert run.spent_s + upload(finish.keep_frac) <= budget + 1e-9 * (1 + budget)
    assert not report.over_budget
    if not phase_2 and report.steps > 1:  # phase 1 only: full upload whenever it fits
        assert finish.keep_frac == 1.0 or upload(1.0) > budget - run.spent_s


def test_adaptive_steps_are_capped_by_local_data_and_ten_times_local_steps() -> None:
    from edge_agent.adaptive import knobs_of
    from fedbus.protocol.messages import TrainConfig

    config = TrainConfig(model="m:f", data="d:f", local_steps=5, batch_size=10)
    assert knobs_of(config).max_steps == 50  # 10x the job's local steps
    assert knobs_of(config, num_train=4).max_steps == 5  # 1 batch: five passes, floor E
    assert knobs_of(config, num_train=95).max_steps == 50  # 10 batches: 5 passes = 50
    assert knobs_of(config, num_train=1000).max_steps == 50
