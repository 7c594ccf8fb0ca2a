from __future__ import annotations

from coordinator.registry import AgentRegistry, Change
from fedbus.protocol.messages import AgentProfile, AgentStatus


def status(agent: str, state: str, profile: AgentProfile | None = None) -> AgentStatus:
    return AgentStatus(agent=agent, state=state, profile=profile)  # type: ignore[arg-type]


def test_changes_and_online_list() -> None:
    r = AgentRegistry()
    assert r.apply(status("b", "online"), 1.0) is Change.CAME_ONLINE
    assert r.apply(status("a", "online", AgentProfile(cpu_count=4)), 1.0) is Change.CAME_ONLINE
    assert r.apply(status("a", "online"), 2.0) is Change.UNCHANGED
    assert r.profile("a") == AgentProfile(cpu_count=4)  # a status without a profile keeps it
    assert r.online() == ["a", "b"]
    assert r.apply(status("a", "offline"), 3.0) is Change.WENT_OFFLINE
    assert r.online() == ["b"] and not r.is_online("a") and len(r) == 2
    assert r.apply(status("c", "offline"), 3.0) is Change.UNCHANGED
    assert r.online() == ["b"]


def test_online_list_is_the_same_object_until_a_change() -> None:
    r = AgentRegistry()
    r.apply(status("a", "online"), 1.0)
    first = r.online()
    r.apply(status("a", "online"), 2.0)
    assert r.online() is first  # selectors reuse their pool mask for an unchanged list
    r.apply(status("b", "online"), 3.0)
    assert r.online() is not first and r.online() == ["a", "b"]
