"""A token-bucket link shaper for the agent's own sends and receives (a test aid).

``edge-agent run --link 2mbit`` makes one real agent behave as if its link carried 2
Mbit/s in each direction, so several agents on one machine can be made heterogeneous for
tests and benchmarks without ``tc`` or root. It is not a network emulator: it delays this
process's own MQTT traffic with real sleeps (the broker and the TCP socket still run at
loopback speed), which is what the agent's budget planner measures and plans against.

:class:`TokenBucket` is the pure decision (no clock read: the caller passes ``now``);
:class:`LinkShaper` is the asyncio shell that sleeps what the bucket says.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)\s*$", re.IGNORECASE)
_UNITS = {"bit": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
# The bucket holds at most this long a burst at the link's rate: small control messages
# (status, a validation result) pass at once, a model or an update pays its size.
BURST_SECONDS = 0.01
MIN_BURST_BYTES = 1500.0  # one Ethernet frame


def parse_rate(text: str) -> float:
    """Bytes per second of a rate written as tc writes it: ``500kbit``, ``2mbit``, ``1gbit``."""
    match = _RATE.match(text)
    if match is None:
        raise ValueError(
            f"link rate {text!r}: expected a number and bit|kbit|mbit|gbit, e.g. 2mbit"
        )
    bits = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not (math.isfinite(bits) and bits > 0):
        raise ValueError(f"link rate {text!r}: must be > 0")
    return bits / 8.0


class TokenBucket:
    """Tokens are bytes, refilled at ``rate`` up to ``burst``; a send may go into debt.

    :meth:`reserve` takes ``nbytes`` now and says how long the caller must wait before the
    bytes count as sent: the debt divided by the rate. Later sends wait behind that debt,
    so back-to-back sends average exactly the rate.
    """

    def __init__(self, rate_bytes_per_s: float, burst_bytes: float | None = None) -> None:
        if not (math.isfinite(rate_bytes_per_s) and rate_bytes_per_s > 0):
            raise ValueError(f"rate must be > 0 bytes/s, got {rate_bytes_per_s}")
        self.rate = float(rate_bytes_per_s)
        self.burst = (
            max(MIN_BURST_BYTES, self.rate * BURST_SECONDS) if burst_bytes is None else burst_bytes
        )
        if not self.burst > 0:
            raise ValueError(f"burst must be > 0 bytes, got {self.burst}")
        self._tokens = self.burst
        self._last: float | None = None

    def reserve(self, nbytes: int, now: float) -> float:
        """Take ``nbytes`` at time ``now``; return the seconds to wait (>= 0)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = max(now, self._last or now)
        self._tokens -= nbytes
        return max(0.0, -self._tokens / self.rate)


class LinkShaper:
    """One bucket per direction; ``await send(n)`` / ``await receive(n)`` sleep as needed."""

    def __init__(
        self,
        rate_bytes_per_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_bytes_per_s
        self._up = TokenBucket(rate_bytes_per_s)
        self._down = TokenBucket(rate_bytes_per_s)
        self._clock = clock

    async def send(self, nbytes: int) -> None:
        await _sleep(self._up.reserve(nbytes, self._clock()))

    async def receive(self, nbytes: int) -> None:
        await _sleep(self._down.reserve(nbytes, self._clock()))


async def _sleep(seconds: float) -> None:
    if seconds > 0.0:
        await asyncio.sleep(seconds)
