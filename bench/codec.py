"""Encode and decode throughput of the tensor envelope for an 11M-parameter float32 model.

Prints MB/s for: a plain memory copy of the same bytes (the ceiling), msgpack with one
``bin`` per tensor (the obvious alternative, which copies every tensor on decode), and the
fedbus envelope (fresh buffer, and reusing a buffer as a sender does every round).
Targets (issue 2): decode >= 10x faster than per-tensor bin, encode >= 2 GB/s.

    python bench/codec.py [--params 11_000_000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import msgpack
import numpy as np

from fedbus.protocol.codec import decode, encode


def model_tensors(num_params: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A ResNet-ish mix: a few large tensors and many small ones, 11M parameters in all."""
    rng = np.random.default_rng(seed)
    sizes = [num_params // 4, num_params // 4, num_params // 8, num_params // 8]
    sizes += [max(1, (num_params - sum(sizes)) // 96)] * 96
    sizes[-1] += num_params - sum(sizes)
    return {
        f"layer{i}.weight": rng.standard_normal(n).astype(np.float32) for i, n in enumerate(sizes)
    }


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", type=int, default=11_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    tensors = model_tensors(args.params)
    nbytes = sum(t.nbytes for t in tensors.values())
    mb = nbytes / 1e6
    flat = np.concatenate(list(tensors.values()))
    dst = np.empty_like(flat)

    def msgpack_encode() -> bytes:
        return msgpack.packb({k: [str(v.dtype), v.shape, v.tobytes()] for k, v in tensors.items()})

    packed = msgpack_encode()

    def msgpack_decode() -> dict[str, np.ndarray]:
        raw = msgpack.unpackb(packed)
        # The bytes are already copied out of the message by unpackb; frombuffer wraps them.
        return {k: np.frombuffer(b, dtype=d).reshape(s) for k, (d, s, b) in raw.items()}

    reuse = bytearray()
    envelope = encode({"version": 1}, tensors)

    def fresh_encode() -> bytearray:
        return encode({"version": 1}, tensors)

    def reused_encode() -> bytearray:
        return encode({"version": 1}, tensors, into=reuse)

    def envelope_decode() -> object:
        return decode(envelope)

    rows = [
        (
            "memory copy (np.copyto, same bytes)",
            median_seconds(lambda: np.copyto(dst, flat), args.repeat),
        ),
        ("msgpack per-tensor bin: encode", median_seconds(msgpack_encode, args.repeat)),
        ("msgpack per-tensor bin: decode", median_seconds(msgpack_decode, args.repeat)),
        ("fedbus envelope: encode (fresh buffer)", median_seconds(fresh_encode, args.repeat)),
        ("fedbus envelope: encode (reused buffer)", median_seconds(reused_encode, args.repeat)),
        ("fedbus envelope: decode (zero copy)", median_seconds(envelope_decode, args.repeat)),
    ]
    print(f"model: {args.params:,} float32 parameters in {len(tensors)} tensors = {mb:.1f} MB")
    print(f"{'what':44s} {'ms':>9s} {'MB/s':>12s}")
    for name, seconds in rows:
        print(f"{name:44s} {seconds * 1e3:9.3f} {mb / seconds:12,.0f}")
    times = dict(rows)
    speedup = times["msgpack per-tensor bin: decode"] / times["fedbus envelope: decode (zero copy)"]
    enc_fresh = mb / times["fedbus envelope: encode (fresh buffer)"] / 1e3
    enc_reuse = mb / times["fedbus envelope: encode (reused buffer)"] / 1e3
    print(f"decode speed-up over per-tensor bin: {speedup:,.0f}x (target >= 10x)")
    print(
        f"encode: {enc_reuse:.1f} GB/s reused buffer, {enc_fresh:.1f} GB/s fresh buffer (target >= 2 GB/s)"
    )


if __name__ == "__main__":
    main()
