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


class ModelStore:
    def __init__(self, max_model_bytes: int = 1 << 30) -> None:
        self._models: dict[str, GlobalModel] = {}
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

    def has(self, job: str, version: int) -> bool:
        model = self._models.get(job)
        return model is not None and model.version >= version

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
        if current is not None and current.version >= meta.version:
            return current
        arrays = {name: t for name, t in tensors.items() if isinstance(t, np.ndarray)}
        model = GlobalModel(meta.job, meta.version, arrays, ParamLayout.from_tensors(arrays))
        async with self._changed:
            self._models[meta.job] = model
            self._changed.notify_all()
        return model

    async def wait_for(self, job: str, version: int, timeout: float) -> GlobalModel | None:
        """The model of ``job`` at exactly ``version``; None on timeout or if it moved on."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.has(job, version))
        model = self._models[job]
        return model if model.version == version else None
