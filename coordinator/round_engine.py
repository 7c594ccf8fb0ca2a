"""The round as a sans-I/O engine: what a job's replies do, inputs in, verdicts out.

No ``await``, no clock read, no MQTT, no tensors: the adapter (:mod:`coordinator.job_runner`)
decodes a payload into a typed input, passes the current time in it, and carries out what
comes back (write an update into its aggregation row, count a rejection, emit AGENT_LOST).
Deadlines arrive as :class:`TimerFired` inputs; :meth:`RoundEngine.next_deadline` says
when the adapter must send one.

Two machines share the engine, the training round and the validation; their phases and
transition tables are data, in :mod:`coordinator.round_table`.

An input that a phase does not accept raises :class:`IllegalTransition` and changes
nothing (a local fault: the adapter called out of turn). A remote fault (a late, stale,
forged or duplicate reply) is never illegal: it comes back as a :class:`Late` or
:class:`Refused` verdict and changes nothing but its counter.

Seams for later work: ``RoundEngine.open_round`` takes the assignments (so a scheduler
restricts who is sampled before this point), and every admitted update passes through
:meth:`RoundEngine.update_arrived` (a weight cap or norm clip slots in after the header
checks, before :class:`WriteRow`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from coordinator.round_state import Collection, IllegalTransition
from coordinator.round_table import (
    ROUND_TABLE,
    VALIDATION_TABLE,
    InputKind,
    RoundPhase,
    ValidationPhase,
)
from coordinator.round_verdicts import (
    AgentLost,
    ClosedRound,
    ClosedValidation,
    Dropped,
    Late,
    Refused,
    Reply,
    TimerFired,
    Verdict,
    WriteRow,
)
from coordinator.update_check import Assignment, Rejected, check_header
from fedbus.protocol.messages import ResultMeta, UpdateMeta

__all__ = ["VALIDATION_AFTER_MISS", "VALIDATION_FLOOR", "VALIDATION_SLACK", "RoundEngine"]

VALIDATION_SLACK = 10.0
"""A validation is given up after this many times the agent's slowest answer so far..."""
VALIDATION_FLOOR = 10.0
"""...but never sooner than this (seconds), and never later than the job's eval_timeout."""
VALIDATION_AFTER_MISS = 2.0
"""An agent whose last validation went unanswered is waited for this long (seconds): an
online agent that never answers costs a round 2 s, not eval_timeout. Its late answer, if
one comes, counts as history again."""
RECENT_CLOSED = 2
"""Task ids of this many closed training rounds and validations are answered ``late``."""


@dataclass
class _Training:
    round: int
    assignments: dict[str, Assignment]
    rows: dict[str, int]
    collection: Collection
    replies: dict[str, Reply] = field(default_factory=dict)
    failures: dict[str, UpdateMeta] = field(default_factory=dict)
    writing: dict[str, tuple[UpdateMeta, int]] = field(default_factory=dict)
    folded: dict[str, bool] = field(default_factory=dict)  # agent -> result rides in_update


@dataclass
class _Validation:
    round: int
    collection: Collection
    eval_timeout: float
    assignments: dict[str, Assignment] = field(default_factory=dict)
    results: dict[str, ResultMeta] = field(default_factory=dict)
    unasked: list[str] = field(default_factory=list)
    deadlines: dict[str, float] = field(default_factory=dict)


class RoundEngine:
    """One job's replies: the open training round, the outstanding validation, counters."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.round_phase = RoundPhase.IDLE
        self.validation_phase = ValidationPhase.NONE
        self.rejected: Counter[str] = Counter()
        self.late = 0
        self._training: _Training | None = None
        self._validation: _Validation | None = None
        self._recent: dict[str, list[frozenset[str]]] = {"train": [], "validate": []}
        self._closed_tasks: frozenset[str] = frozenset()
        # Per agent, its slowest validation answer so far (seconds from being asked), or
        # None after a validation it never answered: its next deadline derives from it.
        self._validation_history: dict[str, float | None] = {}
        self._asked: dict[str, tuple[str, float]] = {}  # validation task id -> (agent, asked)

    # -- transitions -----------------------------------------------------------------------
    def _check(self, kind: InputKind) -> None:
        """Raise (changing nothing) unless both machines accept ``kind`` now."""
        if (self.round_phase, kind) not in ROUND_TABLE:
            raise IllegalTransition(f"{kind.value} in round phase {self.round_phase.value}")
        if (self.validation_phase, kind) not in VALIDATION_TABLE:
            raise IllegalTransition(
                f"{kind.value} in validation phase {self.validation_phase.value}"
            )

    def _settle(
        self, kind: InputKind, round_before: RoundPhase, val_before: ValidationPhase
    ) -> None:
        """Move both phases to what their collections say, within what the tables allow."""
        training, validation = self._training, self._validation
        if self.collecting and training is not None and training.collection.closed:
            self.round_phase = RoundPhase.CLOSED
            # From now on an answer to this round's tasks is late, not stale.
            self._remember_closed(training.assignments, "train")
        if self.validating and validation is not None and validation.collection.closed:
            self.validation_phase = ValidationPhase.CLOSED
        assert self.round_phase in ROUND_TABLE[(round_before, kind)], (kind, self.round_phase)
        assert self.validation_phase in VALIDATION_TABLE[(val_before, kind)], (
            kind,
            self.validation_phase,
        )

    # -- the training round ----------------------------------------------------------------
    def open_round(
        self,
        round_: int,
        assignments: Mapping[str, Assignment],
        *,
        target: int,
        required: int,
        deadline: float,
        folded: Mapping[str, bool] | None = None,
    ) -> None:
        """Train tasks are out to ``assignments`` (rows in their order); collect until closed.

        ``folded``: agents whose train task carries the outstanding validation's request,
        True where its result rides in the update.
        """
        self._check(InputKind.OPEN_ROUND)
        before = (self.round_phase, self.validation_phase)
        agents = list(assignments)
        collection = Collection.start(agents, target=target, required=required, deadline=deadline)
        self._training = _Training(
            round_,
            dict(assignments),
            {agent: row for row, agent in enumerate(agents)},
            collection,
            folded=dict(folded or {}),
        )
        self.round_phase = RoundPhase.COLLECTING
        self._settle(InputKind.OPEN_ROUND, *before)

    def update_arrived(self, agent: str, meta: UpdateMeta, now: float) -> list[Verdict]:
        """An update's header (its tensors are the adapter's): verdicts in the order to apply.

        A folded validation result comes first, with a verdict of its own.
        """
        self._check(InputKind.UPDATE)
        before = (self.round_phase, self.validation_phase)
        verdicts: list[Verdict] = []
        training = self._training if self.round_phase is RoundPhase.COLLECTING else None
        if meta.task_id in self._closed_tasks and meta.agent == agent:
            self.late += 1
            verdicts.append(Late(agent))
        elif training is not None and agent in training.collection.lost:
            self.late += 1  # given up for lost (it went offline) and came back
            verdicts.append(Late(agent))
        elif training is None and self._lost_from_validation(agent):
            self.late += 1
            verdicts.append(Late(agent))
        elif training is None:
            verdicts.append(
                self._refuse(
                    agent,
                    "stale",
                    f"update for round {meta.round} arrived outside a training round",
                )
            )
        else:
            verdicts.extend(self._admit_update(training, agent, meta, now))
        self._settle(InputKind.UPDATE, *before)
        return verdicts

    def _admit_update(
        self, training: _Training, agent: str, meta: UpdateMeta, now: float
    ) -> list[Verdict]:
        collection = training.collection
        seen = agent in training.replies or agent in training.failures or agent in training.writing
        try:
            check_header(
                job=self.job,
                topic_agent=agent,
                meta_job=meta.job,
                meta_agent=meta.agent,
                task_id=meta.task_id,
                round_=meta.round,
                version=meta.base_version,
                assignment=training.assignments.get(agent),
                already_received=seen or not collection.is_pending(agent),
            )
        except Rejected as exc:
            return [self._refuse(agent, exc.reason, exc.detail)]
        verdicts: list[Verdict] = []
        if meta.validation is not None:
            # Once the update itself is genuine, its result is one in its own right.
            verdicts.append(self._take_result(agent, meta.validation, now))
        if not meta.success:
            training.failures[agent] = meta
            collection.lose(agent, now)
            verdicts.append(Dropped(agent))
            return verdicts
        row = training.rows[agent]
        training.writing[agent] = (meta, row)
        verdicts.append(WriteRow(agent, row))
        return verdicts

    def row_written(self, agent: str, nbytes: int, now: float) -> None:
        """The adapter wrote the admitted update of ``agent`` into its row: it counts."""
        self._check(InputKind.ROW_WRITTEN)
        before = (self.round_phase, self.validation_phase)
        training = self._writing(agent)
        meta, row = training.writing.pop(agent)
        training.replies[agent] = Reply(agent, meta, row, now, nbytes)
        training.collection.accept(agent, now)
        self._settle(InputKind.ROW_WRITTEN, *before)

    def row_rejected(self, agent: str, reason: str, detail: str) -> Refused:
        """The update's tensors failed their checks: the agent stays pending."""
        self._check(InputKind.ROW_REJECTED)
        before = (self.round_phase, self.validation_phase)
        self._writing(agent).writing.pop(agent)
        refused = self._refuse(agent, reason, detail)
        self._settle(InputKind.ROW_REJECTED, *before)
        return refused

    def _lost_from_validation(self, agent: str) -> bool:
        v = self._validation
        return (
            v is not None
            and self.validation_phase is ValidationPhase.OPEN
            and (agent in v.collection.lost)
        )

    def _writing(self, agent: str) -> _Training:
        training = self._training
        if training is None or agent not in training.writing:
            raise IllegalTransition(f"no update of {agent!r} is being written")
        return training

    def close_round(self) -> ClosedRound:
        """The closed collection's outcome (the round stays CLOSED until :meth:`end_round`)."""
        training = self._training
        if self.round_phase is not RoundPhase.CLOSED or training is None:
            raise IllegalTransition(f"close_round in round phase {self.round_phase.value}")
        c = training.collection
        return ClosedRound(
            training.round, c.phase, c.reason, list(c.accepted), dict(training.replies),
            dict(training.failures), dict(training.assignments), frozenset(c.pending), c.deadline,
        )  # fmt: skip

    def end_round(self, now: float) -> None:
        """The round's outcome is recorded; a new round may open.

        A validation request that was to ride in an update that never came is given up.
        """
        self._check(InputKind.END_ROUND)
        before = (self.round_phase, self.validation_phase)
        training = self._training
        assert training is not None
        validation = self._validation
        if validation is not None and self.validation_phase is ValidationPhase.OPEN:
            for agent, in_update in training.folded.items():
                if validation.collection.closed:
                    break
                if in_update and validation.collection.is_pending(agent):
                    validation.collection.lose(agent, now)
        self._training = None
        self.round_phase = RoundPhase.IDLE
        self._settle(InputKind.END_ROUND, *before)

    # -- the validation --------------------------------------------------------------------
    def open_validation(self, round_: int, agents: Iterable[str], eval_timeout: float) -> None:
        """Validate round ``round_``'s model on ``agents``; none is asked yet (see :meth:`ask`)."""
        self._check(InputKind.OPEN_VALIDATION)
        before = (self.round_phase, self.validation_phase)
        chosen = list(agents)
        collection = Collection.start(chosen, target=len(chosen) or 1, required=1, deadline=None)
        self._validation = _Validation(round_, collection, eval_timeout, unasked=chosen)
        self.validation_phase = ValidationPhase.OPEN
        self._settle(InputKind.OPEN_VALIDATION, *before)

    @property
    def unasked(self) -> list[str]:
        """Agents of the outstanding validation not asked yet."""
        v = self._validation
        return list(v.unasked) if v is not None and self.validating else []

    @property
    def validation_round(self) -> int | None:
        return self._validation.round if self._validation is not None else None

    def ask(
        self, assignments: Mapping[str, Assignment], now: float, in_update: Iterable[str] = ()
    ) -> None:
        """These unasked agents were asked (a task of their own, or folded in a train task).

        Each gets a deadline from its history: ``VALIDATION_SLACK`` times its slowest
        answer so far, at least ``VALIDATION_FLOOR``; ``VALIDATION_FLOOR`` after one it
        never answered; the job's eval_timeout when it has no history. Never above it.
        ``in_update`` agents answer inside their update: the round's end bounds them.
        """
        self._check(InputKind.ASK)
        before = (self.round_phase, self.validation_phase)
        v = self._validation
        assert v is not None
        riding = set(in_update)
        strays = [a for a in assignments if a not in v.unasked]
        if strays:
            raise IllegalTransition(f"{strays} are not waiting to be asked")
        for agent, assignment in assignments.items():
            v.unasked.remove(agent)
            v.assignments[agent] = assignment
            if agent not in riding:
                v.deadlines[agent] = now + self._validation_bound(agent, v.eval_timeout)
            self._asked[assignment.task_id] = (agent, now)
        self._settle(InputKind.ASK, *before)

    def _validation_bound(self, agent: str, eval_timeout: float) -> float:
        if agent not in self._validation_history:
            return eval_timeout
        slowest = self._validation_history[agent]
        if slowest is None:
            return min(VALIDATION_AFTER_MISS, eval_timeout)
        return min(max(VALIDATION_FLOOR, VALIDATION_SLACK * slowest), eval_timeout)

    def result_arrived(self, agent: str, meta: ResultMeta, now: float) -> Verdict:
        self._check(InputKind.RESULT)
        before = (self.round_phase, self.validation_phase)
        verdict = self._take_result(agent, meta, now)
        self._settle(InputKind.RESULT, *before)
        return verdict

    def _take_result(self, agent: str, meta: ResultMeta, now: float) -> Verdict:
        asked = self._asked.get(meta.task_id)
        if asked is not None and asked[0] == agent == meta.agent and meta.success:
            # Answered at all, however late: the agent's next deadline allows for it.
            took = max(0.0, now - asked[1])
            self._validation_history[agent] = max(took, self._validation_history.get(agent) or 0.0)
        if meta.task_id in self._closed_tasks and meta.agent == agent:
            self.late += 1
            return Late(agent)
        v = self._validation if self.validation_phase is ValidationPhase.OPEN else None
        if v is None:
            return self._refuse(
                agent, "stale", f"result for round {meta.round} arrived outside a validation"
            )
        if agent in v.collection.lost:
            self.late += 1
            return Late(agent)
        try:
            check_header(
                job=self.job,
                topic_agent=agent,
                meta_job=meta.job,
                meta_agent=meta.agent,
                task_id=meta.task_id,
                round_=meta.round,
                version=meta.model_version,
                assignment=v.assignments.get(agent),
                already_received=agent in v.results or not v.collection.is_pending(agent),
            )
        except Rejected as exc:
            return self._refuse(agent, exc.reason, exc.detail)
        if not meta.success:  # a refusal or a failed evaluation: stop waiting for it
            v.collection.lose(agent, now)
            return Dropped(agent)
        v.results[agent] = meta
        v.collection.accept(agent, now)
        return Dropped(agent)

    def finish_validation(self) -> ClosedValidation:
        """The closed validation's results; the engine has no validation outstanding after."""
        self._check(InputKind.FINISH_VALIDATION)
        v = self._validation
        if v is None:
            raise IllegalTransition("no validation to finish")
        before = (self.round_phase, self.validation_phase)
        self._remember_closed(v.assignments, "validate")
        self._validation = None
        self.validation_phase = ValidationPhase.NONE
        self._settle(InputKind.FINISH_VALIDATION, *before)
        return ClosedValidation(v.round, dict(v.results), dict(v.assignments))

    # -- losses and time -------------------------------------------------------------------
    def agent_lost(self, lost: AgentLost) -> Verdict:
        """An agent went offline: it is pending nowhere any more."""
        self._check(InputKind.AGENT_LOST)
        before = (self.round_phase, self.validation_phase)
        v = self._validation
        from_validation = False
        if v is not None and self.validating and v.collection.is_pending(lost.agent):
            v.collection.lose(lost.agent, lost.now)
            from_validation = True
        training = self._training
        from_round = False
        if training is not None and self.round_phase is RoundPhase.COLLECTING:
            if training.collection.is_pending(lost.agent) and lost.agent not in training.writing:
                training.collection.lose(lost.agent, lost.now)
                from_round = True
        elif self.round_phase is not RoundPhase.COLLECTING:
            from_round = from_validation  # lost while the job waits on its validation
        self._settle(InputKind.AGENT_LOST, *before)
        return Dropped(lost.agent, lost_from_round=from_round)

    def timer_fired(self, timer: TimerFired) -> None:
        """Deadlines that passed by ``timer.now``: the round's, and validations overdue."""
        self._check(InputKind.TIMER)
        before = (self.round_phase, self.validation_phase)
        training = self._training
        if training is not None and self.round_phase is RoundPhase.COLLECTING:
            training.collection.tick(timer.now)
        v = self._validation
        if v is not None and self.validation_phase is ValidationPhase.OPEN:
            for agent, deadline in sorted(v.deadlines.items()):
                if timer.now >= deadline and v.collection.is_pending(agent):
                    self._validation_history[agent] = None  # overdue: shorter next time
                    v.collection.lose(agent, timer.now)
        self._settle(InputKind.TIMER, *before)

    def next_deadline(self) -> float | None:
        """When the adapter must send :class:`TimerFired` next (None: no deadline pending)."""
        times: list[float] = []
        training = self._training
        if training is not None and self.collecting and training.collection.deadline is not None:
            times.append(training.collection.deadline)
        v = self._validation
        if v is not None and self.validation_phase is ValidationPhase.OPEN:
            times.extend(d for a, d in v.deadlines.items() if v.collection.is_pending(a))
        return min(times, default=None)

    # -- bookkeeping -----------------------------------------------------------------------
    def _refuse(self, agent: str, reason: str, detail: str) -> Refused:
        self.rejected[reason] += 1
        return Refused(agent, reason, detail)

    def _remember_closed(self, assignments: Mapping[str, Assignment], kind: str) -> None:
        """Task ids of recently closed tasks, so late answers are told from forgeries.

        Per kind, not per closing order: validations overlap the next round's training,
        so they close in another order than they were sent. Two of each: round r's
        validation ends after round r + 1's training closed, and a straggler's update for
        round r that a reconnect held back can arrive only then; it is late, not stale.
        """
        recent = self._recent[kind]
        recent.append(frozenset(a.task_id for a in assignments.values()))
        del recent[:-RECENT_CLOSED]
        self._closed_tasks = frozenset().union(*self._recent["train"], *self._recent["validate"])
        if kind == "validate":
            kept = frozenset().union(*self._recent["validate"])
            self._asked = {t: a for t, a in self._asked.items() if t in kept or self._is_open(t)}

    def _is_open(self, task_id: str) -> bool:
        v = self._validation
        return v is not None and any(a.task_id == task_id for a in v.assignments.values())

    @property
    def collecting(self) -> bool:
        return self.round_phase is RoundPhase.COLLECTING

    @property
    def validation_agents(self) -> tuple[frozenset[str], set[str]]:
        """The outstanding validation's agents: all it asks, and those yet to answer."""
        v = self._validation
        return (v.collection.assigned, v.collection.pending) if v else (frozenset(), set())

    @property
    def has_validation(self) -> bool:
        """A validation is outstanding (open, or closed and not finished yet)."""
        return self.validation_phase is not ValidationPhase.NONE

    @property
    def validating(self) -> bool:
        return self.validation_phase is ValidationPhase.OPEN
