"""Which agents exist and which are online, from their retained status messages (pure).

Statuses are applied in their ``ts`` order per agent: one older than the last applied is
stale (a persistent session replays what was queued while the coordinator was away, after
the retained newest) and changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fedbus.protocol.messages import AgentProfile, AgentStatus


class Change(enum.Enum):
    CAME_ONLINE = "came_online"
    WENT_OFFLINE = "went_offline"
    UNCHANGED = "unchanged"
    STALE = "stale"  # older than the agent's last applied status: ignored


@dataclass
class AgentRecord:
    agent: str
    online: bool
    profile: AgentProfile | None
    since: float
    ts: float = 0.0  # the agent's own timestamp of the last status applied


class AgentRegistry:
    def __init__(self) -> None:
        self._agents: dict[str, AgentRecord] = {}
        # The same list object until someone comes or goes: selectors recognise an
        # unchanged pool in O(1) instead of translating 100k ids again.
        self._online: list[str] | None = None

    def apply(self, status: AgentStatus, now: float) -> Change:
        record = self._agents.get(status.agent)
        online = status.state == "online"
        if record is None:
            self._agents[status.agent] = AgentRecord(
                status.agent, online, status.profile, now, status.ts
            )
            if online:
                self._online = None
            return Change.CAME_ONLINE if online else Change.UNCHANGED
        if status.ts < record.ts:
            return Change.STALE
        record.ts = status.ts
        if status.profile is not None:
            record.profile = status.profile
        if record.online == online:
            return Change.UNCHANGED
        record.online, record.since = online, now
        self._online = None
        return Change.CAME_ONLINE if online else Change.WENT_OFFLINE

    def online(self) -> list[str]:
        """Online agent ids, sorted; do not mutate the list (it is shared until a change)."""
        if self._online is None:
            self._online = sorted(a for a, r in self._agents.items() if r.online)
        return self._online

    def is_online(self, agent: str) -> bool:
        record = self._agents.get(agent)
        return record is not None and record.online

    def profile(self, agent: str) -> AgentProfile | None:
        record = self._agents.get(agent)
        return record.profile if record else None

    def __len__(self) -> int:
        return len(self._agents)
