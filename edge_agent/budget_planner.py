"""The adaptive budget planner: how many SGD steps to run and how much of the delta to send.

ALGORITHMS §4.5. A pure state machine (no clock, no I/O, no randomness): the agent asks
:meth:`BudgetPlanner.next_action`, carries the action out around its real SGD steps and
reports back; the planner answers with the next action.

Rules (the module's contract)::

    start     one step + the smallest upload does not fit  -> Finish(success=False)
    phase 1   E steps + the FULL upload fit                  -> RunSteps(E, phase=1)
              (E = budget_recheck_steps; at most max_steps in all)
    phase 2   (run_phase_2) one step at a time while one step + the smallest upload fit:
              RunSteps(1, 2) -> MeasureUtility(keep) -> gain = U - U_prev,
              s = lam*s + (1-lam)*gain; stop when s <= 0 or keep <= min_payload_frac < 1
              (measured only if a measurement + another step + smallest upload still fit)
    phase 1   (not run_phase_2) after the E-blocks, the steps that still fit with the full
     only     upload (fewer than E); if not even one does at the start, exactly one step
    Finish    keep = the largest fraction whose upload fits what is left

Transitions (state = the kind of action that is out; anything else raises
:class:`PlannerStateError` and changes nothing)::

    (new)      --start----------->  stepping | finished
    stepping   --steps_done------>  stepping | measuring | finished
    measuring  --utility_measured->  stepping | finished
    finished   accepts nothing; next_action keeps returning the same Finish

Decisions:

* **Keep fraction.** §4.5 writes ``keep = clamp(budget / t_upload_full, floor, 1)``, which
  is right only if upload time is proportional to keep. It is not: a sparse payload costs
  index + value bytes per kept entry (int32 + float32 = 2x the dense bytes per entry) and a
  link has a fixed cost per upload, so that formula plans uploads up to 2x longer than what
  is left. Here ``keep`` is the largest fraction in ``[min_payload_frac, 1]`` with
  ``upload_time(keep) <= budget left`` (1 if the full upload fits, else bisection on
  ``[min_payload_frac, 1)``). For a proportional ``upload_time`` this *is* the §4.5 formula.
  ``upload_time`` must be non-decreasing on ``[min_payload_frac, 1)``; the dense point 1.0
  may be cheaper (``compression.wire_bytes`` is: sparse at 0.6 costs more than dense), and
  everywhere "the smallest upload" means ``min(upload_time(floor), upload_time(1))``.
* **EWMA convention.** ``s <- lam*s + (1-lam)*gain`` with ``lam = ewma_lambda`` (0.7) the
  weight of the *history*, as the brief's formula and [B]'s adaptive client have it.
  Step-to-step gains of a top-k norm are noisy (SGD noise, keep shrinking by a few %), and
  the stop rule is a sign test, so one noisy step must not end phase 2: lam = 0.7 averages
  over ~(1+lam)/(1-lam) ~ 6 steps. ``s`` starts at the first gain (not at 0, which would
  shrink the early average toward 0); ``ewma_lambda = 0`` means no smoothing.
* **Baseline.** The first gain needs a ``U_prev``: entering phase 2 after at least one step
  the planner first measures U at the current keep ("what would be uploaded if we stopped
  now"), so the first phase-2 step is already judged; with no step yet the delta is zero
  and ``U_prev = 0`` without a measurement.
* **Step time.** The prior ``step_time_estimate`` until the first ``steps_done``, then the
  running mean of all measured steps (total elapsed / total steps): simple, no knob, and a
  slow first step (warm-up) errs on the safe side. The utility measurement
  (``topk_norm``, ~0.1 s for 10M parameters on a laptop CPU) is budget too: the agent
  passes its duration to ``utility_measured(u, elapsed_s)``; it is priced at
  ``measure_time_estimate`` (default 0) until one was timed, then at the running mean.
  ``elapsed_s=None`` means "not timed" (nothing charged, nothing learned).
* **Skipped measurements.** A measurement is asked for only if a measurement + another
  step + the smallest upload still fit: one that cannot change the decision is not taken.
  So the last step of phase 2 is run un-judged when only the step itself fits (the
  smoothed gain was positive so far), and phase 2 never spends budget on a measurement
  that would leave no room for the step it is meant to decide.
* **Floor.** With step times on estimate the "one step + minimum upload" check stops phase
  2 before keep can reach ``min_payload_frac``; the ``keep <= floor`` stop fires when the
  budget ran short anyway (steps slower than estimated, or an ``upload_time`` that jumps
  just above the floor). With ``min_payload_frac = 1`` (no compression) it never fires:
  keep is always 1 and phase 2 runs while gains are positive and the full upload fits.
* **Overrun.** If steps ran slower than estimated and not even the smallest upload fits any
  more, the planner still finishes with ``success=True`` at the cheaper of floor and dense
  and sets ``PlanReport.over_budget``: the update exists, and whether it is still on time is
  the coordinator's call (deadline, over-commitment), not the agent's.
* **Failures** (``success=False``, ``keep_frac=0.0``: nothing to upload): a budget too
  small for one step, and a non-finite measured utility (the delta has NaN/inf in it).

Errors: ``ValueError`` for a bad argument (knobs, budget, a step count, a negative
utility, an ``upload_time`` that returns a negative or non-finite time),
:class:`PlannerStateError` (a ``RuntimeError``) for an input the current state does not
accept. Both are local faults and change nothing.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from edge_agent.compat import StrEnum

__all__ = [
    "BudgetKnobs",
    "BudgetPlanner",
    "Finish",
    "MeasureUtility",
    "PlanAction",
    "PlanReport",
    "PlannerStateError",
    "RunSteps",
    "StopReason",
]


class PlannerStateError(RuntimeError):
    """An input that the planner's current state does not accept (a caller bug)."""


class StopReason(StrEnum):
    """Why a plan finished (``Finish.reason``; plain strings on the wire)."""

    BUDGET_TOO_SMALL = "budget too small for one step"
    GAIN_NON_POSITIVE = "utility gain non-positive"
    PAYLOAD_FLOOR = "payload at floor"
    NO_TIME_FOR_STEP = "no time for another step"
    BUDGET_SPENT = "budget spent"
    MAX_STEPS = "max steps"
    NON_FINITE_UTILITY = "non-finite utility"


@dataclass(frozen=True)
class BudgetKnobs:
    budget_recheck_steps: int = 5
    ewma_lambda: float = 0.7
    min_payload_frac: float = 0.3
    run_phase_2: bool = True
    max_steps: int = 10_000

    def __post_init__(self) -> None:
        if self.budget_recheck_steps < 1:
            raise ValueError(f"budget_recheck_steps must be >= 1, got {self.budget_recheck_steps}")
        if not 0.0 <= self.ewma_lambda < 1.0:
            raise ValueError(f"ewma_lambda must be in [0, 1), got {self.ewma_lambda}")
        if not 0.0 < self.min_payload_frac <= 1.0:
            raise ValueError(f"min_payload_frac must be in (0, 1], got {self.min_payload_frac}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")


@dataclass(frozen=True)
class RunSteps:
    """Run this many SGD steps, then call ``steps_done``."""

    steps: int
    phase: int


@dataclass(frozen=True)
class MeasureUtility:
    """Compute ``topk_norm(current delta, keep_frac)``, then call ``utility_measured``."""

    keep_frac: float


@dataclass(frozen=True)
class Finish:
    """Upload the top-k delta at ``keep_frac`` (dense at 1); ``success=False``: upload nothing."""

    keep_frac: float
    reason: str
    success: bool


PlanAction = RunSteps | MeasureUtility | Finish


@dataclass(frozen=True)
class PlanReport:
    """What the agent reports about its plan; ``reason``/``success`` are None until finished."""

    steps_phase1: int
    steps_phase2: int
    keep_frac: float
    budget_left_s: float  # budget left after the steps run so far, before the upload
    upload_s: float  # upload_time(keep_frac)
    step_time_s: float  # current per-step estimate
    num_gains: int
    smoothed_gain: float | None
    reason: str | None
    success: bool | None
    over_budget: bool  # the planned upload does not fit budget_left_s (beyond float rounding)

    @property
    def steps(self) -> int:
        return self.steps_phase1 + self.steps_phase2


class _State(enum.Enum):
    NEW = "new"
    STEPPING = "stepping"
    MEASURING = "measuring"
    FINISHED = "finished"


class _Event(enum.Enum):
    START = "start"
    STEPS_DONE = "steps_done"
    UTILITY_MEASURED = "utility_measured"


_TRANSITIONS: Final[Mapping[tuple[_State, _Event], frozenset[_State]]] = {
    (_State.NEW, _Event.START): frozenset({_State.STEPPING, _State.FINISHED}),
    (_State.STEPPING, _Event.STEPS_DONE): frozenset(
        {_State.STEPPING, _State.MEASURING, _State.FINISHED}
    ),
    (_State.MEASURING, _Event.UTILITY_MEASURED): frozenset({_State.STEPPING, _State.FINISHED}),
}

_BISECT_TOL: Final = 1e-9
_ROUNDING_REL: Final = 1e-9


def _state_of(action: PlanAction | None) -> _State:
    if action is None:
        return _State.NEW
    if isinstance(action, RunSteps):
        return _State.STEPPING
    if isinstance(action, MeasureUtility):
        return _State.MEASURING
    return _State.FINISHED


class BudgetPlanner:
    """Plans one round's local work against ``budget_s`` (= t_budget - t_download)."""

    def __init__(
        self,
        budget_s: float,
        knobs: BudgetKnobs,
        upload_time: Callable[[float], float],
        step_time_estimate: float,
        *,
        measure_time_estimate: float = 0.0,
    ) -> None:
        if not math.isfinite(budget_s):
            raise ValueError(f"budget_s must be finite, got {budget_s}")
        if not (math.isfinite(step_time_estimate) and step_time_estimate > 0.0):
            raise ValueError(f"step_time_estimate must be > 0, got {step_time_estimate}")
        _check_elapsed(measure_time_estimate)
        self._knobs = knobs
        self._upload_time = upload_time
        self._budget = float(budget_s)
        self._left = float(budget_s)
        self._prior_step_s = float(step_time_estimate)
        self._prior_measure_s = float(measure_time_estimate)
        self._measured_steps = 0
        self._measured_step_s = 0.0
        self._measurements = 0
        self._measurement_s = 0.0
        self._steps = {1: 0, 2: 0}
        self._phase = 1
        self._keep = 1.0
        self._prev_utility: float | None = None
        self._gains: list[float] = []
        self._smoothed: float | None = None
        self._upload_full = self._upload(1.0)
        self._upload_smallest = min(self._upload(knobs.min_payload_frac), self._upload_full)
        self._action: PlanAction | None = None
        if self._fits(self._step_time_s, self._upload_smallest):
            self._transition(_Event.START, self._decide)
        else:
            self._transition(_Event.START, lambda: self._fail(StopReason.BUDGET_TOO_SMALL))

    # ------------------------------------------------------------------ inputs
    def next_action(self) -> PlanAction:
        """The action to carry out now (the same one until it is reported back)."""
        assert self._action is not None
        return self._action

    def steps_done(self, steps: int, elapsed_s: float) -> None:
        """Report that ``steps`` of the asked steps ran in ``elapsed_s`` seconds."""
        action = self._expect(_Event.STEPS_DONE)
        assert isinstance(action, RunSteps)
        if not 1 <= steps <= action.steps:
            raise ValueError(f"steps must be in [1, {action.steps}], got {steps}")
        _check_elapsed(elapsed_s)
        self._left -= elapsed_s
        self._steps[action.phase] += steps
        self._measured_steps += steps
        self._measured_step_s += elapsed_s
        self._transition(_Event.STEPS_DONE, self._decide)

    def utility_measured(self, utility: float, elapsed_s: float | None = None) -> None:
        """Report the measured utility; ``elapsed_s``: how long measuring it took, if timed."""
        self._expect(_Event.UTILITY_MEASURED)
        if utility < 0.0:
            raise ValueError(f"utility must be >= 0, got {utility}")
        if elapsed_s is not None:
            _check_elapsed(elapsed_s)
            self._left -= elapsed_s
            self._measurements += 1
            self._measurement_s += elapsed_s
        self._transition(_Event.UTILITY_MEASURED, lambda: self._judge(utility))

    # ------------------------------------------------------------------ outputs
    @property
    def finished(self) -> bool:
        return isinstance(self._action, Finish)

    @property
    def gains(self) -> tuple[float, ...]:
        """Raw utility gains of phase 2, oldest first."""
        return tuple(self._gains)

    @property
    def report(self) -> PlanReport:
        action = self._action
        done = isinstance(action, Finish)
        keep = action.keep_frac if isinstance(action, Finish) else self._keep
        upload_s = self._upload(keep) if keep > 0.0 else 0.0
        return PlanReport(
            steps_phase1=self._steps[1],
            steps_phase2=self._steps[2],
            keep_frac=keep,
            budget_left_s=self._left,
            upload_s=upload_s,
            step_time_s=self._step_time_s,
            num_gains=len(self._gains),
            smoothed_gain=self._smoothed,
            reason=action.reason if isinstance(action, Finish) else None,
            success=action.success if isinstance(action, Finish) else None,
            over_budget=done and keep > 0.0 and upload_s - self._left > self._rounding_s,
        )

    # ------------------------------------------------------------------ machinery
    def _expect(self, event: _Event) -> PlanAction | None:
        state = _state_of(self._action)
        if (state, event) not in _TRANSITIONS:
            raise PlannerStateError(f"{event.value} is not accepted in state {state.value}")
        return self._action

    def _transition(self, event: _Event, decide: Callable[[], PlanAction]) -> None:
        allowed = _TRANSITIONS[(_state_of(self._action), event)]
        action = decide()
        if _state_of(action) not in allowed:  # a planner bug, not a caller's
            raise AssertionError(f"{event.value} led to {action!r}, outside {allowed}")
        self._action = action

    @property
    def _rounding_s(self) -> float:
        """Float slack for the over-budget flag (a sum of step times vs. n * estimate)."""
        return _ROUNDING_REL * max(1.0, abs(self._budget))

    @property
    def _total_steps(self) -> int:
        return self._steps[1] + self._steps[2]

    @property
    def _step_time_s(self) -> float:
        if self._measured_steps == 0:
            return self._prior_step_s
        return self._measured_step_s / self._measured_steps

    @property
    def _measure_time_s(self) -> float:
        if self._measurements == 0:
            return self._prior_measure_s
        return self._measurement_s / self._measurements

    def _upload(self, keep: float) -> float:
        seconds = float(self._upload_time(keep))
        if not (math.isfinite(seconds) and seconds >= 0.0):
            raise ValueError(f"upload_time({keep}) returned {seconds}; need a finite time >= 0")
        return seconds

    def _fits(self, work_s: float, upload_s: float) -> bool:
        return upload_s <= self._left - work_s  # the same subtraction steps_done will do

    def _step_fits(self, measure_first: bool = False) -> bool:
        """Another step (after a measurement, if asked) + the smallest upload fit."""
        work_s = self._step_time_s + (self._measure_time_s if measure_first else 0.0)
        within_cap = self._total_steps < self._knobs.max_steps
        return within_cap and self._fits(work_s, self._upload_smallest)

    def _keep_for_left(self) -> float:
        """The largest keep in [floor, 1] whose upload fits what is left (module docstring)."""
        if self._upload_full <= self._left:
            return 1.0
        lo, hi = self._knobs.min_payload_frac, 1.0
        upload_lo = self._upload(lo)
        if upload_lo > self._left or lo >= hi:  # nothing fits: the cheaper of floor and dense
            return 1.0 if self._upload_full <= upload_lo else lo
        while hi - lo > _BISECT_TOL:
            mid = 0.5 * (lo + hi)
            if self._upload(mid) <= self._left:
                lo = mid
            else:
                hi = mid
        return lo

    def _steps_that_fit(self, limit: int) -> int:
        """Most steps (<= limit) that fit before the full upload at the current estimate."""
        room = self._left - self._upload_full
        step_s = self._step_time_s
        if room < 0.0:
            return 0
        n = limit if step_s * limit <= room else min(limit, math.floor(room / step_s))
        while n > 0 and not self._fits(n * step_s, self._upload_full):  # float rounding
            n -= 1
        return n

    def _finish(self, reason: StopReason) -> Finish:
        self._keep = self._keep_for_left()
        return Finish(keep_frac=self._keep, reason=reason, success=True)

    def _fail(self, reason: StopReason) -> Finish:
        return Finish(keep_frac=0.0, reason=reason, success=False)

    def _measure(self) -> MeasureUtility:
        self._keep = self._keep_for_left()
        return MeasureUtility(keep_frac=self._keep)

    def _decide(self) -> PlanAction:
        """The next action after a start or a ``steps_done``."""
        knobs = self._knobs
        room = knobs.max_steps - self._total_steps
        if self._phase == 1:
            block = min(knobs.budget_recheck_steps, room)
            if block >= 1 and self._fits(block * self._step_time_s, self._upload_full):
                return RunSteps(steps=block, phase=1)
            if room == 0:
                return self._finish(StopReason.MAX_STEPS)
            if not knobs.run_phase_2:
                tail = self._steps_that_fit(block)
                if tail >= 1:
                    return RunSteps(steps=tail, phase=1)
                if self._total_steps == 0:  # only the smaller payload fits: one step
                    return RunSteps(steps=1, phase=1)
                return self._finish(StopReason.BUDGET_SPENT)
            self._phase = 2
            if not self._step_fits():
                return self._finish(StopReason.NO_TIME_FOR_STEP)
            if self._total_steps == 0:
                self._prev_utility = 0.0  # the delta is still zero
            elif self._step_fits(measure_first=True):
                return self._measure()  # baseline for the first gain
            return RunSteps(steps=1, phase=2)
        if room == 0:
            return self._finish(StopReason.MAX_STEPS)
        if not self._step_fits(measure_first=True):  # a measurement could change nothing
            return self._finish(StopReason.NO_TIME_FOR_STEP)
        return self._measure()

    def _judge(self, utility: float) -> PlanAction:
        """The next action after a ``utility_measured`` (phase 2 only)."""
        if not math.isfinite(utility):
            return self._fail(StopReason.NON_FINITE_UTILITY)
        if self._prev_utility is not None:
            gain = utility - self._prev_utility
            self._gains.append(gain)
            lam = self._knobs.ewma_lambda
            self._smoothed = (
                gain if self._smoothed is None else lam * self._smoothed + (1.0 - lam) * gain
            )
            if self._smoothed <= 0.0:
                self._prev_utility = utility
                return self._finish(StopReason.GAIN_NON_POSITIVE)
            if self._keep < 1.0 and self._keep <= self._knobs.min_payload_frac:
                self._prev_utility = utility
                return self._finish(StopReason.PAYLOAD_FLOOR)
        self._prev_utility = utility
        if self._total_steps >= self._knobs.max_steps:
            return self._finish(StopReason.MAX_STEPS)
        if not self._step_fits():
            return self._finish(StopReason.NO_TIME_FOR_STEP)
        return RunSteps(steps=1, phase=2)


def _check_elapsed(elapsed_s: float) -> None:
    if not (math.isfinite(elapsed_s) and elapsed_s >= 0.0):
        raise ValueError(f"elapsed_s must be a finite number >= 0, got {elapsed_s}")
