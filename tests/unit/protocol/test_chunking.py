"""Chunked transfer: split and reassemble, in any order, with bounded memory and integrity."""

from __future__ import annotations

import random
import struct

import msgpack
import pytest

from fedbus.protocol.chunking import Reassembler, is_chunk, parse, split, verify
from fedbus.protocol.errors import InvalidMessage

PAYLOAD = bytes(random.Random(0).randbytes(10_000))


def reassembler(**kw: float) -> Reassembler:
    return Reassembler(
        **{"max_bytes": 1 << 20, "max_pending_bytes": 1 << 21, "timeout": 10.0, **kw}
    )  # type: ignore[arg-type]


def test_split_and_reassemble_in_order_and_shuffled() -> None:
    chunks = list(split(PAYLOAD, "t1", chunk_size=3000))
    assert len(chunks) == 4 and all(is_chunk(c) for c in chunks)
    assert [parse(c).index for c in chunks] == [0, 1, 2, 3]
    r = reassembler()
    assert [r.offer("a", c, 0.0) for c in chunks[:-1]] == [None, None, None]
    assert r.offer("a", chunks[-1], 0.0) == PAYLOAD
    shuffled = list(split(PAYLOAD, "t2", chunk_size=3000))
    random.Random(1).shuffle(shuffled)
    results = [reassembler().offer("a", c, 0.0) for c in shuffled]  # fresh: each alone
    assert results == [None] * 4
    r2 = reassembler()
    out = [r2.offer("a", c, 0.0) for c in shuffled]
    assert out[-1] == PAYLOAD and out[:-1] == [None] * 3


def test_redelivered_chunks_and_finished_transfers_are_ignored() -> None:
    chunks = list(split(PAYLOAD, "t", chunk_size=4096))
    r = reassembler()
    assert r.offer("a", chunks[0], 0.0) is None
    assert r.offer("a", chunks[0], 0.0) is None  # QoS 1 duplicate
    for c in chunks[1:-1]:
        r.offer("a", c, 0.0)
    assert r.offer("a", chunks[-1], 0.0) == PAYLOAD
    assert r.offer("a", chunks[-1], 0.0) is None  # the transfer is done: once only


def test_senders_are_kept_apart() -> None:
    a = list(split(PAYLOAD, "same", chunk_size=6000))
    b = list(split(PAYLOAD[::-1], "same", chunk_size=6000))
    r = reassembler()
    r.offer("a", a[0], 0.0)
    r.offer("b", b[0], 0.0)
    assert r.offer("b", b[1], 0.0) == PAYLOAD[::-1]
    assert r.offer("a", a[1], 0.0) == PAYLOAD


def test_tampered_chunk_fails_integrity() -> None:
    chunks = list(split(PAYLOAD, "t", chunk_size=6000))
    bad = bytearray(chunks[1])
    bad[-1] ^= 0xFF
    r = reassembler()
    r.offer("a", chunks[0], 0.0)
    with pytest.raises(InvalidMessage) as info:
        r.offer("a", bad, 0.0)
    assert info.value.reason == "integrity"


def test_memory_is_capped_on_bytes_held_and_stale_transfers_expire() -> None:
    r = reassembler(max_bytes=20_000, max_pending_bytes=2_500, timeout=5.0)
    big = bytes(30_000)
    with pytest.raises(InvalidMessage) as info:
        r.offer("a", next(split(big, "x", chunk_size=1000)), 0.0)
    assert info.value.reason == "oversized"
    r.offer("a", next(split(PAYLOAD, "p1", chunk_size=1000)), 0.0)
    r.offer("b", next(split(PAYLOAD, "p2", chunk_size=1000)), 0.0)
    assert r.pending_bytes == 2_000  # what is held, not the 20,000 announced
    with pytest.raises(InvalidMessage, match="unfinished"):
        r.offer("c", list(split(PAYLOAD, "p3", chunk_size=1000))[1], 1.0)
    assert r.pending_bytes == 2_000
    assert r.offer("c", next(split(PAYLOAD, "p3", chunk_size=1000)), 6.0) is None  # others expired
    assert r.pending_bytes == 1_000


def test_expire_alone_frees_a_transfer_that_stopped_half_way() -> None:
    r = reassembler(timeout=5.0)
    r.offer("a", next(split(PAYLOAD, "p", chunk_size=1000)), 0.0)
    assert r.expire(4.0) == [] and r.pending_bytes == 1_000
    assert r.expire(6.0) == [("a", "p")]
    assert r.pending_bytes == 0 and r.held_by("a") == 0


def lying_chunk(transfer: str, index: int, count: int, total: int, body: bytes) -> bytes:
    header = msgpack.packb([transfer, index, count, total, bytes(32)], use_bin_type=True)
    return b"FBC1" + struct.pack("<I", len(header)) + header + body


@pytest.mark.parametrize(
    ("index", "count", "total", "body"),
    [
        (0, 2**31, 1, 4096),  # announces one byte, sends 4 KB (the finding's flood)
        (0, 2, 10, 11),  # one chunk longer than the whole payload
        (5, 2**20, 2**20, 2),  # more chunks than a 1 MB payload of 2-byte chunks can have
    ],
)
def test_a_chunk_that_lies_about_its_transfer_is_refused_and_held_nowhere(
    index: int, count: int, total: int, body: int
) -> None:
    r = reassembler()
    with pytest.raises(InvalidMessage) as info:
        for i in range(index, index + 2):
            r.offer("a", lying_chunk("t", i, count, total, bytes(body)), 0.0)
    assert info.value.reason == "malformed"
    assert r.pending_bytes == 0


def test_one_sender_cannot_take_the_whole_cap() -> None:
    r = reassembler(max_bytes=10_000, max_pending_bytes=1 << 20, max_sender_bytes=2_500)
    for t in ("t1", "t2"):
        r.offer("a", next(split(PAYLOAD, t, chunk_size=1000)), 0.0)
    with pytest.raises(InvalidMessage) as info:
        r.offer("a", next(split(PAYLOAD, "t3", chunk_size=1000)), 0.0)
    assert info.value.reason == "oversized"
    assert r.held_by("a") == 2_000
    r.offer("b", next(split(PAYLOAD, "t1", chunk_size=1000)), 0.0)  # others still get in
    assert r.held_by("b") == 1_000


def test_a_sender_may_keep_only_a_few_transfers_open() -> None:
    r = reassembler(max_sender_transfers=2)
    for t in ("t1", "t2"):
        r.offer("a", next(split(PAYLOAD, t, chunk_size=1000)), 0.0)
    with pytest.raises(InvalidMessage, match="unfinished transfers from this sender"):
        r.offer("a", next(split(PAYLOAD, "t3", chunk_size=1000)), 0.0)


def test_finished_transfers_are_remembered_within_a_bound() -> None:
    r = reassembler(max_remembered=3)
    for i in range(10):
        assert r.offer("a", next(split(b"xy", f"t{i}", chunk_size=10)), 0.0) == b"xy"
    # The three newest are still known (a redelivery is ignored), the oldest forgotten.
    assert r.offer("a", next(split(b"xy", "t9", chunk_size=10)), 0.0) is None
    assert r.offer("a", next(split(b"xy", "t0", chunk_size=10)), 0.0) == b"xy"


@pytest.mark.parametrize(
    "garbage", [b"", b"FBC1", b"FBC1\xff\x00\x00\x00", b"FBC1\x02\x00\x00\x00\x91\x01"]
)
def test_garbage_chunks_are_malformed(garbage: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        reassembler().offer("a", garbage, 0.0)
    assert info.value.reason == "malformed"


def test_small_payload_is_one_chunk_and_empty_works() -> None:
    assert len(list(split(b"abc", "t", chunk_size=10))) == 1
    r = reassembler()
    assert r.offer("a", next(split(b"", "e", chunk_size=10)), 0.0) == b""


def test_reassembly_keeps_views_of_the_chunks_and_joins_in_verify() -> None:
    # The event loop's part is bookkeeping only: each body stays a view of its message.
    chunks = list(split(PAYLOAD, "t", chunk_size=3000))
    r = reassembler()
    done = None
    for c in reversed(chunks):
        done = r.offer_unverified("a", c, 0.0)
    assert done is not None and done.total == len(PAYLOAD)
    assert [part.obj for part in done.parts] == chunks
    assert bytes(verify(done)) == PAYLOAD


def test_a_chunk_changed_after_it_was_offered_fails_integrity() -> None:
    chunks = list(split(PAYLOAD, "t", chunk_size=3000))
    r = reassembler()
    for c in chunks[:-1]:
        r.offer_unverified("a", c, 0.0)
    done = r.offer_unverified("a", chunks[-1], 0.0)
    chunks[0][-1] ^= 0xFF  # a reused receive buffer, say
    with pytest.raises(InvalidMessage) as info:
        verify(done)  # type: ignore[arg-type]
    assert info.value.reason == "integrity"


def test_a_wrongly_sized_last_chunk_that_came_first_is_malformed() -> None:
    chunks = list(split(PAYLOAD, "t", chunk_size=3000))
    last = parse(chunks[-1])
    # Same transfer header fields, a body 7 bytes too long.
    header = chunks[-1][: len(chunks[-1]) - len(last.body)]
    forged = header + bytes(len(last.body) + 7)
    r = reassembler()
    r.offer_unverified("a", forged, 0.0)
    for c in chunks[1:-1]:
        r.offer_unverified("a", c, 0.0)
    with pytest.raises(InvalidMessage) as info:
        r.offer_unverified("a", chunks[0], 0.0)
    assert info.value.reason == "malformed"


def test_one_chunk_payload_verifies_without_a_join() -> None:
    (only,) = split(PAYLOAD, "t", chunk_size=len(PAYLOAD))
    done = reassembler().offer_unverified("a", only, 0.0)
    assert done is not None and bytes(verify(done)) == PAYLOAD
