"""The tensor envelope: a small msgpack header, then raw little-endian tensor bytes.

Layout of one envelope::

    0      4 bytes   magic b"FBT1"
    4      4 bytes   header length H, uint32 little-endian
    8      H bytes   msgpack map {"m": meta, "t": [entry, ...]}
    ...    padding   so the data section starts at a multiple of 64
    D      tensor bytes, each tensor starting at a multiple of 64 from D

A dense entry is ``[name, dtype, shape, offset, nbytes]``; a sparse entry (a flat vector of
``size`` elements of which only ``indices`` are non-zero) is ``[name, dtype, [size], offset,
nbytes, index_dtype, index_offset, index_nbytes]``. Offsets are relative to D. Dtypes are
numpy little-endian strings (``<f4``, ``<f2``, ``<f8``, ``<i8``, ``<i4``, ``|u1``, ``|i1``,
``|b1``).

Why this shape: msgpack with one ``bin`` per tensor makes the decoder copy every tensor
out of the message; here decoding is ``numpy.frombuffer`` on the received buffer, so it
copies nothing and costs the same for 1 KB and 100 MB (measured in bench/codec.py).
Encoding is one allocation and one memcpy per tensor. The 64-byte alignment lets the
decoded views be used directly by BLAS and SIMD loops.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from fedbus.protocol.errors import InvalidMessage

MAGIC = b"FBT1"
ALIGN = 64
_PREFIX = struct.Struct("<4sI")
MAX_HEADER_BYTES = 1 << 20
ALLOWED_DTYPES = frozenset({"<f4", "<f2", "<f8", "<i8", "<i4", "|u1", "|i1", "|b1"})
ALLOWED_INDEX_DTYPES = frozenset({"<i4", "<i8"})


@dataclass(frozen=True)
class SparseTensor:
    """A flat vector of ``size`` elements, zero except at ``indices``."""

    size: int
    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.ndim != 1 or self.values.ndim != 1:
            raise ValueError("sparse indices and values must be 1-d")
        if self.indices.shape != self.values.shape:
            raise ValueError("sparse indices and values must have the same length")


Tensor = np.ndarray | SparseTensor


@dataclass(frozen=True)
class Envelope:
    """A decoded message: its metadata map and its tensors (views into the payload)."""

    meta: dict[str, Any]
    tensors: dict[str, Tensor]


def _le_dtype(array: np.ndarray) -> np.dtype[Any]:
    dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    if dtype.str not in ALLOWED_DTYPES:
        raise ValueError(f"dtype {array.dtype} is not allowed on the wire")
    return dtype


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def encode(
    meta: Mapping[str, Any],
    tensors: Mapping[str, Tensor] | None = None,
    *,
    into: bytearray | None = None,
) -> bytearray:
    """Encode metadata and named tensors into one envelope.

    ``into`` is a buffer to reuse (resized in place to the exact length): a sender that
    encodes a same-sized model every round then writes into memory that is already
    mapped, instead of paying a page fault per 4 KB of a fresh buffer (about 4x slower
    than the copy itself, measured in bench/codec.py). The caller must not reuse it
    before the previous publish has completed.
    """
    entries: list[list[Any]] = []
    sources: list[tuple[int, np.ndarray]] = []
    offset = 0
    for name, tensor in (tensors or {}).items():
        if isinstance(tensor, SparseTensor):
            values = np.ascontiguousarray(tensor.values)
            indices = np.ascontiguousarray(tensor.indices)
            vdt, idt = _le_dtype(values), _le_dtype(indices)
            if idt.str not in ALLOWED_INDEX_DTYPES:
                raise ValueError(f"sparse index dtype {idt} is not allowed")
            v_off = offset
            offset = _align(v_off + values.nbytes)
            i_off = offset
            offset = _align(i_off + indices.nbytes)
            entries.append(
                [
                    name,
                    vdt.str,
                    [int(tensor.size)],
                    v_off,
                    values.nbytes,
                    idt.str,
                    i_off,
                    indices.nbytes,
                ]
            )
            sources += [
                (v_off, values.astype(vdt, copy=False)),
                (i_off, indices.astype(idt, copy=False)),
            ]
        else:
            array = np.asarray(tensor)  # not ascontiguousarray: it turns 0-d scalars into 1-d
            if not array.flags.c_contiguous:
                array = np.ascontiguousarray(array)
            dt = _le_dtype(array)
            entries.append([name, dt.str, list(array.shape), offset, array.nbytes])
            sources.append((offset, array.astype(dt, copy=False)))
            offset = _align(offset + array.nbytes)
    header = msgpack.packb({"m": dict(meta), "t": entries}, use_bin_type=True)
    data_start = _align(_PREFIX.size + len(header))
    # No padding after the last tensor: the payload ends where the data ends.
    total = data_start + max((off + a.nbytes for off, a in sources), default=0)
    if into is None:
        out = bytearray(total)
    else:
        out = into
        if len(out) > total:
            del out[total:]
        elif len(out) < total:
            out.extend(bytes(total - len(out)))
        out[_PREFIX.size + len(header) : data_start] = bytes(
            data_start - _PREFIX.size - len(header)
        )
    _PREFIX.pack_into(out, 0, MAGIC, len(header))
    out[_PREFIX.size : _PREFIX.size + len(header)] = header
    view = memoryview(out)
    written = data_start
    for off, array in sources:
        start = data_start + off
        if into is not None and start > written:
            view[written:start] = bytes(start - written)  # a reused buffer's old bytes
        if array.nbytes:
            # ndarray has the buffer protocol; numpy declares __buffer__ only for 3.12+.
            view[start : start + array.nbytes] = array.reshape(-1).view(np.uint8)  # type: ignore[call-overload]
        written = start + array.nbytes
    return out


_DTYPES = {name: np.dtype(name) for name in ALLOWED_DTYPES}


def _view(raw: np.ndarray, dtype: str, count_bytes: int, start: int, what: str) -> np.ndarray:
    """A typed view of ``count_bytes`` at ``start`` of the payload's byte array (no copy)."""
    dt = _DTYPES[dtype]
    if count_bytes % dt.itemsize:
        raise InvalidMessage(
            "malformed", f"tensor {what!r}: {count_bytes} bytes is not a whole number of {dtype}"
        )
    if start < 0 or start + count_bytes > raw.shape[0]:
        raise InvalidMessage("malformed", f"tensor {what!r}: data runs past the end of the payload")
    return raw[start : start + count_bytes].view(dt)


def decode(payload: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> Envelope:
    """Decode an envelope without copying tensor data; raise InvalidMessage on any defect."""
    buf = memoryview(payload)
    if max_bytes is not None and len(buf) > max_bytes:
        raise InvalidMessage("oversized", f"{len(buf)} bytes exceeds the limit of {max_bytes}")
    if len(buf) < _PREFIX.size:
        raise InvalidMessage("malformed", "payload shorter than the envelope prefix")
    magic, header_len = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise InvalidMessage("malformed", "not a fedbus tensor envelope (bad magic)")
    if header_len > MAX_HEADER_BYTES or _PREFIX.size + header_len > len(buf):
        raise InvalidMessage("malformed", "header length runs past the payload")
    try:
        header = msgpack.unpackb(
            buf[_PREFIX.size : _PREFIX.size + header_len], raw=False, strict_map_key=True
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InvalidMessage("malformed", f"header is not valid msgpack: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("m"), dict):
        raise InvalidMessage("malformed", "header must be a map with a metadata map 'm'")
    entries = header.get("t", [])
    if not isinstance(entries, list):
        raise InvalidMessage("malformed", "header 't' must be a list")
    data_start = _align(_PREFIX.size + header_len)
    tensors: dict[str, Tensor] = {}
    # One byte array over the payload; every tensor is a slice-and-view of it (no copy,
    # and cheaper per tensor than a frombuffer call each).
    raw = np.frombuffer(buf, dtype=np.uint8)
    for entry in entries:
        tensors_name, tensor = _decode_entry(raw, data_start, entry)
        if tensors_name in tensors:
            raise InvalidMessage("malformed", f"tensor {tensors_name!r} appears twice")
        tensors[tensors_name] = tensor
    return Envelope(meta=header["m"], tensors=tensors)


def _decode_entry(raw: np.ndarray, data_start: int, entry: Any) -> tuple[str, Tensor]:
    if not isinstance(entry, list) or len(entry) not in (5, 8):
        raise InvalidMessage("malformed", "tensor entry must be a list of 5 or 8 fields")
    name, dtype, shape, offset, nbytes = entry[:5]
    if not isinstance(name, str) or not name:
        raise InvalidMessage("malformed", "tensor name must be a non-empty string")
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise InvalidMessage("malformed", f"tensor {name!r}: dtype {dtype!r} is not allowed")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and d >= 0 for d in shape)
        or not isinstance(offset, int)
        or not isinstance(nbytes, int)
        or nbytes < 0
    ):
        raise InvalidMessage("malformed", f"tensor {name!r}: bad shape, offset or size")
    values = _view(raw, dtype, nbytes, data_start + offset, name)
    if len(entry) == 5:
        expected = math.prod(shape)
        if values.size != expected:
            raise InvalidMessage(
                "malformed", f"tensor {name!r}: {values.size} elements for shape {shape}"
            )
        return name, values.reshape(shape)
    index_dtype, index_offset, index_nbytes = entry[5:]
    if (
        not isinstance(index_dtype, str)
        or index_dtype not in ALLOWED_INDEX_DTYPES
        or len(shape) != 1
    ):
        raise InvalidMessage("malformed", f"sparse tensor {name!r}: bad index dtype or size")
    if not isinstance(index_offset, int) or not isinstance(index_nbytes, int) or index_nbytes < 0:
        raise InvalidMessage("malformed", f"sparse tensor {name!r}: bad index offset or size")
    indices = _view(raw, index_dtype, index_nbytes, data_start + index_offset, name)
    if indices.size != values.size:
        raise InvalidMessage(
            "malformed", f"sparse tensor {name!r}: {indices.size} indices, {values.size} values"
        )
    return name, SparseTensor(size=shape[0], indices=indices, values=values)
