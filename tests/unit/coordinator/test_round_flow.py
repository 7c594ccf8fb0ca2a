"""Whole jobs in memory: the job's flow driven by fake agents, no broker, no clock, no sleeps.

The flow yields commands; :class:`FakeWorld` carries them out as a coordinator and its
agents would (every agent answers at once, or a straggler never does), and the test reads
the events. Restarting from every checkpoint the run wrote gives the same rounds.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from client_selectors import make_selector
from coordinator.config import JobConfig, parse_job
from coordinator.round_commands import (
    Aggregate,
    Aggregated,
    Clock,
    Command,
    CrashPoint,
    Drain,
    Emit,
    EvaluateOnServer,
    GrantAgents,
    HoldAgents,
    PrepareRows,
    PublishModel,
    PublishStatus,
    ReadClock,
    ReadOnline,
    SaveCheckpoint,
    SendTasks,
    Until,
)
from coordinator.round_flow import JobFlow
from coordinator.round_plan import RoundPlanner
from coordinator.round_record import CheckpointState
from coordinator.round_state import JobPhase
from coordinator.round_verdicts import TimerFired, WriteRow
from coordinator.update_check import Assignment
from fedbus.protocol.messages import AgentProfile, ResultMeta, UpdateMeta

AGENTS = ["a0", "a1", "a2", "a3"]


def config(**overrides: Any) -> JobConfig:
    base: dict[str, Any] = {
        "name": "mem",
        "model": "fedbus.examples.digits:make_model",
        "data": "fedbus.examples.digits:load_partition",
        "rounds": 4,
        "num_participants": 3,
        "overcommitment": 1.34,
        "clients_required": 1,
        "min_agents": 3,
        "eval_interval": 1,
        "eval_timeout": 30,
        "round_timeout": 60,
        "seed": 7,
    }
    return parse_job({**base, **overrides}, "<test>")


def new_flow(cfg: JobConfig) -> JobFlow:
    selector = make_selector(cfg.selector.name, cfg.selector_knobs, cfg.seed)
    planner = RoundPlanner(cfg, None, 100, lambda _: AgentProfile(num_samples=50))
    return JobFlow(cfg, selector, planner)


class FakeWorld:
    """The adapter and the agents in one: answers in dispatch order, a straggler never."""

    def __init__(self, flow: JobFlow, no_validation: frozenset[str] = frozenset()) -> None:
        self.flow = flow
        self.no_validation = no_validation  # agents that never answer a validation
        self.now = 1000.0
        self.events: list[Emit] = []
        self.times: dict[tuple[str, int], float] = {}  # (event, round) -> when
        self.snapshots: list[CheckpointState] = []
        self.outbox: list[tuple[str, Assignment, str, Any]] = []  # (kind, task, ...)
        self._ids = itertools.count()

    def run(self) -> Any:
        self.flow.set_phase(JobPhase.WAITING_FOR_AGENTS)  # as the adapter does at start
        flow, result = self.flow.run(), None
        while True:
            try:
                command = flow.send(result)
            except StopIteration as stop:
                return stop.value
            result = self.execute(command)

    def execute(self, command: Command) -> Any:
        self.now += 0.01
        match command:
            case ReadClock():
                return Clock(self.now, self.now, self.now)
            case ReadOnline():
                return list(AGENTS)
            case GrantAgents(candidates):
                return list(candidates)  # no scheduler: every candidate
            case Emit():
                self.events.append(command)
                self.times[(command.name, command.round)] = self.now
            case SaveCheckpoint():
                self.snapshots.append(self.flow.snapshot())
            case SendTasks():
                return self.send(command)
            case Drain(until):
                self.deliver(until)
                return 0.0
            case Aggregate(rows, weights):
                assert len(rows) == len(set(rows)) == len(weights)
                return Aggregated(ok=True)
            case EvaluateOnServer():
                return (0.5, 0.75, 100)
            case PublishStatus() | PublishModel() | CrashPoint() | PrepareRows() | HoldAgents():
                pass
        return None

    def send(self, command: SendTasks) -> dict[str, Assignment]:
        version = self.flow.model_version
        tasks = {}
        for agent in command.agents:
            task = Assignment(agent, f"t{next(self._ids)}", command.round, version)
            tasks[agent] = task
            request = command.validate_first.get(agent)
            self.outbox.append((command.kind, task, agent, request))
        return tasks

    def deliver(self, until: Until) -> None:
        engine = self.flow.engine
        pending, self.outbox = self.outbox, []
        for kind, task, agent, request in pending:
            if kind == "validate":
                if agent not in self.no_validation:
                    engine.result_arrived(agent, result(task), self.now)
                continue
            folded = None
            if request is not None and agent not in self.no_validation:
                asked = Assignment(agent, request.task_id, request.round, task.model_version)
                if request.in_update:
                    folded = result(asked)
                else:
                    engine.result_arrived(agent, result(asked), self.now)
            meta = update(task, folded)
            for verdict in engine.update_arrived(agent, meta, self.now):
                if isinstance(verdict, WriteRow):
                    engine.row_written(agent, 100, self.now)
        # Whoever stays silent is waited for until the engine's deadlines.
        while (until is Until.ROUND_CLOSED and engine.collecting) or (
            until is Until.VALIDATION_CLOSED and engine.validating
        ):
            due = engine.next_deadline()
            assert due is not None, "a wait with no deadline: it could never end"
            self.now = max(self.now, due)
            engine.timer_fired(TimerFired(self.now))


def update(task: Assignment, validation: ResultMeta | None) -> UpdateMeta:
    return UpdateMeta(
        job="mem",
        round=task.round,
        agent=task.agent,
        task_id=task.task_id,
        base_version=task.model_version,
        num_examples=50,
        loss=1.0,
        validation=validation,
    )


def result(task: Assignment) -> ResultMeta:
    return ResultMeta(
        job="mem",
        round=task.round,
        agent=task.agent,
        task_id=task.task_id,
        model_version=task.model_version,
        num_examples=20,
        accuracy=0.8,
        loss=0.4,
    )


def ends(world: FakeWorld) -> list[dict[str, Any]]:
    return [dict(e.data) for e in world.events if e.name in ("ROUND_END", "ROUND_FAILED")]


@pytest.mark.parametrize("overlap", [True, False])
def test_a_whole_job_runs_every_round_once_with_its_validation(overlap: bool) -> None:
    flow = new_flow(config(eval_overlap=overlap))
    world = FakeWorld(flow)
    assert world.run() is True
    rounds = ends(world)
    assert [e["round"] for e in rounds] == [1, 2, 3, 4]
    assert all(e["ok"] and len(e["kept"]) == 3 and e["eval_agents"] == 4 for e in rounds)
    assert flow.model_version == 4 and flow.completed_rounds == 4
    assert [e.name for e in world.events][-1] == "JOB_END"
    # 4 asked, 3 kept: the 4th answer of every round comes after its close, late.
    assert not flow.engine.rejected and flow.engine.late == 4


def test_an_agent_that_never_validates_costs_eval_timeout_once_then_little() -> None:
    # Validation waited for after every round, a3 never answers one: round 1 waits
    # eval_timeout for it, later rounds VALIDATION_AFTER_MISS (its history says so).
    flow = new_flow(config(eval_overlap=False))
    world = FakeWorld(flow, no_validation=frozenset({"a3"}))
    world.run()
    begins = [world.times[("ROUND_BEGIN", r)] for r in (1, 2, 3, 4)]
    gaps = [b - a for a, b in itertools.pairwise(begins)]
    assert gaps[0] >= 30.0  # eval_timeout: no history yet
    assert all(gap < 3.0 for gap in gaps[1:]), gaps  # 2 s after a miss, not 30
    assert all(e["eval_agents"] == 3 for e in ends(world))


def test_restarting_from_every_checkpoint_gives_the_same_rounds() -> None:
    cfg = config()
    whole = FakeWorld(new_flow(cfg))
    whole.snapshots.append(whole.flow.snapshot())  # the adapter's round-0 checkpoint
    whole.run()
    expected = [(e["round"], e["selected"], e["kept"]) for e in ends(whole)]
    assert len(whole.snapshots) >= cfg.rounds + 1  # round 0, every round, waited validations
    for snapshot in whole.snapshots:
        flow = new_flow(cfg)
        flow.restore(CheckpointState.model_validate(snapshot.model_dump()))
        world = FakeWorld(flow)
        world.run()
        done = snapshot.completed_rounds
        resumed = [(e["round"], e["selected"], e["kept"]) for e in ends(world)]
        assert resumed == expected[done:], done  # the rest, once each, as uninterrupted
        assert flow.model_version == cfg.rounds


def test_agents_excluded_before_a_restart_stay_excluded() -> None:
    cfg = config()
    world = FakeWorld(new_flow(cfg))
    world.run()
    state = world.flow.snapshot().model_dump()
    state["history"][0]["excluded"] = {"a3": "untrusted entry point"}
    flow = new_flow(cfg)
    flow.restore(CheckpointState.model_validate(state))
    assert flow.plan.unable == {"a3": "untrusted entry point"}
    assert flow.plan.eligible(AGENTS, None) == ["a0", "a1", "a2"]
