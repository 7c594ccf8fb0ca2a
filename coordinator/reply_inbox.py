"""A job's inbox: agent replies in, typed inputs to the round engine, admitted rows written.

The service's receive loop puts what it routes to a job here (:class:`Inbound`); the job
runner drains it while the flow waits on the round or the validation. Payloads are
reassembled (chunks) and decoded here, large ones in a worker thread; the engine judges
every header; an admitted update's tensors are checked and written into its aggregation
row. Nothing a payload contains can end the job: a bad one is counted and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from coordinator.aggregation import UpdateStack
from coordinator.round_commands import Until
from coordinator.round_engine import RoundEngine
from coordinator.round_table import RoundPhase, ValidationPhase
from coordinator.round_verdicts import AgentLost, Dropped, Late, Refused, TimerFired, WriteRow
from coordinator.update_check import Rejected, decode_result, decode_update, write_update
from fedbus.protocol import chunking
from fedbus.protocol.errors import InvalidMessage
from fedbus.protocol.params import ParamLayout

log = logging.getLogger(__name__)

# Updates larger than this are decoded in a worker thread, smaller ones inline.
INLINE_DECODE_BYTES = 1 << 20
MAX_RESULT_BYTES = 1 << 20


@dataclass(frozen=True)
class Inbound:
    """A reply routed to this job by the service, or word that an agent went or came."""

    kind: str  # "update" | "result" | "lost" | "joined"
    agent: str
    payload: bytes | bytearray | memoryview = b""
    received: float = 0.0


class ReplyInbox:
    def __init__(
        self,
        job: str,
        engine: RoundEngine,
        *,
        max_update_bytes: int,
        max_pending_bytes: int,
        chunk_timeout: float,
        agent_lost: Callable[[str], Awaitable[None]],
        straggler_answered: Callable[[str], None] | None = None,
    ) -> None:
        self.job = job
        self.engine = engine
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue()
        self.max_update_bytes = max_update_bytes
        self._agent_lost = agent_lost  # emits AGENT_LOST
        self._straggler_answered = straggler_answered  # a late update: the agent is free
        self._errors_logged: set[str] = set()
        # Chunked updates: at most two in-flight rounds' worth of unfinished transfers.
        self._chunks = chunking.Reassembler(
            max_bytes=max_update_bytes, max_pending_bytes=max_pending_bytes, timeout=chunk_timeout
        )

    def expire_chunks(self, now: float) -> None:
        """Free chunked updates that stopped half way (the service calls this on a timer)."""
        self._chunks.expire(now)

    def _done(self, until: Until, deadline: float | None, now: float) -> bool:
        if until is Until.ROUND_CLOSED:
            return self.engine.round_phase is not RoundPhase.COLLECTING
        if until is Until.VALIDATION_CLOSED:
            return self.engine.validation_phase is not ValidationPhase.OPEN
        return deadline is None or now >= deadline

    async def drain(
        self,
        until: Until,
        deadline: float | None,
        stack: UpdateStack | None,
        layout: ParamLayout,
    ) -> float:
        """Feed queued replies to the engine until ``until``; the seconds spent on them.

        Deadlines are the engine's: when one passes, it gets a TimerFired input. Waiting
        for agents (AGENT_JOINED), an agent that joined or ``deadline`` ends the wait.
        """
        spent = 0.0
        while True:
            now = time.monotonic()
            due = self.engine.next_deadline()
            if due is not None and now >= due:
                self.engine.timer_fired(TimerFired(now))
                continue
            if self._done(until, deadline, now):
                return spent
            limit = min(t for t in (due, deadline, now + 1.0) if t is not None)
            # What is queued already is taken at once; otherwise wait for the next item
            # under a timeout (wait_for would wrap every get in a task of its own).
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout(max(0.0, limit - now)):
                        item = await self.queue.get()
                except TimeoutError:
                    continue
            if item.kind == "joined":
                if until is Until.AGENT_JOINED:
                    return spent  # the flow counts the online agents again
                continue
            if item.kind == "lost":
                verdict = self.engine.agent_lost(AgentLost(item.agent, time.monotonic()))
                if isinstance(verdict, Dropped) and verdict.lost_from_round:
                    await self._agent_lost(item.agent)
                continue
            began = time.perf_counter()
            try:
                if item.kind == "update":
                    await self._take_update(item, stack, layout)
                elif item.kind == "result":
                    meta = decode_result(item.payload, MAX_RESULT_BYTES)
                    self._log(self.engine.result_arrived(item.agent, meta, time.monotonic()))
            except Rejected as exc:  # undecodable: the engine never saw it
                self.engine.rejected[exc.reason] += 1
                self._log(Refused(item.agent, exc.reason, exc.detail))
            except Exception as exc:  # a fault handling one reply never ends the job (#16)
                reason = f"error:{type(exc).__name__}"
                self.engine.rejected[reason] += 1
                if reason not in self._errors_logged:  # once per kind: a flood stays quiet
                    self._errors_logged.add(reason)
                    log.exception("job %s: reply from %s failed: %s", self.job, item.agent, exc)
            finally:
                spent += time.perf_counter() - began

    def _log(self, verdict: object) -> None:
        if isinstance(verdict, Refused):
            log.warning(
                "job %s: rejected reply from %s: %s: %s",
                self.job,
                verdict.agent,
                verdict.reason,
                verdict.detail,
            )
        elif isinstance(verdict, Late):
            log.info("job %s: late reply from %s", self.job, verdict.agent)

    async def _take_update(
        self, item: Inbound, stack: UpdateStack | None, layout: ParamLayout
    ) -> None:
        """Reassemble and decode an update, let the engine judge it, write an admitted one."""
        if chunking.is_chunk(item.payload):
            try:
                done = self._chunks.offer_unverified(item.agent, item.payload, time.monotonic())
                if done is None:
                    return
                # SHA-256 of a whole update (~30 ms for 44 MB) off the event loop.
                whole = await asyncio.to_thread(chunking.verify, done)
            except InvalidMessage as exc:
                raise Rejected(exc.reason, exc.detail) from exc
            item = Inbound(item.kind, item.agent, whole, item.received)
        large = len(item.payload) > INLINE_DECODE_BYTES
        if large:
            decoded = await asyncio.to_thread(decode_update, item.payload, self.max_update_bytes)
        else:
            decoded = decode_update(item.payload, self.max_update_bytes)
        meta, tensors = decoded
        for verdict in self.engine.update_arrived(item.agent, meta, time.monotonic()):
            if not isinstance(verdict, WriteRow):
                self._log(verdict)
                if isinstance(verdict, Late) and self._straggler_answered is not None:
                    self._straggler_answered(verdict.agent)  # done with this job's task
                continue
            # Row = the agent's place in the dispatch order, not its arrival: the FedAvg sum
            # (and so the whole run) is then the same whatever order the bus delivers in.
            assert stack is not None  # a round is collecting: its rows were prepared
            row = stack.row(verdict.row)
            try:
                if large:
                    await asyncio.to_thread(write_update, meta, tensors, layout, row)
                else:
                    write_update(meta, tensors, layout, row)
            except Rejected as exc:
                self._log(self.engine.row_rejected(item.agent, exc.reason, exc.detail))
            else:
                self.engine.row_written(item.agent, len(item.payload), time.monotonic())
