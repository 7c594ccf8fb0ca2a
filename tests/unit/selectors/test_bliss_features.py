"""The fixed-size static encoding and the g/h feature layouts."""

from __future__ import annotations

import zlib

import numpy as np

from client_selectors.bliss_features import (
    BRAND_AT,
    BRANDS,
    DEVICE_AT,
    DEVICE_TYPES,
    G_DIM,
    H_DIM,
    MODEL_AT,
    MODEL_BUCKETS,
    NUMERIC_AT,
    OS_AT,
    OS_VERSION_AT,
    STATIC_DIM,
    WINDOW_DIM,
    encode_static,
    g_features,
    h_features,
    model_bucket,
)

PHONE: dict[str, float | str] = {
    "os": "Android",
    "os_version": 10.0,
    "brand": "Samsung",
    "model": "SM-G991B",
    "device_type": "phone",
    "cpu_flops": 1e11,
    "gpu_flops": 0.0,
    "peak_throughput_mbps": 100.0,
    "ram_gb": 4.0,
    "storage_gb": 128.0,
    "battery_mah": 4000.0,
}


def test_dimension_is_fixed_and_values_are_in_unit_range() -> None:
    assert STATIC_DIM == 60 and WINDOW_DIM == 15
    assert G_DIM == 75 and H_DIM == 78
    for static in (PHONE, {}, {"os": "plan9", "brand": 7, "ram_gb": "lots"}):
        vector = encode_static(static)
        assert vector.shape == (STATIC_DIM,) and vector.dtype == np.float32
        assert ((vector >= 0) & (vector <= 1)).all()


def test_phone_encoding_by_hand() -> None:
    v = encode_static(PHONE)
    assert v[OS_AT] == 1.0 and v[OS_AT : OS_AT + 6].sum() == 1.0
    assert v[OS_VERSION_AT] == np.float32(0.5)  # android 5..15
    assert v[BRAND_AT + BRANDS.index("samsung")] == 1.0
    assert v[MODEL_AT + model_bucket("SM-G991B")] == 1.0
    assert v[MODEL_AT : MODEL_AT + MODEL_BUCKETS].sum() == 1.0
    assert v[DEVICE_AT + DEVICE_TYPES.index("phone")] == 1.0
    numeric = v[NUMERIC_AT:]
    np.testing.assert_allclose(
        numeric,
        [(11 - 8) / 6, 0.0, (2 - 0) / 4, (2 + 2) / 12, (7 + 1) / 15, 0.4],
        rtol=1e-6,
    )


def test_missing_is_neutral_and_unknown_is_other() -> None:
    v = encode_static({"os": "plan9", "brand": "acme", "device_type": "toaster"})
    assert v[OS_AT + 5] == 1.0  # other
    assert v[OS_VERSION_AT] == 0.5
    assert v[BRAND_AT + len(BRANDS)] == 1.0  # other
    assert v[DEVICE_AT + len(DEVICE_TYPES)] == 1.0  # other
    assert v[MODEL_AT : MODEL_AT + MODEL_BUCKETS].sum() == 0.0
    np.testing.assert_array_equal(v[NUMERIC_AT:], 0.5)


def test_aliases_and_case() -> None:
    a = encode_static({"os": "Darwin", "brand": "Raspberry Pi", "device_type": "Jetson"})
    b = encode_static({"os": "macos", "brand": "raspberrypi", "device_type": "embedded"})
    np.testing.assert_array_equal(a, b)


def test_model_bucket_is_stable() -> None:
    # crc32, not Python's salted hash: the same bucket in every process
    assert model_bucket("SM-G991B") == model_bucket("sm-g991b") == zlib.crc32(b"smg991b") % 16 == 3


def test_h_features_layout() -> None:
    x = h_features(
        window_delta=np.ones((2, WINDOW_DIM)),
        static=np.zeros((2, STATIC_DIM)),
        prev_utility=np.array([3.0, 4.0]),
        prev_success=np.array([1.0, 0.0]),
        gap=np.array([2, 7]),
    )
    assert x.shape == (2, H_DIM)
    np.testing.assert_array_equal(x[:, -3:], [[3.0, 1.0, 2.0], [4.0, 0.0, 7.0]])
    assert g_features(np.ones((1, WINDOW_DIM)), np.zeros((1, STATIC_DIM))).shape == (1, G_DIM)
