"""Plain-value encodings for checkpoints: numpy arrays and RNG state as JSON/msgpack-safe values.

A selector's ``state()`` must survive both JSON and msgpack. msgpack cannot hold integers
wider than 64 bits, and numpy's PCG64 state is two 128-bit integers, so the bit generator
state travels as one JSON string. Arrays travel as base64 of their little-endian bytes with
dtype and shape: exact (no float formatting round trip), compact, and fast at 100k clients.
"""

from __future__ import annotations

import base64
import json
from typing import cast

import numpy as np

PlainArray = dict[str, object]


def pack_array(array: np.ndarray) -> PlainArray:
    """Encode ``array`` exactly as ``{"dtype", "shape", "b64"}`` (little-endian)."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return {
        "dtype": little.dtype.str,
        "shape": list(little.shape),
        "b64": base64.b64encode(little.tobytes()).decode("ascii"),
    }


def unpack_array(plain: PlainArray) -> np.ndarray:
    """Inverse of :func:`pack_array`; returns a fresh writable native-endian array."""
    dtype = np.dtype(cast(str, plain["dtype"]))
    shape = tuple(int(s) for s in cast(list[int], plain["shape"]))
    raw = base64.b64decode(cast(str, plain["b64"]))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def pack_rng(rng: np.random.Generator) -> str:
    """The generator's full bit-generator state as a JSON string (big ints kept exact)."""
    return json.dumps(rng.bit_generator.state, sort_keys=True)


def unpack_rng(plain: str) -> np.random.Generator:
    """A generator in exactly the state :func:`pack_rng` saw."""
    state = json.loads(plain)
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
