"""The job-level budget pacer: failed rounds widen t_budget, rounds where all fit tighten it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from client_selectors import make_selector
from client_selectors.pacer import BudgetBounds, BudgetPacer, RoundOutcome
from coordinator.budget import make_budget_pacer, pace_round, round_budget
from coordinator.config import JobConfigError, parse_job

BOUNDS = BudgetBounds(lower=4.0, upper=40.0, widen=1.25, tighten=0.9)


def outcome(counted: int, succeeded: int | None = None, dispatched: int = 13) -> RoundOutcome:
    return RoundOutcome(
        dispatched=dispatched,
        succeeded=counted if succeeded is None else succeeded,
        counted=counted,
        target=10,
        required=2,
    )


def test_a_failed_round_widens() -> None:
    pacer = BudgetPacer(10.0, BOUNDS)
    assert pacer.observe(outcome(counted=1)) == "widen"  # fewer than the 2 required
    assert pacer.value == pytest.approx(12.5)
    # Counted, though fewer than K: what a tight budget buys, not a failure.
    assert pacer.observe(outcome(counted=7)) is None
    assert pacer.value == pytest.approx(12.5)
    # Fewer than halfway from required (2) to K (10): close to failing, widen a little.
    assert pacer.observe(outcome(counted=5)) == "widen"
    assert pacer.value == pytest.approx(12.5 * 1.25**0.5)


def test_tightens_while_k_agents_fit() -> None:
    pacer = BudgetPacer(10.0, BOUNDS)
    assert pacer.observe(outcome(counted=10, succeeded=13)) == "tighten"
    assert pacer.value == pytest.approx(9.0)
    assert pacer.observe(outcome(counted=10, succeeded=10)) == "tighten"  # exactly K fit
    assert pacer.value == pytest.approx(8.1)
    # Fewer than K fit, but enough for the round: the budget binds, leave it.
    assert pacer.observe(outcome(counted=9, succeeded=9)) is None
    assert pacer.value == pytest.approx(8.1)


def test_stays_within_the_jobs_bounds() -> None:
    pacer = BudgetPacer(30.0, BOUNDS)
    for _ in range(10):
        pacer.observe(outcome(counted=0))
    assert pacer.value == 40.0
    assert pacer.observe(outcome(counted=0)) is None  # at the bound: no move
    for _ in range(100):
        pacer.observe(outcome(counted=10, succeeded=13))
    assert pacer.value == 4.0
    assert BudgetPacer(100.0, BOUNDS).value == 40.0  # a start outside is clamped


def test_a_too_tight_budget_stops_failing_within_a_few_rounds() -> None:
    # A toy fleet: an agent fits when its minimal work (1..13 s) fits the budget.
    minimal = [float(s) for s in range(1, 14)]
    pacer = BudgetPacer(4.0, BOUNDS)
    failed, values = [], []
    for _ in range(40):
        fit = sum(1 for m in minimal if m <= pacer.value)
        counted = min(fit, 10)
        failed.append(counted < 6)
        pacer.observe(
            RoundOutcome(dispatched=13, succeeded=fit, counted=counted, target=10, required=6)
        )
        values.append(pacer.value)
    assert failed[:3] == [True, True, False] and not any(failed[3:])
    # It settles where the required agents fit and fewer than K do: the budget binds.
    assert all(6.0 <= v < 10.0 for v in values[3:])
    # A loose budget comes down to the same place.
    pacer = BudgetPacer(40.0, BOUNDS)
    for _ in range(40):
        fit = sum(1 for m in minimal if m <= pacer.value)
        pacer.observe(
            RoundOutcome(dispatched=13, succeeded=fit, counted=min(fit, 10), target=10, required=6)
        )
    assert 9.0 <= pacer.value < 10.0


def test_tightening_stops_where_the_median_kept_agent_runs_the_jobs_steps() -> None:
    pacer = BudgetPacer(10.0, BOUNDS)
    full = RoundOutcome(dispatched=13, succeeded=13, counted=10, target=10, required=2)
    assert pacer.observe(replace(full, full_steps=5)) == "tighten"  # half ran E: still fine
    assert pacer.value == pytest.approx(9.0)
    # The median kept update ran fewer steps than the job asks: back up a little,
    # although K agents fit (before this rule the budget kept tightening here).
    assert pacer.observe(replace(full, full_steps=4)) == "widen"
    assert pacer.value == pytest.approx(9.0 * 1.25**0.5)
    assert pacer.observe(full) == "tighten"  # step counts unknown: the rule is off


def test_the_step_floor_settles_the_budget_where_half_the_agents_run_e() -> None:
    # A toy fleet: agent i runs floor(budget / step_s[i]) steps, step times 0.5..3.1 s,
    # everyone fits at least a minimal update (so K always succeed).
    step_s = [0.5 + 0.2 * i for i in range(14)]
    pacer = BudgetPacer(40.0, BudgetBounds(lower=1.0, upper=80.0))
    for _ in range(60):
        kept = sorted(int(pacer.value // s) for s in step_s)[-10:]  # the 10 that ran most
        pacer.observe(
            RoundOutcome(
                dispatched=14,
                succeeded=14,
                counted=10,
                target=10,
                required=5,
                full_steps=sum(n >= 5 for n in kept),
            )
        )
    # The 5th-fastest of the kept runs E = 5 steps at 5 x 1.3 = 6.5 s; the budget hovers
    # just around it instead of falling to the lower bound.
    assert 6.5 * 0.85 <= pacer.value <= 6.5 * 1.25


def test_state_round_trips() -> None:
    pacer = BudgetPacer(10.0, BOUNDS)
    pacer.observe(outcome(counted=0))
    other = BudgetPacer(10.0, BOUNDS)
    other.load_state(pacer.to_state())
    assert other.value == pacer.value


@pytest.mark.parametrize(
    "bounds",
    [
        {"lower": 0.0, "upper": 1.0},
        {"lower": 2.0, "upper": 1.0},
        {"lower": 1.0, "upper": 2.0, "widen": 1.0},
        {"lower": 1.0, "upper": 2.0, "tighten": 1.0},
    ],
)
def test_bad_bounds_are_refused(bounds: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"budget|widen"):
        BudgetBounds(**bounds)


JOB = {
    "name": "j",
    "model": "fedbus.examples.digits:make_model",
    "data": "fedbus.examples.digits:load_partition",
    "t_budget": 10.0,
}


def test_job_bounds_default_around_t_budget_and_name_the_field() -> None:
    config = parse_job({**JOB, "adaptive_training": True}, "job.yaml")
    assert (config.budget_bounds.lower, config.budget_bounds.upper) == (2.5, 40.0)
    with pytest.raises(JobConfigError, match=r"job\.yaml: field <job>: .*t_budget_min"):
        parse_job({**JOB, "t_budget_min": 12.0}, "job.yaml")
    with pytest.raises(JobConfigError, match="t_budget_max"):
        parse_job({**JOB, "t_budget_max": 8.0}, "job.yaml")


def test_every_selector_is_paced_and_blisss_own_pacer_keeps_precedence() -> None:
    config = parse_job({**JOB, "adaptive_training": True}, "job.yaml")
    for name in ("random", "oort", "pyramidfl"):
        selector = make_selector(name, {}, 0)
        pacer = make_budget_pacer(config, selector)
        assert pacer is not None and round_budget(config, selector, pacer) == 10.0
        paced = pace_round(pacer, config, selector, dispatched=5, succeeded=0, counted=0)
        assert paced == {"before": 10.0, "after": pytest.approx(12.5), "move": "widen"}
        assert round_budget(config, selector, pacer) == pytest.approx(12.5)
    # Bliss: its own value is the round's budget; the job pacer moves that value after
    # the round, and Bliss's rule runs on it at the next selection.
    bliss = make_selector("bliss", {"t_budget": 8.0, "regressor": "linear"}, 0)
    pacer = make_budget_pacer(config, bliss)
    assert pacer is not None and round_budget(config, bliss, pacer) == 8.0
    pace_round(pacer, config, bliss, dispatched=5, succeeded=5, counted=4)  # K = 4 fit
    assert bliss.t_budget == pytest.approx(7.2)
    assert round_budget(config, bliss, pacer) == pytest.approx(7.2)
    assert pace_round(None, config, bliss, dispatched=5, succeeded=0, counted=0) is None


def test_no_pacer_without_adaptive_training_or_when_switched_off() -> None:
    oort = make_selector("oort", {}, 0)
    assert make_budget_pacer(parse_job(JOB, "j.yaml"), oort) is None
    off = parse_job({**JOB, "adaptive_training": True, "budget_pacer": False}, "j.yaml")
    assert make_budget_pacer(off, oort) is None
    assert round_budget(off, oort, None) == 10.0
