"""The round's pure decisions: task configs, the step-capped work, who is kept."""

from __future__ import annotations

from coordinator.config import parse_job
from coordinator.round_plan import RoundPlanner, duration
from coordinator.round_state import Phase
from coordinator.round_verdicts import ClosedRound, Reply
from coordinator.update_check import Assignment
from fedbus.fleet.virtual_round import RoundWork
from fedbus.protocol.messages import AgentProfile, Timings, UpdateMeta

CONFIG = parse_job(
    {
        "name": "plan",
        "model": "fedbus.examples.digits:make_model",
        "data": "fedbus.examples.digits:load_partition",
        "rounds": 2,
        "num_participants": 2,
        "overcommitment": 1.5,
        "local_steps": 4,
        "batch_size": 8,
    },
    "<test>",
)


def reply(agent: str, row: int, received: float, reported: float = 0.0) -> Reply:
    meta = UpdateMeta(
        job="plan",
        round=1,
        agent=agent,
        task_id=f"t-{agent}",
        base_version=0,
        timings=Timings(t_comp=reported),
    )
    return Reply(agent, meta, row, received, 10)


def test_wall_clock_keeps_the_first_k_arrivals_with_their_durations() -> None:
    planner = RoundPlanner(CONFIG, None, 100, lambda _: None)
    replies = {a: reply(a, i, 10.0 + i, reported=0.5 * i) for i, a in enumerate("abc")}
    closed = ClosedRound(
        1,
        Phase.COMPLETE,
        "buffer full",
        ["c", "a", "b"],
        replies,
        {},
        {a: Assignment(a, f"t-{a}", 1, 0) for a in "abc"},
    )
    kept, durations, length = planner.choose_kept(closed, None, 10.0, None, None)
    assert kept == ["c", "a"] and length is None
    # Reported timings where the agent has them; else measured since the round began.
    assert durations == {"a": 1e-3, "b": 0.5, "c": 1.0}
    assert duration(replies["a"].meta, 2.5) == 2.5


def test_a_raised_step_override_is_capped_by_the_agents_data_size() -> None:
    profiles = {"small": AgentProfile(num_samples=8), "big": AgentProfile(num_samples=8000)}
    planner = RoundPlanner(CONFIG, None, 100, profiles.get)
    raised = planner.train_config(None, local_steps=400)
    assert raised.base_local_steps == 4 and raised.local_steps == 400
    flops = {steps: RoundWork.dense(100, 8, steps).flops for steps in (4, 5, 40)}
    assert planner.work(raised, "small").flops == flops[5]  # 5 passes over 1 batch
    assert planner.work(raised, "big").flops == flops[40]  # max_steps_factor (10) x E
    assert planner.work(planner.train_config(None), "small").flops == flops[4]  # E: uncut
    assert planner.eligible(["a", "b"], None) == ["a", "b"]  # wall clock: everyone online
