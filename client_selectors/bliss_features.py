"""Bliss feature vectors: a fixed-size encoding of a device's static profile (§4.2).

[B] encodes phone metadata into 63 dimensions tuned to one Android data set. fedbus fleets
mix phones, laptops, GPU servers and Jetson boards, so the layout below keeps [B]'s kinds
of features but with wider (log-scaled) ranges and a fixed, documented size of
``STATIC_DIM = 60``. Every value lies in [0, 1]:

==========  =====  =================================================================
slice       size   content
==========  =====  =================================================================
os          6      one-hot: android, ios, linux, windows, macos, other
os_version  1      version scaled within the OS's range (android 5–15, ios 10–18,
                   linux 4–7 (kernel), windows 7–11, macos 10–15); clipped
brand       24     one-hot over ``BRANDS`` (lower-case, spaces/dashes removed), + other
model       16     one-hot of crc32(lower-case model) mod 16 (stable across processes;
                   Python's ``hash`` is salted); no model → all zero
device_type 7      one-hot: phone, tablet, laptop, desktop, server, embedded, other
numeric     6      cpu_flops log10 8–14, gpu_flops log10 8–15, peak_throughput_mbps
                   log10 0–4, ram_gb log2 −2–10, storage_gb log2 −1–14, battery_mah
                   linear 0–10000
==========  =====  =================================================================

Missing or unparseable values are neutral: 0.5 for a numeric or the version, the "other"
slot for a categorical. A value <= 0 of a log-scaled field (no GPU) encodes as 0.

Dynamic windows (``WINDOW_DIM = 15``: rate×5, availability×5, battery×5, newest last,
already normalised) come from outside through the selector's dynamic source.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np

WINDOW_DIM = 15

OS_NAMES = ("android", "ios", "linux", "windows", "macos")
OS_ALIASES = {"darwin": "macos", "osx": "macos", "mac": "macos", "ipados": "ios", "win": "windows"}
OS_VERSION_RANGE = {
    "android": (5.0, 15.0),
    "ios": (10.0, 18.0),
    "linux": (4.0, 7.0),
    "windows": (7.0, 11.0),
    "macos": (10.0, 15.0),
}
BRANDS = (
    "samsung",
    "apple",
    "xiaomi",
    "huawei",
    "oppo",
    "vivo",
    "oneplus",
    "google",
    "motorola",
    "lg",
    "sony",
    "nokia",
    "realme",
    "honor",
    "lenovo",
    "asus",
    "zte",
    "tcl",
    "nvidia",
    "raspberrypi",
    "dell",
    "hp",
    "microsoft",
)
MODEL_BUCKETS = 16
DEVICE_TYPES = ("phone", "tablet", "laptop", "desktop", "server", "embedded")
DEVICE_ALIASES = {"smartphone": "phone", "mobile": "phone", "jetson": "embedded", "sbc": "embedded"}
# (key, transform, lo, hi): the value is transform(x) min-max scaled from [lo, hi] into [0, 1]
NUMERIC = (
    ("cpu_flops", "log10", 8.0, 14.0),
    ("gpu_flops", "log10", 8.0, 15.0),
    ("peak_throughput_mbps", "log10", 0.0, 4.0),
    ("ram_gb", "log2", -2.0, 10.0),
    ("storage_gb", "log2", -1.0, 14.0),
    ("battery_mah", "linear", 0.0, 10000.0),
)

OS_AT = 0
OS_VERSION_AT = OS_AT + len(OS_NAMES) + 1
BRAND_AT = OS_VERSION_AT + 1
MODEL_AT = BRAND_AT + len(BRANDS) + 1
DEVICE_AT = MODEL_AT + MODEL_BUCKETS
NUMERIC_AT = DEVICE_AT + len(DEVICE_TYPES) + 1
STATIC_DIM = NUMERIC_AT + len(NUMERIC)
NEUTRAL = 0.5


def _token(value: float | str | None) -> str:
    if value is None:
        return ""
    return str(value).strip().lower().replace(" ", "").replace("-", "").replace("_", "")


def _number(value: float | str | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _scale(x: float, lo: float, hi: float) -> float:
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def _one_hot_slot(names: tuple[str, ...], token: str) -> int:
    """Index of ``token`` in ``names``, or len(names) (the "other" slot)."""
    try:
        return names.index(token)
    except ValueError:
        return len(names)


def model_bucket(model: str) -> int:
    """Stable bucket of a device model name."""
    return zlib.crc32(_token(model).encode("utf-8")) % MODEL_BUCKETS


def encode_static(static: Mapping[str, float | str]) -> np.ndarray:
    """The ``STATIC_DIM``-long float32 encoding of a profile's static metadata."""
    out = np.zeros(STATIC_DIM, dtype=np.float32)
    os_token = _token(static.get("os"))
    os_name = OS_ALIASES.get(os_token, os_token)
    out[OS_AT + _one_hot_slot(OS_NAMES, os_name)] = 1.0

    version = _number(static.get("os_version"))
    span = OS_VERSION_RANGE.get(os_name)
    out[OS_VERSION_AT] = NEUTRAL if version is None or span is None else _scale(version, *span)

    out[BRAND_AT + _one_hot_slot(BRANDS, _token(static.get("brand")))] = 1.0

    model = static.get("model")
    if model is not None and _token(model):
        out[MODEL_AT + model_bucket(str(model))] = 1.0

    device = _token(static.get("device_type"))
    out[DEVICE_AT + _one_hot_slot(DEVICE_TYPES, DEVICE_ALIASES.get(device, device))] = 1.0

    for i, (key, transform, lo, hi) in enumerate(NUMERIC):
        x = _number(static.get(key))
        if x is None:
            value = NEUTRAL
        elif transform == "linear":
            value = _scale(x, lo, hi)
        elif x <= 0.0:
            value = 0.0
        else:
            value = _scale(math.log10(x) if transform == "log10" else math.log2(x), lo, hi)
        out[NUMERIC_AT + i] = value
    return out


def zero_windows(client_id: str, now: float) -> np.ndarray:
    """The default dynamic source: no trace information (all zero windows)."""
    return np.zeros(WINDOW_DIM, dtype=np.float64)


G_DIM = WINDOW_DIM + STATIC_DIM
H_DIM = WINDOW_DIM + STATIC_DIM + 3


def g_features(windows: np.ndarray, static: np.ndarray) -> np.ndarray:
    """g's input (``G_DIM``): the windows at the moment of (would-be) selection + static.

    Training rows use the windows captured when the client was last selected; inference
    rows use the windows now.
    """
    return np.hstack([windows, static]).astype(np.float32)


def h_features(
    window_delta: np.ndarray,
    static: np.ndarray,
    prev_utility: np.ndarray,
    prev_success: np.ndarray,
    gap: np.ndarray,
) -> np.ndarray:
    """h's input (``H_DIM``): one meaning at training and at inference (unlike [B]).

    It describes "this selection" relative to "the previous one": window change since the
    previous selection (15), static (60), utility and success recorded for the previous
    selection, and the number of selector rounds between the two. Training row for a
    client seen >= 2 times: (windows at last selection − windows at the one before,
    last_utility, last_success, round − last_round) -> utility. Inference at round t:
    (windows now − windows at last selection, utility, success, t − round).
    """
    tail = np.column_stack([prev_utility, prev_success, gap]).astype(np.float64)
    return np.hstack([window_delta, static, tail]).astype(np.float32)
