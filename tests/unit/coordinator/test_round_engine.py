"""The round engine in memory: whole jobs of inputs, no broker, no clock, no sleeps.

Every row of both transition tables is visited by the scenarios below (checked at the
end); every absent (phase, input) pair raises and changes nothing; and random interleavings
of replies never lose or double-count an update, nor end a round twice.
"""

from __future__ import annotations

import ast
import copy
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator import round_engine
from coordinator.round_engine import RoundEngine
from coordinator.round_state import IllegalTransition, Phase
from coordinator.round_table import (
    ROUND_TABLE,
    VALIDATION_TABLE,
    InputKind,
    RoundPhase,
    ValidationPhase,
)
from coordinator.round_verdicts import (
    AgentLost,
    Dropped,
    Late,
    Refused,
    TimerFired,
    Verdict,
    WriteRow,
)
from coordinator.update_check import Assignment
from fedbus.protocol.messages import ResultMeta, UpdateMeta

JOB = "job"
VISITED: set[tuple[Any, InputKind]] = set()


class RecordingEngine(RoundEngine):
    """The engine, noting which table rows its inputs went through."""

    def _check(self, kind: InputKind) -> None:
        super()._check(kind)
        VISITED.add((self.round_phase, kind))
        VISITED.add((self.validation_phase, kind))


# -- a tiny in-memory job ----------------------------------------------------------------
_ids = itertools.count()


def assign(agents: list[str], round_: int, version: int) -> dict[str, Assignment]:
    return {a: Assignment(a, f"t{next(_ids)}", round_, version) for a in agents}


def update(
    a: Assignment, *, success: bool = True, validation: ResultMeta | None = None
) -> UpdateMeta:
    return UpdateMeta(
        job=JOB,
        round=a.round,
        agent=a.agent,
        task_id=a.task_id,
        base_version=a.model_version,
        success=success,
        encoding="dense" if success else "none",
        num_examples=10,
        validation=validation,
    )


def result(a: Assignment, *, success: bool = True) -> ResultMeta:
    return ResultMeta(
        job=JOB,
        round=a.round,
        agent=a.agent,
        task_id=a.task_id,
        model_version=a.model_version,
        success=success,
        num_examples=5 if success else 0,
        accuracy=0.5,
        loss=1.0,
    )


def deliver(engine: RoundEngine, a: Assignment, now: float, **kw: Any) -> list[Verdict]:
    """An update as the adapter handles it: verdicts, then the row written."""
    verdicts = engine.update_arrived(a.agent, update(a, **kw), now)
    for v in verdicts:
        if isinstance(v, WriteRow):
            engine.row_written(a.agent, 100, now)
    return verdicts


def open_round(
    engine: RoundEngine,
    agents: list[str],
    round_: int = 1,
    *,
    target: int | None = None,
    folded: dict[str, bool] | None = None,
) -> dict[str, Assignment]:
    tasks = assign(agents, round_, round_ - 1)
    engine.open_round(
        round_,
        tasks,
        target=target or len(agents),
        required=1,
        deadline=100.0 * round_,
        folded=folded,
    )
    return tasks


# -- the training round ------------------------------------------------------------------
def test_a_round_closes_when_its_buffer_is_full_and_ends_once() -> None:
    engine = RecordingEngine(JOB)
    tasks = open_round(engine, ["a", "b", "c"], target=2)
    assert engine.round_phase is RoundPhase.COLLECTING
    assert deliver(engine, tasks["b"], 1.0) == [WriteRow("b", 1)]  # row = dispatch order
    assert deliver(engine, tasks["a"], 2.0) == [WriteRow("a", 0)]
    assert engine.round_phase is RoundPhase.CLOSED
    closed = engine.close_round()
    assert closed.phase is Phase.COMPLETE and closed.accepted == ["b", "a"]
    assert closed.reason == "buffer full" and sorted(closed.replies) == ["a", "b"]
    # The straggler's update after the close: late, not aggregated.
    assert deliver(engine, tasks["c"], 3.0) == [Late("c")]
    engine.end_round(3.0)
    assert engine.round_phase is RoundPhase.IDLE
    assert deliver(engine, tasks["c"], 4.0) == [Late("c")]  # still late after the end
    with pytest.raises(IllegalTransition):
        engine.end_round(5.0)  # a round ends once
    assert engine.late == 2 and not engine.rejected


def test_duplicates_forgeries_and_stale_replies_are_refused_and_change_nothing() -> None:
    engine = RecordingEngine(JOB)
    tasks = open_round(engine, ["a", "b"])
    deliver(engine, tasks["a"], 1.0)
    assert [type(v) for v in deliver(engine, tasks["a"], 1.5)] == [Refused]  # duplicate
    forged = update(tasks["b"]).model_copy(update={"agent": "a"})
    assert isinstance(engine.update_arrived("b", forged, 2.0)[0], Refused)
    old = Assignment("b", "nope", 1, 0)
    assert isinstance(engine.update_arrived("b", update(old), 2.0)[0], Refused)
    assert engine.rejected == {"duplicate": 1, "forged": 1, "stale": 1}
    assert engine.round_phase is RoundPhase.COLLECTING
    deliver(engine, tasks["b"], 3.0)
    assert engine.close_round().reason == "buffer full"


def test_an_update_whose_tensors_fail_leaves_the_agent_pending() -> None:
    engine = RecordingEngine(JOB)
    tasks = open_round(engine, ["a"])
    assert engine.update_arrived("a", update(tasks["a"]), 1.0) == [WriteRow("a", 0)]
    refused = engine.row_rejected("a", "non_finite", "NaN")
    assert refused.reason == "non_finite" and engine.rejected == {"non_finite": 1}
    with pytest.raises(IllegalTransition):
        engine.row_written("a", 1, 1.0)  # nothing is being written any more
    deliver(engine, tasks["a"], 2.0)  # a corrected update for the same task
    assert engine.close_round().accepted == ["a"]


def test_a_failure_report_and_a_lost_agent_close_the_round_without_its_deadline() -> None:
    engine = RecordingEngine(JOB)
    tasks = open_round(engine, ["a", "b", "c"])
    assert deliver(engine, tasks["a"], 1.0, success=False) == [Dropped("a")]
    assert engine.agent_lost(AgentLost("b", 2.0)) == Dropped("b", lost_from_round=True)
    assert engine.agent_lost(AgentLost("b", 2.1)) == Dropped("b")  # not pending any more
    deliver(engine, tasks["c"], 3.0)
    closed = engine.close_round()
    assert closed.reason == "all replied" and list(closed.failures) == ["a"]
    assert deliver(engine, tasks["b"], 4.0) == [Late("b")]  # closed: late


def test_an_agent_that_came_back_after_being_lost_is_late() -> None:
    engine = RecordingEngine(JOB)
    tasks = open_round(engine, ["a", "b"])
    engine.agent_lost(AgentLost("a", 1.0))
    assert deliver(engine, tasks["a"], 2.0) == [Late("a")]


def test_the_deadline_arrives_as_a_timer_and_a_round_without_replies_fails() -> None:
    engine = RecordingEngine(JOB)
    open_round(engine, ["a", "b"])
    assert engine.next_deadline() == 100.0
    engine.timer_fired(TimerFired(99.0))
    assert engine.round_phase is RoundPhase.COLLECTING
    engine.timer_fired(TimerFired(100.0))
    closed = engine.close_round()
    assert closed.phase is Phase.FAILED and closed.reason.startswith("timeout")
    engine.timer_fired(TimerFired(101.0))  # a timer after the close changes nothing
    assert engine.next_deadline() is None
    engine.end_round(101.0)
    engine.timer_fired(TimerFired(102.0))
    engine.agent_lost(AgentLost("a", 103.0))
    assert engine.round_phase is RoundPhase.IDLE


def test_an_update_outside_any_round_is_stale() -> None:
    engine = RecordingEngine(JOB)
    verdicts = engine.update_arrived("a", update(Assignment("a", "t", 1, 0)), 1.0)
    assert isinstance(verdicts[0], Refused) and engine.rejected == {"stale": 1}


def test_a_round_without_agents_is_closed_at_once() -> None:
    engine = RecordingEngine(JOB)
    engine.open_round(1, {}, target=1, required=1, deadline=10.0)
    assert engine.round_phase is RoundPhase.CLOSED
    assert engine.close_round().phase is Phase.FAILED


# -- the validation ----------------------------------------------------------------------
def test_a_stand_alone_validation_collects_results_and_finishes_once() -> None:
    engine = RecordingEngine(JOB)
    engine.open_validation(1, ["a", "b"], eval_timeout=30.0)
    assert engine.validation_phase is ValidationPhase.OPEN and engine.unasked == ["a", "b"]
    tasks = assign(["a", "b"], 1, 1)
    engine.ask(tasks, 0.0)
    with pytest.raises(IllegalTransition):
        engine.ask(tasks, 0.0)  # nobody is left to ask
    assert engine.result_arrived("a", result(tasks["a"]), 1.0) == Dropped("a")
    assert isinstance(engine.result_arrived("a", result(tasks["a"]), 1.1), Refused)
    engine.result_arrived("b", result(tasks["b"], success=False), 2.0)  # a refusal
    assert engine.validation_phase is ValidationPhase.CLOSED
    closed = engine.finish_validation()
    assert list(closed.results) == ["a"] and engine.validation_phase is ValidationPhase.NONE
    assert engine.result_arrived("b", result(tasks["b"]), 3.0) == Late("b")
    with pytest.raises(IllegalTransition):
        engine.finish_validation()


def test_overlapped_validation_folded_in_updates_is_given_up_with_a_missing_update() -> None:
    # Round 1's validation rides in round 2's train tasks (in_update): the agent whose
    # update never came is lost to the validation at round 2's end, not at eval_timeout.
    engine = RecordingEngine(JOB)
    engine.open_validation(1, ["a", "b"], eval_timeout=30.0)
    requests = assign(["a", "b"], 1, 1)
    engine.ask(requests, 0.0, in_update=["a", "b"])
    assert engine.next_deadline() is None  # bounded by the round, not eval_timeout
    folded = {"a": True, "b": True}
    tasks = open_round(engine, ["a", "b"], round_=2, target=1, folded=folded)
    verdicts = deliver(engine, tasks["a"], 1.0, validation=result(requests["a"]))
    assert verdicts == [Dropped("a"), WriteRow("a", 0)]  # the result first, then the row
    assert engine.round_phase is RoundPhase.CLOSED and engine.validating
    engine.update_arrived("b", update(tasks["b"]), 1.5)  # late: the round closed
    engine.end_round(2.0)
    assert engine.validation_phase is ValidationPhase.CLOSED
    assert list(engine.finish_validation().results) == ["a"]


def test_a_straggler_refusing_its_folded_validation_ends_the_wait() -> None:
    engine = RecordingEngine(JOB)
    engine.open_validation(1, ["a", "s"], eval_timeout=30.0)
    requests = assign(["a", "s"], 1, 1)
    engine.ask(requests, 0.0)
    open_round(engine, ["a", "s"], round_=2, target=1)
    engine.result_arrived("a", result(requests["a"]), 0.5)
    assert engine.validating
    engine.result_arrived("s", result(requests["s"], success=False), 0.6)  # model_moved_on
    assert engine.validation_phase is ValidationPhase.CLOSED
    assert engine.round_phase is RoundPhase.COLLECTING  # the round goes on regardless


def test_validation_deadlines_come_from_each_agents_history() -> None:
    engine = RecordingEngine(JOB)
    # Round 1: nobody has history: eval_timeout. "q" answers in 0.5 s, "m" never does.
    engine.open_validation(1, ["q", "m"], eval_timeout=30.0)
    first = assign(["q", "m"], 1, 1)
    engine.ask(first, 0.0)
    assert engine.next_deadline() == 30.0
    engine.result_arrived("q", result(first["q"]), 0.5)
    engine.timer_fired(TimerFired(30.0))
    assert engine.validation_phase is ValidationPhase.CLOSED
    engine.finish_validation()
    # Round 2: "m" missed its last one: waited for briefly; "q" gets 10x its slowest answer,
    # at least the floor.
    engine.open_validation(2, ["q", "m"], eval_timeout=30.0)
    engine.ask(assign(["q", "m"], 2, 2), 100.0)
    assert engine.next_deadline() == 100.0 + round_engine.VALIDATION_AFTER_MISS
    engine.timer_fired(TimerFired(100.0 + round_engine.VALIDATION_AFTER_MISS))
    assert engine.next_deadline() == 100.0 + round_engine.VALIDATION_FLOOR
    # An answer from "m", however late, counts as history again.
    engine.result_arrived("m", result(first["m"]), 140.0)
    engine.timer_fired(TimerFired(200.0))
    engine.finish_validation()
    engine.open_validation(3, ["m"], eval_timeout=30.0)
    engine.ask(assign(["m"], 3, 3), 300.0)
    assert engine.next_deadline() == 330.0  # 10 x 140 s, capped at eval_timeout


def test_an_agent_lost_while_the_job_waits_on_its_validation() -> None:
    engine = RecordingEngine(JOB)
    engine.open_validation(1, ["a", "b"], eval_timeout=30.0)
    tasks = assign(["a", "b"], 1, 1)
    engine.ask(tasks, 0.0)
    assert engine.agent_lost(AgentLost("a", 1.0)) == Dropped("a", lost_from_round=True)
    assert engine.update_arrived("a", update(Assignment("a", "x", 1, 1)), 1.5) == [Late("a")]
    assert engine.result_arrived("a", result(tasks["a"]), 2.0) == Late("a")
    engine.result_arrived("b", result(tasks["b"]), 3.0)
    assert engine.validation_phase is ValidationPhase.CLOSED
    # Everything in: replies and timers pass through until it is finished.
    engine.result_arrived("b", result(tasks["b"]), 3.5)
    engine.update_arrived("b", update(Assignment("b", "y", 1, 1)), 3.6)
    engine.agent_lost(AgentLost("b", 3.7))
    engine.timer_fired(TimerFired(3.8))
    tasks2 = open_round(engine, ["a"], round_=2)
    deliver(engine, tasks2["a"], 4.0)
    engine.end_round(4.0)
    engine.finish_validation()


def test_a_validation_with_nobody_to_ask_is_closed_at_once() -> None:
    engine = RecordingEngine(JOB)
    engine.open_validation(1, [], eval_timeout=30.0)
    assert engine.validation_phase is ValidationPhase.CLOSED
    with pytest.raises(IllegalTransition):
        engine.open_validation(2, ["a"], eval_timeout=30.0)
    assert engine.finish_validation().results == {}


def test_a_round_with_rows_written_and_rejected_while_a_validation_is_open() -> None:
    engine = RecordingEngine(JOB)
    engine.open_validation(1, ["v"], eval_timeout=30.0)
    engine.ask(assign(["v"], 1, 1), 0.0)
    tasks = open_round(engine, ["a", "b"], round_=2)
    engine.update_arrived("a", update(tasks["a"]), 1.0)
    engine.row_rejected("a", "bad_tensors", "shape")
    deliver(engine, tasks["a"], 2.0)
    deliver(engine, tasks["b"], 3.0)
    engine.end_round(3.0)
    assert engine.validating


# -- illegal inputs ----------------------------------------------------------------------
def _engine_in(
    round_phase: RoundPhase, validation_phase: ValidationPhase, cls: type[RoundEngine] = RoundEngine
) -> RoundEngine:
    """A fresh engine driven to the given pair of phases."""
    engine = cls(JOB)
    if validation_phase is not ValidationPhase.NONE:
        engine.open_validation(1, ["v"], eval_timeout=30.0)
        engine.ask(assign(["v"], 1, 1), 0.0)
    if validation_phase is ValidationPhase.CLOSED:
        engine.agent_lost(AgentLost("v", 0.0))
    if round_phase is not RoundPhase.IDLE:
        tasks = open_round(engine, ["a", "w"], round_=2, target=1)
        engine.update_arrived("w", update(tasks["w"]), 0.0)  # being written
        if round_phase is RoundPhase.CLOSED:
            deliver(engine, tasks["a"], 0.5)
    assert (engine.round_phase, engine.validation_phase) == (round_phase, validation_phase)
    return engine


CALLS: dict[InputKind, Callable[[RoundEngine], object]] = {
    InputKind.OPEN_ROUND: lambda e: e.open_round(9, {}, target=1, required=1, deadline=1.0),
    InputKind.UPDATE: lambda e: e.update_arrived("a", update(Assignment("a", "z", 9, 0)), 1.0),
    InputKind.ROW_WRITTEN: lambda e: e.row_written("w", 1, 1.0),
    InputKind.ROW_REJECTED: lambda e: e.row_rejected("w", "bad_tensors", ""),
    InputKind.RESULT: lambda e: e.result_arrived("v", result(Assignment("v", "z", 9, 0)), 1.0),
    InputKind.AGENT_LOST: lambda e: e.agent_lost(AgentLost("a", 1.0)),
    InputKind.TIMER: lambda e: e.timer_fired(TimerFired(1.0)),
    InputKind.END_ROUND: lambda e: e.end_round(1.0),
    InputKind.OPEN_VALIDATION: lambda e: e.open_validation(9, ["x"], eval_timeout=1.0),
    InputKind.ASK: lambda e: e.ask({}, 1.0),
    InputKind.FINISH_VALIDATION: lambda e: e.finish_validation(),
}


def _illegal() -> Iterator[tuple[RoundPhase, ValidationPhase, InputKind]]:
    for r, v, k in itertools.product(RoundPhase, ValidationPhase, InputKind):
        if (r, k) not in ROUND_TABLE or (v, k) not in VALIDATION_TABLE:
            yield r, v, k


@pytest.mark.parametrize(("round_phase", "validation_phase", "kind"), list(_illegal()))
def test_an_illegal_input_raises_and_changes_nothing(
    round_phase: RoundPhase, validation_phase: ValidationPhase, kind: InputKind
) -> None:
    engine = _engine_in(round_phase, validation_phase)
    before = copy.deepcopy(engine.__dict__)
    with pytest.raises(IllegalTransition):
        CALLS[kind](engine)
    assert engine.__dict__ == before


def _legal() -> Iterator[tuple[RoundPhase, ValidationPhase, InputKind]]:
    for r, v, k in itertools.product(RoundPhase, ValidationPhase, InputKind):
        if (r, k) in ROUND_TABLE and (v, k) in VALIDATION_TABLE:
            yield r, v, k


@pytest.mark.parametrize(("round_phase", "validation_phase", "kind"), list(_legal()))
def test_a_legal_input_leads_where_the_tables_say(
    round_phase: RoundPhase, validation_phase: ValidationPhase, kind: InputKind
) -> None:
    engine = _engine_in(round_phase, validation_phase, RecordingEngine)
    CALLS[kind](engine)
    assert engine.round_phase in ROUND_TABLE[(round_phase, kind)]
    assert engine.validation_phase in VALIDATION_TABLE[(validation_phase, kind)]


# -- random interleavings ----------------------------------------------------------------
AGENTS = ["a", "b", "c", "d"]
REPLY = st.tuples(
    st.sampled_from(["update", "fail", "late_task", "lost", "timer", "deadline", "reject_row"]),
    st.sampled_from(AGENTS),
)


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(st.lists(REPLY, max_size=30), st.integers(1, 4))
def test_random_interleavings_never_lose_or_double_count_an_update(
    script: list[tuple[str, str]], target: int
) -> None:
    engine = RoundEngine(JOB)
    old = open_round(engine, AGENTS, round_=1)
    engine.timer_fired(TimerFired(100.0))
    engine.end_round(100.0)
    tasks = open_round(engine, AGENTS, round_=2, target=target)  # deadline 200
    written: list[str] = []
    dropped = answers = 0
    now = 100.0
    for step, agent in script:
        now += 1.0
        if step == "lost":
            engine.agent_lost(AgentLost(agent, now))
        elif step in ("timer", "deadline"):
            engine.timer_fired(TimerFired(now if step == "timer" else 200.0))
        else:
            task = old[agent] if step == "late_task" else tasks[agent]
            verdicts = engine.update_arrived(agent, update(task, success=step != "fail"), now)
            answers += 1
            assert len(verdicts) == 1  # every update gets exactly one verdict
            if isinstance(verdicts[0], Dropped):
                dropped += 1
            elif isinstance(verdicts[0], WriteRow):
                if step == "reject_row":
                    engine.row_rejected(agent, "bad_tensors", "")
                else:
                    engine.row_written(agent, 1, now)
                    written.append(agent)
    # No update counted twice, none kept beyond the buffer; every one accounted for once.
    assert len(written) == len(set(written)) <= target
    assert answers == len(written) + dropped + engine.late + sum(engine.rejected.values())
    if engine.round_phase is RoundPhase.COLLECTING:
        engine.timer_fired(TimerFired(1e9))
    closed = engine.close_round()
    assert sorted(closed.replies) == sorted(written) == sorted(closed.accepted)
    assert len(closed.failures) == dropped and not set(closed.failures) & set(closed.replies)
    engine.end_round(now)
    with pytest.raises(IllegalTransition):
        engine.end_round(now)  # never ends twice


# -- the shape of the engine -------------------------------------------------------------
ENGINE_MODULES = [
    "round_engine.py",
    "round_table.py",
    "round_verdicts.py",
    "round_state.py",
    "round_flow.py",
    "round_validation.py",
    "agent_holds.py",
    "round_commands.py",
    "round_plan.py",
    "round_record.py",
    "model_step.py",
]


@pytest.mark.parametrize("name", ENGINE_MODULES)
def test_the_engine_has_no_await_no_clock_and_no_mqtt(name: str) -> None:
    source = (Path(__file__).parents[3] / "coordinator" / name).read_text()
    tree = ast.parse(source)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"asyncio", "aiomqtt", "paho", "time", "socket", "edge_agent"}
    assert not any(isinstance(n, ast.Await | ast.AsyncFunctionDef) for n in ast.walk(tree))


def test_every_row_of_both_tables_is_visited() -> None:
    # Runs last in this module (pytest keeps file order): the scenarios above fed VISITED.
    rows = set(ROUND_TABLE) | set(VALIDATION_TABLE)
    assert rows - VISITED == set()
