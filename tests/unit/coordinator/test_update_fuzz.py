"""Fuzzing update admission: whatever bytes arrive, decode + write either admit or reject.

``decode_update`` followed by ``write_update`` (what the job runner does with every payload
on an update topic, the header checks aside) may only ever raise ``Rejected`` with one of
the slugs of docs/protocol.md §8. Any other exception escapes the runner's receive loop
and ends the job, so a single hostile message would stop the coordinator. And when a
payload is admitted, the row it wrote holds finite values only.

The payloads are arbitrary bytes, valid updates with bytes flipped, cut or appended, and
envelopes whose msgpack header is well formed but whose meta and tensor entries hold
arbitrary msgpack values (the decoder sees exactly what a hostile client can send).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from coordinator.update_check import Rejected, decode_update, write_update
from fedbus.protocol.codec import ALLOWED_DTYPES, SparseTensor, encode
from fedbus.protocol.params import ParamLayout

LAYOUT = ParamLayout.from_tensors({"w": np.zeros((3, 4), np.float32), "b": np.zeros(4, np.float32)})
P = LAYOUT.num_params  # 16
MAX_BYTES = 1 << 16
# What decoding and writing may reject with (the header checks add stale, forged, ...).
REASONS = {"oversized", "malformed", "schema", "bad_tensors", "non_finite"}
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)

META: dict[str, Any] = {
    "schema_version": 1,
    "job": "j",
    "round": 2,
    "agent": "a1",
    "task_id": "0123456789abcdef",
    "base_version": 1,
    "num_examples": 10,
    "encoding": "dense",
}


def admit(payload: bytes | bytearray) -> str:
    """'ok', or the reason it was rejected; any other exception fails the test."""
    row = np.full(P, np.float32(7.0))
    try:
        meta, tensors = decode_update(payload, MAX_BYTES)
        if meta.success:  # the runner records a failure without looking at tensors
            with np.errstate(over="ignore", invalid="ignore"):  # NaN / Inf sums: expected
                write_update(meta, tensors, LAYOUT, row)
    except Rejected as exc:
        assert exc.reason in REASONS, exc
        return exc.reason
    if meta.success:
        assert np.isfinite(row).all()
    return "ok"


def envelope(header: Any, data: bytes = b"") -> bytes:
    """An FBT1 envelope with this msgpack header and data section, laid out as §4 says."""
    packed = msgpack.packb(header, use_bin_type=True)
    start = -(-(8 + len(packed)) // 64) * 64
    return b"FBT1" + struct.pack("<I", len(packed)) + packed + bytes(start - 8 - len(packed)) + data


def dense_update(values: np.ndarray, **meta: Any) -> bytearray:
    flat = values.reshape(-1)
    return encode({**META, **meta}, LAYOUT.unflatten(flat))


# -- strategies --------------------------------------------------------------------------

# Every value msgpack can carry, nested: what a hostile header may hold anywhere.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
small_ints = st.integers(min_value=-70, max_value=200)
dtypes = st.sampled_from(sorted(ALLOWED_DTYPES)) | st.sampled_from(["<f4", "<f2"]) | anything
names = st.sampled_from(["w", "b", "delta", "", "x"]) | anything
shapes = (
    st.lists(small_ints, max_size=3)
    | st.sampled_from([[3, 4], [4], [P], [2**40, 2**40]])
    | anything
)
# Entries near the real ones (names, dtypes, shapes, offsets a payload can hold), any field
# of which may be replaced by an arbitrary value, and entries of any length.
dense_entry = st.tuples(names, dtypes, shapes, small_ints, small_ints).map(list)
sparse_entry = st.tuples(
    names, dtypes, shapes, small_ints, small_ints, dtypes, small_ints, small_ints
).map(list)
entries = st.lists(dense_entry | sparse_entry | anything, max_size=4)
metas = (
    st.fixed_dictionaries(
        {},
        optional={
            k: st.just(v) | anything
            for k, v in {**META, "success": True, "timings": {"t_dl": 0.5}}.items()
        },
    )
    | anything
)


# -- properties --------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=600))
def test_arbitrary_bytes_are_rejected(data: bytes) -> None:
    assert admit(data) in REASONS


@FUZZ
@given(
    st.sampled_from(["dense", "sparse", "dense16"]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(min_value=0, max_value=10_000) | st.none(),
    st.binary(max_size=70),
)
def test_corrupted_real_updates_are_admitted_or_rejected(
    kind: str, flips: list[tuple[int, int]], cut: int | None, tail: bytes
) -> None:
    values = np.linspace(-1.0, 1.0, P, dtype=np.float32)
    if kind == "sparse":
        sparse = SparseTensor(P, np.array([1, 5, 15], np.int32), values[:3].copy())
        payload = encode({**META, "encoding": "sparse"}, {"delta": sparse})
    else:
        payload = dense_update(values.astype(np.float16) if kind == "dense16" else values)
    for index, byte in flips:
        payload[index % len(payload)] = byte
    if cut is not None:
        del payload[cut % len(payload) :]
    admit(bytes(payload) + tail)


@FUZZ
@given(metas, entries, st.binary(max_size=256))
@example(META, [["w", ["<f4"], [3, 4], 0, 48]], bytes(64))  # an unhashable dtype
@example(META, [["delta", "<f4", [P], 0, 4, {"i": 4}, 64, 4]], bytes(128))  # ... index dtype
@example(META, [["w", "<f4", [3, 4], 0, 48], ["b", "<f4", [4], 0, 16]], bytes(48))  # admitted
def test_arbitrary_meta_and_tensor_entries_are_admitted_or_rejected(
    meta: Any, tensor_entries: Any, data: bytes
) -> None:
    admit(envelope({"m": meta, "t": tensor_entries}, data))


@FUZZ
@given(anything, st.binary(max_size=64))
def test_any_header_value_is_rejected(header: Any, data: bytes) -> None:
    assert admit(envelope(header, data)) in REASONS


@FUZZ
@given(
    st.lists(st.floats(width=32, allow_nan=True, allow_infinity=True), min_size=P, max_size=P),
    st.sampled_from([np.float32, np.float16]),
)
def test_admitted_dense_values_are_written_exactly_and_never_non_finite(
    values: list[float], dtype: type[np.floating[Any]]
) -> None:
    with np.errstate(over="ignore", invalid="ignore"):
        array = np.array(values, np.float32).astype(dtype)
        wide = array.astype(np.float32)
        finite = bool(np.isfinite(wide).all() and np.isfinite(wide.sum(dtype=np.float32)))
    row = np.zeros(P, np.float32)
    meta, tensors = decode_update(dense_update(array), MAX_BYTES)
    assert admit(dense_update(array)) == ("ok" if finite else "non_finite")
    if finite:
        write_update(meta, tensors, LAYOUT, row)
        np.testing.assert_array_equal(row, wide)


@FUZZ
@given(
    st.lists(st.integers(-(2**40), 2**40), max_size=6),
    st.sampled_from([np.int32, np.int64]),
    st.integers(min_value=-3, max_value=3),
)
def test_sparse_indices_outside_the_model_are_rejected(
    indices: list[int], index_dtype: type[np.integer[Any]], size_offset: int
) -> None:
    idx = np.array(indices, np.int64)
    if index_dtype is np.int32:
        idx = idx.clip(-(2**31), 2**31 - 1)
    sparse = SparseTensor(P + size_offset, idx.astype(index_dtype), np.ones(idx.size, np.float32))
    reason = admit(encode({**META, "encoding": "sparse"}, {"delta": sparse}))
    in_range = bool(idx.size == 0 or (idx.min() >= 0 and idx.max() < P))
    increasing = bool(np.all(idx[1:] > idx[:-1]))
    assert (reason == "ok") == (size_offset == 0 and in_range and increasing)
