"""Chunked transfer of payloads larger than a broker should carry in one packet.

A payload over ``chunk_size`` travels as numbered chunk messages, each one::

    0   4 bytes  magic b"FBC1"
    4   4 bytes  header length H, uint32 little-endian
    8   H bytes  msgpack [transfer, index, count, total_size, sha256(payload)]
    ... the chunk's bytes: payload[index * chunk_size : (index + 1) * chunk_size]

Why chunks: paho copies the unsent rest of a packet on every socket send, so one 100 MB
message moves at half the broker's speed, while 1-10 MB messages stream at full speed and
let the broker store-and-forward them in a pipeline; and brokers cap the packet size
(mosquitto 2.1 defaults to 2 MB). Updates are chunked on their own topic (QoS 1 keeps a
publisher's order on a topic); a retained model is chunked onto ``.../model/{index}``
topics, all retained, so a late subscriber gets every chunk.

:class:`Reassembler` puts chunks back together with bounded memory (caps on the bytes
it really holds, per sender and in total), a timeout for transfers that stop half way, tolerance of QoS 1
redeliveries, and a SHA-256 check of the whole payload before it is handed on.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgpack
import numpy as np

from fedbus.protocol.errors import InvalidMessage

MAGIC = b"FBC1"
_PREFIX = struct.Struct("<4sI")
DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
_MAX_HEADER = 256


def is_chunk(payload: bytes | bytearray | memoryview) -> bool:
    return bytes(payload[:4]) == MAGIC


def split(
    payload: bytes | bytearray,
    transfer: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    digest: bytes | None = None,
) -> Iterator[bytearray]:
    """Yield the chunk messages of ``payload`` (one copy of it, chunk by chunk).

    ``digest`` is the payload's SHA-256 when the caller already computed it (off the
    event loop); otherwise it is computed here.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    view = memoryview(payload)
    total = len(view)
    count = max(1, -(-total // chunk_size))
    digest = digest if digest is not None else hashlib.sha256(view).digest()
    for index in range(count):
        header = msgpack.packb([transfer, index, count, total, digest], use_bin_type=True)
        body = view[index * chunk_size : (index + 1) * chunk_size]
        out = bytearray(_PREFIX.size + len(header) + len(body))
        _PREFIX.pack_into(out, 0, MAGIC, len(header))
        out[_PREFIX.size : _PREFIX.size + len(header)] = header
        out[_PREFIX.size + len(header) :] = body
        yield out


@dataclass(frozen=True)
class Chunk:
    transfer: str
    index: int
    count: int
    total: int
    digest: bytes
    body: memoryview


def parse(payload: bytes | bytearray | memoryview) -> Chunk:
    view = memoryview(payload)
    if len(view) < _PREFIX.size:
        raise InvalidMessage("malformed", "chunk shorter than its prefix")
    magic, header_len = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC or header_len > _MAX_HEADER or _PREFIX.size + header_len > len(view):
        raise InvalidMessage("malformed", "bad chunk prefix")
    try:
        header = msgpack.unpackb(view[_PREFIX.size : _PREFIX.size + header_len], raw=False)
        transfer, index, count, total, digest = header
    except Exception as exc:  # garbage raises several msgpack and unpacking errors
        raise InvalidMessage("malformed", f"bad chunk header: {exc}") from exc
    if not (
        isinstance(transfer, str)
        and 0 < len(transfer) <= 64
        and all(isinstance(v, int) for v in (index, count, total))
        and 0 <= index < count
        and total >= 0
        and isinstance(digest, bytes)
        and len(digest) == 32
    ):
        raise InvalidMessage("malformed", "chunk header fields out of range")
    return Chunk(transfer, index, count, total, digest, view[_PREFIX.size + header_len :])


@dataclass
class _Transfer:
    count: int
    total: int
    digest: bytes
    chunk_size: int
    started: float
    # Chunk bodies by index: views of the received messages, not copies (see offer_unverified).
    parts: dict[int, memoryview] = field(default_factory=dict)
    held: int = 0  # bytes of the bodies in parts


@dataclass(frozen=True)
class Completed:
    """Every chunk of a payload, still to be joined and checked with :func:`verify` (off the
    event loop: both are passes over the whole payload)."""

    parts: tuple[memoryview, ...]  # the chunk bodies in order
    total: int
    digest: bytes


def verify(done: Completed) -> memoryview:
    """The joined payload if its SHA-256 matches, else InvalidMessage('integrity').

    Meant for a worker thread: the copies are numpy's and hashlib hashes large buffers
    without the GIL, so the event loop keeps running meanwhile.
    """
    sha = hashlib.sha256()
    if len(done.parts) == 1:
        payload = done.parts[0]
        sha.update(payload)
    else:
        # Uninitialised memory (no zero-fill of 44 MB first; large allocations get huge pages).
        buffer = np.empty(done.total, dtype=np.uint8)
        start = 0
        for part in done.parts:
            buffer[start : start + len(part)] = np.frombuffer(part, dtype=np.uint8)
            sha.update(part)
            start += len(part)
        payload = memoryview(buffer).cast("B")  # type: ignore[arg-type]  # numpy: see codec.py
    if sha.digest() != done.digest:
        raise InvalidMessage("integrity", "reassembled payload fails its SHA-256 check")
    return payload


class Reassembler:
    """Collects chunks per (sender key, transfer) and returns each complete payload once.

    Memory is capped on the bytes actually held, never on what a transfer announces (a
    sender announcing ``total=1`` and sending 4 MB bodies must not get past the cap):

    - a transfer holds at most its announced ``total`` (itself at most ``max_bytes``);
    - a sender (key) holds at most ``max_sender_bytes`` over at most
      ``max_sender_transfers`` unfinished transfers;
    - everyone together holds at most ``max_pending_bytes`` in ``max_transfers``.

    A chunk that would step over a cap is refused as ``oversized`` and its transfer is
    dropped (what it held is freed). Unfinished transfers older than ``timeout`` are
    dropped by :meth:`expire`, which the owner calls on a timer (and which runs whenever
    a new transfer starts): a transfer that stops half way is freed without waiting for
    another to arrive. The same class reassembles updates on the coordinator and models
    on the agents.
    """

    def __init__(
        self,
        *,
        max_bytes: int,
        max_pending_bytes: int,
        timeout: float,
        max_sender_bytes: int | None = None,
        max_sender_transfers: int = 4,
        max_transfers: int = 4096,
        max_remembered: int = 65536,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_pending_bytes = max_pending_bytes
        self.max_sender_bytes = max_sender_bytes if max_sender_bytes is not None else 2 * max_bytes
        self.max_sender_transfers = max_sender_transfers
        self.max_transfers = max_transfers
        self.max_remembered = max_remembered
        self.timeout = timeout
        self._transfers: dict[tuple[str, str], _Transfer] = {}
        self._done: dict[tuple[str, str], float] = {}
        self._held = 0
        self._held_by: dict[str, int] = {}
        self._transfers_by: dict[str, int] = {}

    @property
    def pending_bytes(self) -> int:
        """Bytes of chunk bodies held for unfinished transfers."""
        return self._held

    def held_by(self, key: str) -> int:
        return self._held_by.get(key, 0)

    def offer(
        self, key: str, payload: bytes | bytearray | memoryview, now: float
    ) -> bytearray | None:
        """Add one chunk; the whole (verified) payload when it completes, else None.

        Raises InvalidMessage (``oversized``, ``malformed``, ``integrity``) for a chunk that
        cannot belong to a valid transfer; its transfer is dropped.
        """
        done = self.offer_unverified(key, payload, now)
        return None if done is None else bytearray(verify(done))

    def offer_unverified(
        self, key: str, payload: bytes | bytearray | memoryview, now: float
    ) -> Completed | None:
        """As :meth:`offer`, but joining and the integrity check are the caller's (:func:`verify`).

        Only bookkeeping: the chunk's body is kept as a view of ``payload``, not copied, so
        an event loop that calls this pays no copy per chunk (a 4 MB copy into fresh memory
        took 3-12 ms of the loop on the 2-core machine, measured in bench/ingest.py); the one
        join into a whole payload happens in :func:`verify`. The caller must not change
        ``payload`` afterwards (received messages never are; a changed one fails the
        SHA-256 check).
        """
        chunk = parse(payload)
        ident = (key, chunk.transfer)
        if ident in self._done:
            return None  # a QoS 1 redelivery of a finished transfer
        body = len(chunk.body)
        if chunk.total > self.max_bytes:
            raise InvalidMessage(
                "oversized", f"chunked payload of {chunk.total} bytes exceeds {self.max_bytes}"
            )
        if chunk.count > max(1, chunk.total) or body > chunk.total:
            # Every chunk but an empty payload's only one carries at least one byte.
            self._drop(ident)
            raise InvalidMessage(
                "malformed",
                f"chunk {chunk.index} of {chunk.count} ({body} bytes) cannot belong to "
                f"a payload of {chunk.total} bytes",
            )
        transfer = self._transfers.get(ident)
        if transfer is None:
            self.expire(now)
            self._admit_new(key)
            chunk_size = body if chunk.index < chunk.count - 1 else 0
            transfer = _Transfer(chunk.count, chunk.total, chunk.digest, chunk_size, now)
            self._transfers[ident] = transfer
            self._transfers_by[key] = self._transfers_by.get(key, 0) + 1
        if (chunk.count, chunk.total, chunk.digest) != (
            transfer.count,
            transfer.total,
            transfer.digest,
        ):
            self._drop(ident)
            raise InvalidMessage("malformed", f"chunk {chunk.index} disagrees with its transfer")
        if chunk.index in transfer.parts:
            return None
        if transfer.chunk_size == 0 and chunk.index < chunk.count - 1:
            transfer.chunk_size = body
        self._check_layout(ident, transfer, chunk.index, body)
        self._hold(ident, key, transfer, body)
        transfer.parts[chunk.index] = chunk.body
        if len(transfer.parts) < transfer.count:
            return None
        self._drop(ident)
        parts = tuple(transfer.parts[i] for i in range(transfer.count))
        if sum(len(p) for p in parts) != transfer.total:
            # Only possible when the last chunk came before any other fixed the chunk size.
            raise InvalidMessage("malformed", "chunk sizes do not add up to the announced total")
        self._remember(ident, now)
        return Completed(parts, transfer.total, transfer.digest)

    def _admit_new(self, key: str) -> None:
        if self._transfers_by.get(key, 0) >= self.max_sender_transfers:
            raise InvalidMessage(
                "oversized", f"{self.max_sender_transfers} unfinished transfers from this sender"
            )
        if len(self._transfers) >= self.max_transfers:
            raise InvalidMessage("oversized", "too many unfinished chunked transfers")

    def _check_layout(
        self, ident: tuple[str, str], transfer: _Transfer, index: int, body: int
    ) -> None:
        """Once the chunk size is known, the count and each chunk's length follow from it."""
        size = transfer.chunk_size
        if not size:
            return
        last = transfer.count - 1
        expected = size if index < last else transfer.total - last * size
        if transfer.count != max(1, -(-transfer.total // size)) or body != expected:
            self._drop(ident)
            raise InvalidMessage(
                "malformed", f"chunk {index} has {body} bytes, expected {expected}"
            )

    def _hold(self, ident: tuple[str, str], key: str, transfer: _Transfer, body: int) -> None:
        if transfer.held + body > transfer.total:
            self._drop(ident)
            raise InvalidMessage("malformed", "chunks hold more than the announced total")
        if self._held_by.get(key, 0) + body > self.max_sender_bytes:
            self._drop(ident)
            raise InvalidMessage(
                "oversized", f"sender holds more than {self.max_sender_bytes} bytes of chunks"
            )
        if self._held + body > self.max_pending_bytes:
            self._drop(ident)
            raise InvalidMessage("oversized", "too many unfinished chunked transfers in memory")
        transfer.held += body
        self._held += body
        self._held_by[key] = self._held_by.get(key, 0) + body

    def _drop(self, ident: tuple[str, str]) -> None:
        """Forget an unfinished transfer and release what it held."""
        transfer = self._transfers.pop(ident, None)
        if transfer is None:
            return
        key, held = ident[0], transfer.held
        self._held -= held
        left = self._held_by.get(key, 0) - held
        count = self._transfers_by.get(key, 0) - 1
        if left > 0:
            self._held_by[key] = left
        else:
            self._held_by.pop(key, None)
        if count > 0:
            self._transfers_by[key] = count
        else:
            self._transfers_by.pop(key, None)

    def _remember(self, ident: tuple[str, str], now: float) -> None:
        self._done[ident] = now
        while len(self._done) > self.max_remembered:  # oldest first (insertion order)
            del self._done[next(iter(self._done))]

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop transfers older than the timeout; return which."""
        stale = [k for k, t in self._transfers.items() if now - t.started > self.timeout]
        for k in stale:
            self._drop(k)
        for k in [k for k, t in self._done.items() if now - t > 10 * self.timeout]:
            del self._done[k]
        return stale
