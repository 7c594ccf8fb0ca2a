"""A job's inbox with caps on the bytes it queues, per agent and in total.

The service's receive loop hands every update and result to the job's inbox at once;
while the job is busy elsewhere (aggregating, evaluating, loading its model), a flood of
messages from one agent (valid credentials, bogus chunks) would otherwise queue without
limit, as the chunk flood of issue #16 did (coordinator 426 -> 1,567 MiB). The queue
counts the payload bytes it holds; :meth:`offer` refuses a message that would take its
agent past ``per_agent`` or everyone past ``total`` (the service counts it as
``flooded``). Honest agents queue at most their current update (and a straggler's),
well under the caps.

The accounting hooks are asyncio.Queue's ``_put`` / ``_get`` (how the standard library's
own PriorityQueue and LifoQueue specialise it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fedbus.protocol.errors import InvalidMessage

if TYPE_CHECKING:
    from coordinator.job_runner import Inbound


class BoundedInbox(asyncio.Queue["Inbound"]):
    def __init__(self, *, per_agent: int, total: int) -> None:
        super().__init__()
        self.per_agent = per_agent
        self.total = total
        self.queued_bytes = 0
        self._by_agent: dict[str, int] = {}

    def queued_by(self, agent: str) -> int:
        return self._by_agent.get(agent, 0)

    def offer(self, item: Inbound) -> None:
        """Queue ``item`` or raise InvalidMessage('flooded') when it would pass a cap."""
        size = len(item.payload)
        if self._by_agent.get(item.agent, 0) + size > self.per_agent:
            raise InvalidMessage(
                "flooded", f"{item.agent} has more than {self.per_agent} bytes waiting"
            )
        if self.queued_bytes + size > self.total:
            raise InvalidMessage("flooded", f"more than {self.total} bytes waiting for the job")
        self.put_nowait(item)

    def _put(self, item: Inbound) -> None:
        super()._put(item)  # type: ignore[misc]
        size = len(item.payload)
        if size:
            self.queued_bytes += size
            self._by_agent[item.agent] = self._by_agent.get(item.agent, 0) + size

    def _get(self) -> Inbound:
        item: Inbound = super()._get()  # type: ignore[misc]
        size = len(item.payload)
        if size:
            self.queued_bytes -= size
            left = self._by_agent[item.agent] - size
            if left:
                self._by_agent[item.agent] = left
            else:
                del self._by_agent[item.agent]
        return item
