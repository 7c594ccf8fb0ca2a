"""Adaptive training: drive the budget planner around real SGD steps.

The planner decides; this module carries its actions out on a :class:`TrainSession` and
prices them with a :class:`StepCost` — simulated seconds from the time model on the
virtual clock, measured seconds on the wall clock. What comes back is the session's
outcome with the keep fraction and the phase step counts filled in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.budget_planner import BudgetKnobs, BudgetPlanner, Finish, MeasureUtility, RunSteps
from edge_agent.compression import topk_norm
from edge_agent.step_cap import adaptive_max_steps
from edge_agent.trainer import TrainSession
from fedbus.protocol.messages import TrainConfig


@dataclass
class StepCost:
    """How long actions take: ``steps(n)`` after running n steps, ``upload(keep)`` ahead of time."""

    steps: Callable[[int, float], float]  # (steps, measured seconds) -> charged seconds
    upload: Callable[[float], float]  # keep_frac -> seconds
    step_estimate: float  # prior for one step, seconds
    charge_measurement: bool = True  # wall clock: the top-k norm costs real time


def knobs_of(config: TrainConfig, num_train: int | None = None) -> BudgetKnobs:
    """The planner's knobs; steps are capped as PyramidFL's learner caps them.

    Idle time may buy at most 10x the job's local steps E, and never more than five passes
    over the local data (max(5 * batches, E)): on a device holding a handful of samples,
    dozens of extra steps only overfit its skewed labels (measured on MNIST-5k over 1,000
    clients: 50 steps on ~4 samples each made accuracy collapse). E is the job's base
    steps, not ``local_steps``, which a PyramidFL override may already have raised.
    """
    return BudgetKnobs(
        budget_recheck_steps=config.budget_recheck_steps,
        ewma_lambda=config.ewma_lambda,
        min_payload_frac=config.min_payload_frac,
        run_phase_2=config.run_phase_2,
        max_steps=adaptive_max_steps(config, num_train),
    )


def run_adaptive(session: TrainSession, budget_s: float, cost: StepCost) -> float:
    """Run the planner to its end on ``session``; return the seconds charged for compute."""
    planner = BudgetPlanner(
        max(budget_s, 0.0),
        knobs_of(session.config, session.data.num_train),
        cost.upload,
        cost.step_estimate,
    )
    charged = 0.0
    while True:
        action = planner.next_action()
        if isinstance(action, RunSteps):
            begin = time.perf_counter()
            session.run_steps(action.steps)
            seconds = cost.steps(action.steps, time.perf_counter() - begin)
            charged += seconds
            planner.steps_done(action.steps, seconds)
        elif isinstance(action, MeasureUtility):
            begin = time.perf_counter()
            utility = topk_norm(session.delta(), action.keep_frac)
            elapsed = time.perf_counter() - begin if cost.charge_measurement else 0.0
            charged += elapsed
            planner.utility_measured(utility, elapsed)
        elif isinstance(action, Finish):
            report = planner.report
            session.keep_frac = action.keep_frac if action.success else 1.0
            session.steps_phase1 = report.steps_phase1
            session.steps_phase2 = report.steps_phase2
            if not action.success:
                session.success, session.reason = False, str(action.reason)
            return charged
