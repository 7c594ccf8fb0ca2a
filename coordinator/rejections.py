"""Counting and logging what the coordinator refused, so that no message can end it.

Every inbound message is handled in isolation: whatever exception decoding or applying
it raises is turned into a reason slug, counted, and logged at most once per reason and
interval (a flood of one bad message must not become a flood of log lines). Pure: the
clock is passed in; the shell publishes :attr:`RejectionLog.counts` in its status.

Reasons: the ``InvalidMessage`` slug (``malformed``, ``schema``, ``oversized``, …),
``invalid_topic``, ``bad_job`` for a job submission that fails its checks, and
``error:<ExceptionType>`` for anything unexpected (a bug, logged with its traceback).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from coordinator.config import JobConfigError
from fedbus.protocol.errors import InvalidMessage, InvalidTopic

LOG_INTERVAL_S = 60.0


def reason_of(exc: BaseException) -> str:
    """The counter key of a refused message."""
    if isinstance(exc, InvalidMessage):
        return exc.reason
    if isinstance(exc, InvalidTopic):
        return "invalid_topic"
    if isinstance(exc, JobConfigError):
        return "bad_job"
    return f"error:{type(exc).__name__}"


@dataclass
class RejectionLog:
    """Counts of refused messages by reason, with rate-limited logging."""

    logger: logging.Logger
    interval: float = LOG_INTERVAL_S
    counts: Counter[str] = field(default_factory=Counter)
    _last_logged: dict[str, float] = field(default_factory=dict)
    _since_logged: Counter[str] = field(default_factory=Counter)

    def record(self, topic: str, exc: BaseException, now: float) -> str:
        """Count ``exc`` (raised handling a message on ``topic``); log it unless logged lately."""
        reason = reason_of(exc)
        self.counts[reason] += 1
        self._since_logged[reason] += 1
        last = self._last_logged.get(reason)
        if last is not None and now - last < self.interval:
            return reason
        suppressed = self._since_logged[reason] - 1
        self._last_logged[reason] = now
        self._since_logged[reason] = 0
        more = f" (and {suppressed} more since the last report)" if suppressed else ""
        detail = str(exc)[:300]  # a hostile payload may make the message itself huge
        if reason.startswith("error:"):
            self.logger.error(
                "dropped message on %s: %s%s", topic[:200], detail, more, exc_info=exc
            )
        else:
            self.logger.warning("dropped message on %s: %s%s", topic[:200], detail, more)
        return reason
