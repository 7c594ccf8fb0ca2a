"""The latest global model of each job, shared by every agent of a process.

An emulator runs many agents in one process; they all read the same decoded model, so
a model version costs one decode and one copy in memory, whatever the agent count.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from fedbus.protocol import chunking
from fedbus.protocol.messages import ModelMeta, decode_envelope
from fedbus.protocol.params import ParamLayout


@dataclass(frozen=True)
class GlobalModel:
    job: str
    version: int
    tensors: dict[str, np.ndarray]
    layout: ParamLayout
    run_epoch: str = ""


class ModelStore:
    def __init__(self, max_model_bytes: int = 1 << 30) -> None:
        self._models: dict[str, GlobalModel] = {}
        # The version each job's current model replaced (same run): a validation of it that
        # was queued behind other work (another job's training) can still run.
        self._previous: dict[str, GlobalModel] = {}
        self._changed = asyncio.Condition()
        # Large models arrive as retained chunks; a late subscriber gets them all at once.
        self._chunks = chunking.Reassembler(
            max_bytes=max_model_bytes, max_pending_bytes=2 * max_model_bytes, timeout=600.0
        )
        self._expiry: asyncio.TimerHandle | None = None

    def _schedule_expiry(self) -> None:
        """Free a model transfer that stopped half way on a timer, not only when another
        transfer starts (the same Reassembler as the coordinator's, issue #16)."""
        if self._expiry is not None or not self._chunks.pending_bytes:
            return
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(self._chunks.timeout / 4, self._expire_tick)

    def _expire_tick(self) -> None:
        self._expiry = None
        self._chunks.expire(time.monotonic())
        self._schedule_expiry()

    def latest(self, job: str) -> GlobalModel | None:
        return self._models.get(job)

    def has(self, job: str, version: int, run_epoch: str = "") -> bool:
        """A model of ``job`` at ``version`` or newer, of run ``run_epoch`` ("" = any run)."""
        model = self._models.get(job)
        if model is None or (run_epoch and model.run_epoch != run_epoch):
            return False
        return model.version >= version

    async def offer(
        self, payload: bytes | bytearray | memoryview, key: str = ""
    ) -> GlobalModel | None:
        """Decode a model payload (or a chunk of one) unless this version is already held."""
        if not payload:
            return None  # a cleared retained message
        if chunking.is_chunk(payload):
            done = self._chunks.offer_unverified(key, payload, time.monotonic())
            self._schedule_expiry()
            if done is None:
                return None
            payload = await asyncio.to_thread(chunking.verify, done)
        meta, tensors = decode_envelope(ModelMeta, payload)
        current = self._models.get(meta.job)
        same_run = current is not None and current.run_epoch == meta.run_epoch
        if current is not None and same_run and current.version >= meta.version:
            return current
        arrays = {name: t for name, t in tensors.items() if isinstance(t, np.ndarray)}
        model = GlobalModel(
            meta.job, meta.version, arrays, ParamLayout.from_tensors(arrays), meta.run_epoch
        )
        async with self._changed:
            if current is not None and same_run:
                self._previous[meta.job] = current
            else:
                self._previous.pop(meta.job, None)
            self._models[meta.job] = model
            self._changed.notify_all()
        return model

    async def wait_for(
        self,
        job: str,
        version: int,
        timeout: float,
        run_epoch: str = "",
        *,
        previous: bool = False,
    ) -> GlobalModel | None:
        """The model of ``job`` at exactly ``version``; None on timeout or if it moved on.

        With ``run_epoch``, only that run's model counts: an older run's retained model of
        a newer version (a re-run restarts at 0) is waited past, not taken for this one.
        With ``previous`` (validations), the version the current model replaced will do.
        """

        async def arrived() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.has(job, version, run_epoch))

        # asyncio.wait_for, not asyncio.timeout: the agent side runs on Python 3.10, where
        # asyncio.TimeoutError is not yet the built-in TimeoutError the agent catches.
        try:
            await asyncio.wait_for(arrived(), timeout)
        except asyncio.TimeoutError:  # noqa: UP041 (not TimeoutError on Python 3.10)
            raise TimeoutError(f"model {job} v{version} did not arrive in {timeout} s") from None
        model = self._models[job]
        if model.version == version:
            return model
        return self.held_previous(job, version) if previous else None

    def held_previous(self, job: str, version: int) -> GlobalModel | None:
        """The model that ``job``'s current one replaced, if it is at ``version``."""
        model = self._previous.get(job)
        return model if model is not None and model.version == version else None
