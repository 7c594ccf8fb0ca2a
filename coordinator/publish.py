"""The service's publish, as a job sees it: one MQTT connection shared by every job."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol


class Publish(Protocol):
    """The service's publish: chunks payloads above its chunk size (to ``chunk_topic``)."""

    def __call__(
        self,
        topic: str,
        payload: bytes | bytearray,
        qos: int,
        retain: bool,
        chunk_topic: Callable[[int], str] | None = None,
    ) -> Awaitable[None]: ...
