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

:class:`Reassembler` puts chunks back together with bounded memory (a cap on the bytes
of unfinished transfers), a timeout for transfers that stop half way, tolerance of QoS 1
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
    """Collects chunks per (sender key, transfer) and returns each complete payload once."""

    def __init__(self, *, max_bytes: int, max_pending_bytes: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.max_pending_bytes = max_pending_bytes
        self.timeout = timeout
        self._transfers: dict[tuple[str, str], _Transfer] = {}
        self._done: dict[tuple[str, str], float] = {}

    @property
    def pending_bytes(self) -> int:
        return sum(t.total for t in self._transfers.values())

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
        SHA-256 check). Bounded memory as before: the kept bodies add up to at most the
        announced totals, which the caps are checked against.
        """
        chunk = parse(payload)
        ident = (key, chunk.transfer)
        if ident in self._done:
            return None  # a QoS 1 redelivery of a finished transfer
        if chunk.total > self.max_bytes:
            raise InvalidMessage(
                "oversized", f"chunked payload of {chunk.total} bytes exceeds {self.max_bytes}"
            )
        transfer = self._transfers.get(ident)
        if transfer is None:
            self.expire(now)
            if self.pending_bytes + chunk.total > self.max_pending_bytes:
                raise InvalidMessage("oversized", "too many unfinished chunked transfers in memory")
            chunk_size = len(chunk.body) if chunk.index < chunk.count - 1 else 0
            transfer = _Transfer(chunk.count, chunk.total, chunk.digest, chunk_size, now)
            self._transfers[ident] = transfer
        if (chunk.count, chunk.total, chunk.digest) != (
            transfer.count,
            transfer.total,
            transfer.digest,
        ):
            del self._transfers[ident]
            raise InvalidMessage("malformed", f"chunk {chunk.index} disagrees with its transfer")
        if chunk.index in transfer.parts:
            return None
        if transfer.chunk_size == 0 and chunk.index < chunk.count - 1:
            transfer.chunk_size = len(chunk.body)
        size = transfer.chunk_size or len(chunk.body)
        start = (
            chunk.index * size
            if chunk.index < chunk.count - 1
            else transfer.total - len(chunk.body)
        )
        expected = (
            size if chunk.index < chunk.count - 1 else transfer.total - (chunk.count - 1) * size
        )
        if transfer.chunk_size and (len(chunk.body) != expected or start < 0):
            del self._transfers[ident]
            raise InvalidMessage(
                "malformed", f"chunk {chunk.index} has {len(chunk.body)} bytes, expected {expected}"
            )
        transfer.parts[chunk.index] = chunk.body
        if len(transfer.parts) < transfer.count:
            return None
        del self._transfers[ident]
        parts = tuple(transfer.parts[i] for i in range(transfer.count))
        if sum(len(p) for p in parts) != transfer.total:
            # Only possible when the last chunk came before any other fixed the chunk size.
            raise InvalidMessage("malformed", "chunk sizes do not add up to the announced total")
        self._done[ident] = now
        return Completed(parts, transfer.total, transfer.digest)

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop transfers older than the timeout; return which."""
        stale = [k for k, t in self._transfers.items() if now - t.started > self.timeout]
        for k in stale:
            del self._transfers[k]
        for k in [k for k, t in self._done.items() if now - t > 10 * self.timeout]:
            del self._done[k]
        return stale
