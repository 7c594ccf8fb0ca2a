"""Device profiles and fleets: what one emulated client is, and a set of them.

A :class:`DeviceProfile` joins a client's id and data partition, its static hardware
description (exactly the keys in :data:`STATIC_KEYS`, which the Bliss selector encodes),
its time-varying :class:`~fedbus.fleet.trace.DeviceTrace`, its online
:class:`~fedbus.fleet.trace.ActivityWindows`, and, for fleets imported from FedScale, the
FedScale capacity pair (ms per sample, Kbps). A :class:`Fleet` is an ordered tuple of
profiles with unique ids plus where they came from.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from fedbus.fleet.errors import InvalidProfile
from fedbus.fleet.trace import ActivityWindows, DeviceTrace

NUMERIC_STATIC_KEYS: tuple[str, ...] = (
    "cpu_flops",  # FLOP/s
    "gpu_flops",  # FLOP/s
    "peak_throughput_mbps",  # Mb/s; bandwidth = peak * rate / 54
    "ram_gb",
    "storage_gb",
    "battery_mah",
    "os_version",  # e.g. 9.0, 10.0
)
TEXT_STATIC_KEYS: tuple[str, ...] = ("os", "brand", "model", "device_type")
STATIC_KEYS: tuple[str, ...] = NUMERIC_STATIC_KEYS + TEXT_STATIC_KEYS
"""The static keys every profile carries, no more and no fewer."""

StaticValue = float | str

_FORBIDDEN_ID_CHARS = frozenset("/+#") | frozenset(" \t\r\n")


def check_client_id(client_id: str) -> str:
    """A client id must be non-empty and usable as one MQTT topic level."""
    if not isinstance(client_id, str) or not client_id:
        raise InvalidProfile("client_id", "must be a non-empty string")
    bad = sorted(set(client_id) & _FORBIDDEN_ID_CHARS)
    if bad:
        raise InvalidProfile("client_id", f"{client_id!r} contains {''.join(bad)!r}")
    return client_id


def check_static(static: Mapping[str, object]) -> dict[str, StaticValue]:
    """Validate and copy a static dict: exact key set, finite numbers, strings."""
    missing = [k for k in STATIC_KEYS if k not in static]
    if missing:
        raise InvalidProfile(f"static.{missing[0]}", "is missing")
    extra = sorted(set(static) - set(STATIC_KEYS))
    if extra:
        raise InvalidProfile(f"static.{extra[0]}", "is not a known static key")
    out: dict[str, StaticValue] = {}
    for key in NUMERIC_STATIC_KEYS:
        value = static[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidProfile(f"static.{key}", f"must be a number, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise InvalidProfile(f"static.{key}", f"must be finite and >= 0, got {value!r}")
        out[key] = float(value)
    for key in TEXT_STATIC_KEYS:
        value = static[key]
        if not isinstance(value, str):
            raise InvalidProfile(f"static.{key}", f"must be a string, got {value!r}")
        out[key] = value
    return out


def _optional_positive(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
        raise InvalidProfile(name, f"must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DeviceProfile:
    """One emulated device. Immutable; validated on construction."""

    client_id: str
    partition: int
    static: dict[str, StaticValue] = field(hash=False)
    trace: DeviceTrace = field(hash=False)
    active: ActivityWindows = field(hash=False)
    compute_ms_per_sample: float | None = None
    bandwidth_kbps: float | None = None

    def __post_init__(self) -> None:
        check_client_id(self.client_id)
        if isinstance(self.partition, bool) or not isinstance(self.partition, int):
            raise InvalidProfile("partition", f"must be an integer, got {self.partition!r}")
        if self.partition < 0:
            raise InvalidProfile("partition", f"must be >= 0, got {self.partition}")
        object.__setattr__(self, "static", check_static(self.static))
        for name in ("compute_ms_per_sample", "bandwidth_kbps"):
            object.__setattr__(self, name, _optional_positive(name, getattr(self, name)))

    @property
    def peak_flops(self) -> float:
        """cpu_flops + gpu_flops, FLOP/s, before availability, battery and noise."""
        return float(self.static["cpu_flops"]) + float(self.static["gpu_flops"])

    @property
    def peak_throughput_mbps(self) -> float:
        return float(self.static["peak_throughput_mbps"])

    def is_active(self, t: float) -> bool:
        """Online at absolute time ``t`` (stateless; any query order)."""
        return self.active.is_active(t)


@dataclass(frozen=True)
class Fleet:
    """An ordered set of device profiles with unique client ids."""

    profiles: tuple[DeviceProfile, ...]
    source: str = "unknown"
    seed: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        profiles = tuple(self.profiles)
        seen: set[str] = set()
        for i, profile in enumerate(profiles):
            if not isinstance(profile, DeviceProfile):
                raise InvalidProfile(f"profiles[{i}]", "is not a DeviceProfile")
            if profile.client_id in seen:
                raise InvalidProfile(f"profiles[{i}].client_id", f"{profile.client_id!r} repeats")
            seen.add(profile.client_id)
        object.__setattr__(self, "profiles", profiles)

    def __len__(self) -> int:
        return len(self.profiles)

    def __iter__(self) -> Iterator[DeviceProfile]:
        return iter(self.profiles)

    def __getitem__(self, index: int) -> DeviceProfile:
        return self.profiles[index]

    @cached_property
    def _by_id(self) -> dict[str, DeviceProfile]:
        return {p.client_id: p for p in self.profiles}

    def by_id(self, client_id: str) -> DeviceProfile:
        """The profile with this id; KeyError if there is none."""
        return self._by_id[client_id]


def client_id_for(index: int) -> str:
    """The id builders give the client at 0-based ``index``: ``c00000``, ``c00001``, ..."""
    return f"c{index:05d}"
