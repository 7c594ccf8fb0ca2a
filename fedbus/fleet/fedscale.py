"""Import FedScale's device trace pickles as device profiles (ALGORITHMS 2.1).

Two pickle formats (FedScale ``benchmark/dataset/data/device_info``):

- ``client_device_capacity``: ``{id: {'computation': ms per sample, 'communication': Kbps}}``.
  The n-th client (1-based) uses the entry whose *key* is ``n mod len(capacity)``;
  a missing key gives FedScale's default ``{computation: 1.0, communication: 1.0}``.
- ``client_behave_trace``: ``{id: {'duration', 'inactive': [...], 'finish_time',
  'active': [...], 'model'}}`` in seconds. The n-th client uses the entry at *position*
  ``n mod len(trace)`` of the key list (FedScale mixes the two conventions; both are kept).

Pickles are read with an unpickler that only builds plain containers and numbers (and
numpy scalars), so a crafted file cannot run code. Profiles get a constant trace (rate 54,
availability 100 %, battery 99 %) and static values derived from the capacity pair:
``cpu_flops = REFERENCE_WORK_PER_SAMPLE * 1000 / ms`` and ``peak = Kbps / 1000`` Mb/s, so
the Bliss time model and FedScale's agree up to FedScale's 1024-vs-1000 kbit.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbus.fleet.errors import InvalidTrace, TraceSourceError
from fedbus.fleet.profile import DeviceProfile, StaticValue, client_id_for
from fedbus.fleet.trace import ActivityWindows, DeviceTrace

REFERENCE_WORK_PER_SAMPLE = 1e9
"""Bliss-form work (params-equivalent FLOPs) of one sample of the model behind a
'ms per sample' figure. It maps FedScale's 15-199 ms to 5.0e9-6.7e10 FLOP/s, the span of
Bliss's CPU_FLOPS (4e9-6.72e10)."""

DEFAULT_CAPACITY = (1.0, 1.0)
"""FedScale's (ms per sample, Kbps) for a client whose key is missing."""

PLACEHOLDER_STATIC: dict[str, StaticValue] = {
    "ram_gb": 3.0,
    "storage_gb": 32.0,
    "battery_mah": 3000.0,
    "os": "Android",
    "os_version": 9.0,
    "brand": "unknown",
    "model": "unknown",
    "device_type": "phone",
}
"""Static fields FedScale's pickles do not carry: a typical 2020 Android phone."""

_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


@dataclass(frozen=True)
class Capacity:
    compute_ms_per_sample: float
    bandwidth_kbps: float


@dataclass(frozen=True)
class Behaviour:
    active: tuple[float, ...]
    inactive: tuple[float, ...]
    finish_time: float
    model: str


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickle(path: Path) -> Mapping[Any, Any]:
    try:
        data = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except OSError as exc:
        raise TraceSourceError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except Exception as exc:  # any unpickling failure is a malformed input file
        raise TraceSourceError(str(path), f"not a readable pickle: {exc}") from exc
    if not isinstance(data, Mapping) or not data:
        raise TraceSourceError(str(path), "must hold a non-empty dict keyed by client id")
    return data


def _number(path: Path, field: str, value: object, *, positive: bool = False) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise TraceSourceError(str(path), f"must be a finite number, got {value!r}", field)
    if positive and number <= 0:
        raise TraceSourceError(str(path), f"must be positive, got {value!r}", field)
    return number


def read_capacity(path: str | Path) -> dict[Any, Capacity]:
    """Read a ``client_device_capacity`` pickle; keys are kept as they are."""
    path = Path(path)
    out: dict[Any, Capacity] = {}
    for key, entry in _load_pickle(path).items():
        if not isinstance(entry, Mapping):
            raise TraceSourceError(str(path), "must be a dict", f"[{key!r}]")
        try:
            ms, kbps = entry["computation"], entry["communication"]
        except KeyError as exc:
            raise TraceSourceError(str(path), "is missing", f"[{key!r}].{exc.args[0]}") from exc
        out[key] = Capacity(
            _number(path, f"[{key!r}].computation", ms, positive=True),
            _number(path, f"[{key!r}].communication", kbps, positive=True),
        )
    return out


def read_behaviour(path: str | Path) -> dict[Any, Behaviour]:
    """Read a ``client_behave_trace`` pickle."""
    path = Path(path)
    out: dict[Any, Behaviour] = {}
    for key, entry in _load_pickle(path).items():
        if not isinstance(entry, Mapping):
            raise TraceSourceError(str(path), "must be a dict", f"[{key!r}]")
        for name in ("active", "inactive", "finish_time"):
            if name not in entry:
                raise TraceSourceError(str(path), "is missing", f"[{key!r}].{name}")
        lists = []
        for name in ("active", "inactive"):
            raw = entry[name]
            if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
                raise TraceSourceError(str(path), "must be a list", f"[{key!r}].{name}")
            lists.append(tuple(_number(path, f"[{key!r}].{name}", v) for v in raw))
        out[key] = Behaviour(
            active=lists[0],
            inactive=lists[1],
            finish_time=_number(path, f"[{key!r}].finish_time", entry["finish_time"]),
            model=str(entry.get("model", "unknown")),
        )
    return out


def _capacity_for(capacity: Mapping[Any, Capacity], n: int) -> Capacity:
    key = n % len(capacity)
    for candidate in (key, str(key)):
        if candidate in capacity:
            return capacity[candidate]
    return Capacity(*DEFAULT_CAPACITY)


def behaviour_windows(behaviour: Behaviour) -> ActivityWindows:
    """FedScale's closed [active[j], inactive[j]] windows, cycle = finish_time."""
    if len(behaviour.active) != len(behaviour.inactive):
        raise InvalidTrace("active", "active and inactive lists differ in length")
    if behaviour.finish_time <= 0:
        raise InvalidTrace("finish_time", f"must be positive, got {behaviour.finish_time}")
    pairs = zip(behaviour.active, behaviour.inactive, strict=True)
    return ActivityWindows.from_intervals(pairs, behaviour.finish_time)


def fedscale_profile(index: int, capacity: Capacity, behaviour: Behaviour | None) -> DeviceProfile:
    """The profile of the client at 0-based ``index`` from its FedScale records."""
    static = dict(PLACEHOLDER_STATIC)
    static["cpu_flops"] = REFERENCE_WORK_PER_SAMPLE * 1000.0 / capacity.compute_ms_per_sample
    static["gpu_flops"] = 0.0
    static["peak_throughput_mbps"] = capacity.bandwidth_kbps / 1000.0
    if behaviour is not None and behaviour.model:
        static["model"] = behaviour.model
    active = ActivityWindows.always() if behaviour is None else behaviour_windows(behaviour)
    return DeviceProfile(
        client_id=client_id_for(index),
        partition=index,
        static=static,
        trace=DeviceTrace.constant(),
        active=active,
        compute_ms_per_sample=capacity.compute_ms_per_sample,
        bandwidth_kbps=capacity.bandwidth_kbps,
    )


def fedscale_profiles(
    capacity: Mapping[Any, Capacity], behaviour: Mapping[Any, Behaviour] | None, count: int
) -> list[DeviceProfile]:
    """``count`` profiles; client n = index + 1 maps into the tables as FedScale does."""
    if not capacity:
        raise ValueError("capacity table is empty")
    keys = list(behaviour) if behaviour else []
    profiles = []
    for index in range(count):
        n = index + 1
        record = behaviour[keys[n % len(keys)]] if behaviour else None
        try:
            profiles.append(fedscale_profile(index, _capacity_for(capacity, n), record))
        except InvalidTrace as exc:
            key = keys[n % len(keys)] if keys else None
            raise InvalidTrace(f"[{key!r}].{exc.field}", exc.problem) from exc
    return profiles
