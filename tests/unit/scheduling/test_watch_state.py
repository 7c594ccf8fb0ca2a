"""The watch view's state: jobs, waiting reasons, agents busy for which job, round times."""

from __future__ import annotations

from rich.console import Console

from coordinator.watch_state import WatchState
from fedbus.protocol.messages import (
    AgentProfile,
    AgentStatus,
    CoordinatorStatus,
    Event,
    JobStatus,
    Telemetry,
)


def screen(state: WatchState) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(state.render())
    return console.export_text()


def test_agents_are_busy_for_a_job_from_round_begin_to_round_end() -> None:
    # Prepare
    state = WatchState()
    state.coordinator_status(
        CoordinatorStatus(
            coordinator="c", state="online", jobs=["a", "b"], policy="fifo", waiting={"b": "no GPU"}
        )
    )
    state.job_status(JobStatus(job="a", state="running", round=2, rounds=9, last_accuracy=0.5))
    for agent in ("x", "y"):
        profile = AgentProfile(jetson_model="Jetson Orin Nano", tags=["solar"])
        state.agent_status(AgentStatus(agent=agent, state="online", profile=profile))
    state.telemetry(Telemetry(agent="x", ts=1.0, cpu_percent=87.0, mem_used_mb=512.0))
    # Execute: round 3 of job a dispatches x.
    state.event(Event(job="a", event="ROUND_BEGIN", round=3, ts=1.0, data={"dispatched": ["x"]}))
    busy = screen(state)
    state.event(Event(job="a", event="ROUND_END", round=3, ts=2.0, data={"durations": {"x": 1.25}}))
    idle = screen(state)
    # Assert
    assert state.agents["x"].busy_for is None and state.agents["x"].last_round_s == 1.25
    assert "agents: 2 online, 1 busy" in busy and "agents: 2 online, 0 busy" in idle
    x_row = next(line for line in busy.splitlines() if "│ x " in line)
    assert "a" in x_row.split("│")[3] and "jetson Jetson Orin Nano" in x_row and "87" in x_row
    assert any("│ b " in line and "waiting" in line for line in busy.splitlines())
    assert "b waits: no GPU" in busy
    assert any("2/9" in line and "0.5000" in line for line in busy.splitlines())


def test_an_agent_going_offline_is_no_longer_busy() -> None:
    state = WatchState()
    state.event(Event(job="a", event="ROUND_BEGIN", round=1, ts=1.0, data={"dispatched": ["x"]}))
    state.agent_status(AgentStatus(agent="x", state="offline"))
    assert state.agents["x"].busy_for is None and not state.agents["x"].online
