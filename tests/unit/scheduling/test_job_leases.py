"""The service's pool leases: the scheduler kept in step with the registry, per-job leases."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import JobConfigError, load_job, parse_job
from coordinator.job_leases import PoolLeases
from coordinator.registry import AgentRegistry
from coordinator.scheduler import SchedulerError
from fedbus.protocol.messages import AgentProfile, AgentStatus

BASE = {
    "model": "fedbus.examples.digits:make_model",
    "data": "fedbus.examples.digits:load_partition",
    "num_participants": 2,
    "overcommitment": 1.0,
    "min_agents": 2,
    "rounds": 5,
}


def online(registry: AgentRegistry, agent: str, **profile: object) -> None:
    registry.apply(
        AgentStatus(agent=agent, state="online", profile=AgentProfile(**profile)),  # type: ignore[arg-type]
        0.0,
    )


def test_leases_follow_the_registry_and_keep_waiting_reasons() -> None:
    # Prepare: two agents, one tagged; a tagged job and an untagged one.
    registry = AgentRegistry()
    online(registry, "a0", tags=["lab"])
    online(registry, "a1")
    changes: list[dict[str, str]] = []
    leases = PoolLeases(registry, "fifo")
    leases.on_change = lambda: changes.append(dict(leases.waiting))
    tagged = leases.add(
        parse_job({**BASE, "name": "t", "requires": {"tags": ["lab"]}}, "<t>"), lambda: 5
    )
    other = leases.add(parse_job({**BASE, "name": "o"}, "<o>"), lambda: 5)
    # Execute / Assert: one tagged agent of two needed: the job waits, with its reason,
    # and claims nothing (the other job, which can run, claims both agents).
    assert tagged.grant(["a0", "a1"]) == []
    assert leases.waiting["t"].startswith("requirements (tags ['lab']) met by 1 of 2")
    # A second tagged agent comes online: the table is rebuilt, the job may run.
    online(registry, "a2", tags=["lab"])
    assert tagged.grant(registry.online()) == ["a0", "a2"]
    assert "t" not in leases.waiting and changes[-1] == {}
    tagged.hold(["a0", "a2"])
    assert other.grant(registry.online()) == ["a1"]
    with pytest.raises(SchedulerError):
        other.hold(["a0"])
    leases.remove("t")
    assert other.grant(registry.online()) == ["a0", "a1", "a2"]


def test_requires_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: j\nmodel: fedbus.examples.digits:make_model\n"
        "data: fedbus.examples.digits:load_partition\nrequires: {accelerator: tpu}\n"
    )
    with pytest.raises(JobConfigError, match=r"job\.yaml: field requires\.accelerator: .*'tpu'"):
        load_job(path)
    path.write_text(path.read_text().replace("accelerator: tpu", "min_memory_gb: -1"))
    with pytest.raises(JobConfigError, match=r"field requires\.min_memory_gb"):
        load_job(path)
