from __future__ import annotations

from coordinator.registry import AgentRegistry, Change
from fedbus.protocol.messages import AgentProfile, AgentStatus


def status(
    agent: str, state: str, profile: AgentProfile | None = None, ts: float = 0.0
) -> AgentStatus:
    return AgentStatus(agent=agent, state=state, profile=profile, ts=ts)  # type: ignore[arg-type]


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


def test_a_status_older_than_the_last_applied_is_stale_and_changes_nothing() -> None:
    # A restarted coordinator gets the retained newest status first, then the older ones
    # its persistent session queued: applied in arrival order they would drop an online agent.
    r = AgentRegistry()
    assert r.apply(status("a", "online", ts=30.0), 1.0) is Change.CAME_ONLINE
    assert r.apply(status("a", "offline", ts=10.0), 2.0) is Change.STALE
    assert r.apply(status("a", "online", AgentProfile(cpu_count=8), ts=20.0), 2.0) is Change.STALE
    assert r.online() == ["a"] and r.profile("a") is None
    assert r.apply(status("a", "offline", ts=30.0), 3.0) is Change.WENT_OFFLINE  # same ts: applied
    assert r.apply(status("a", "online", ts=31.0), 4.0) is Change.CAME_ONLINE
