"""Exceptions of the wire protocol.

    FedbusProtocolError
    ├── InvalidTopic      a topic or id that the protocol does not allow (local or remote)
    └── InvalidMessage    a payload that cannot be decoded or fails its schema (remote fault)

``InvalidMessage.reason`` is a short stable slug (``malformed``, ``schema``, ``oversized``, …)
that the coordinator counts rejections by; ``detail`` is the human sentence.
"""

from __future__ import annotations


class FedbusProtocolError(Exception):
    """Root of every protocol error."""


class InvalidTopic(FedbusProtocolError, ValueError):
    """A topic string or an id that the protocol does not allow."""


class InvalidMessage(FedbusProtocolError, ValueError):
    """A payload that was rejected; ``reason`` is a counter key, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
