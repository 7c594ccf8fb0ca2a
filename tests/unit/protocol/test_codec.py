"""The tensor envelope: round trips, zero-copy decode, and rejection of damaged payloads."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedbus.protocol.codec import ALIGN, SparseTensor, decode, encode
from fedbus.protocol.errors import InvalidMessage


def test_round_trip_dtypes_scalars_and_empty_tensors() -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "h": rng.standard_normal(7).astype(np.float16),
        "i": np.arange(5, dtype=np.int64),
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3), np.float32),
    }
    env = decode(encode({"round": 3, "name": "x"}, tensors))
    assert env.meta == {"round": 3, "name": "x"}
    assert list(env.tensors) == list(tensors)
    for name, array in tensors.items():
        out = env.tensors[name]
        assert isinstance(out, np.ndarray)
        assert out.dtype == np.asarray(array).dtype
        assert out.shape == np.asarray(array).shape
        np.testing.assert_array_equal(out, array)


def test_decode_is_zero_copy_and_aligned() -> None:
    payload = encode({}, {"a": np.ones(3, np.float16), "b": np.arange(100, dtype=np.float32)})
    env = decode(payload)
    b = env.tensors["b"]
    assert isinstance(b, np.ndarray)
    assert not b.flags.owndata  # a view into the payload, not a copy
    base = np.frombuffer(payload, np.uint8).ctypes.data
    assert (b.ctypes.data - base) % ALIGN == 0
    payload[-4:] = np.float32(-1.0).tobytes()  # writing the buffer is seen through the view
    assert b[-1] == -1.0


def test_sparse_round_trip() -> None:
    sparse = SparseTensor(1000, np.array([3, 10, 999], np.int32), np.array([1, -2, 3], np.float16))
    out = decode(encode({}, {"delta": sparse})).tensors["delta"]
    assert isinstance(out, SparseTensor)
    assert out.size == 1000
    np.testing.assert_array_equal(out.indices, sparse.indices)
    np.testing.assert_array_equal(out.values, sparse.values)


def test_hundred_megabyte_model_round_trip() -> None:
    big = np.random.default_rng(1).standard_normal(25_000_000).astype(np.float32)  # 100 MB
    payload = encode({"v": 1}, {"w": big, "b": np.ones(10, np.float32)})
    assert len(payload) > 100_000_000
    env = decode(payload)
    np.testing.assert_array_equal(env.tensors["w"], big)


def test_reused_buffer_shrinks_and_grows() -> None:
    buf = bytearray()
    first = encode({}, {"a": np.arange(1000, dtype=np.float32)}, into=buf)
    assert first is buf
    second = encode({}, {"a": np.arange(10, dtype=np.float32)}, into=buf)
    np.testing.assert_array_equal(decode(second).tensors["a"], np.arange(10, dtype=np.float32))
    third = encode({}, {"a": np.arange(5000, dtype=np.float32)}, into=buf)
    np.testing.assert_array_equal(decode(third).tensors["a"], np.arange(5000, dtype=np.float32))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "malformed"),
        (b"FBT1\xff\xff\xff\x7f", "malformed"),
        (b"NOPE" + b"\x00" * 20, "malformed"),
        (b"FBT1\x03\x00\x00\x00\xc1\xc1\xc1", "malformed"),
    ],
)
def test_garbage_is_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode(payload)
    assert info.value.reason == reason


def test_truncated_payload_and_size_limit() -> None:
    payload = bytes(encode({}, {"a": np.arange(100, dtype=np.float32)}))
    with pytest.raises(InvalidMessage, match="past the end"):
        decode(payload[:-8])
    with pytest.raises(InvalidMessage) as info:
        decode(payload, max_bytes=100)
    assert info.value.reason == "oversized"


def test_disallowed_dtype_in_header_is_rejected() -> None:
    import msgpack

    header = msgpack.packb({"m": {}, "t": [["x", "<U4", [1], 0, 16]]})
    payload = b"FBT1" + len(header).to_bytes(4, "little") + header + b"\x00" * 128
    with pytest.raises(InvalidMessage, match="dtype"):
        decode(payload)


def test_big_endian_input_is_sent_little_endian() -> None:
    array = np.arange(4, dtype=">f4")
    out = decode(encode({}, {"a": array})).tensors["a"]
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(out, array)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_decoder_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(InvalidMessage):  # anything else is a bug
        decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(min_value=0, max_value=300))
def test_decoder_survives_corrupted_valid_payloads(noise: bytes, position: int) -> None:
    payload = bytearray(encode({"k": 1}, {"a": np.arange(20, dtype=np.float32)}))
    position %= len(payload)
    payload[position : position + len(noise)] = noise
    with contextlib.suppress(InvalidMessage):
        decode(bytes(payload))


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.text(max_size=6)
    | st.binary(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_values, min_size=0, max_size=9), max_size=4), st.binary(max_size=256))
def test_decoder_survives_arbitrary_well_formed_headers(entries: list, data: bytes) -> None:  # type: ignore[type-arg]
    import msgpack

    header = msgpack.packb({"m": {}, "t": entries}, use_bin_type=True)
    payload = b"FBT1" + len(header).to_bytes(4, "little") + header + bytes(64) + data
    with contextlib.suppress(InvalidMessage):
        decode(payload)
