"""Read and write fleet files: versioned JSON, gzip-compressed when the name ends ``.gz``.

Layout (version 1; docs/fleet.md has the full description and units)::

    {"format": "fedbus-fleet", "version": 1, "source": "flash", "seed": 7,
     "description": "...",
     "clients": [
       {"client_id": "c00000", "partition": 0,
        "static": {"cpu_flops": 1.2e10, ..., "device_type": "phone"},
        "rate":   {"cycle": 302.0, "times": [0, 1.5, ...], "values": [40.1, ...]},
        "state":  {"cycle": 172800, "times": [0, 1800, ...],
                   "availability": [90.5, ...], "battery": [77, ...]},
        "active": {"cycle": 172800, "windows": [[3600, 5400], ...]},
        "compute_ms_per_sample": 80.5, "bandwidth_kbps": 41000.0}]}

Loading validates the document with frozen pydantic models (``extra="forbid"``), then
builds the domain objects, whose own checks (sorted breakpoints, value ranges, ...)
are reported with the client index: every error names the file and the field.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedbus.fleet.errors import FleetError, FleetFileError, InvalidProfile, InvalidTrace
from fedbus.fleet.profile import DeviceProfile, Fleet
from fedbus.fleet.trace import ActivityWindows, DeviceTrace, StepSeries

FORMAT_NAME = "fedbus-fleet"
FORMAT_VERSION = 1


class _Doc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class SeriesDoc(_Doc):
    cycle: float = Field(gt=0)
    times: list[float]
    values: list[float]


class StateDoc(_Doc):
    cycle: float = Field(gt=0)
    times: list[float]
    availability: list[float]
    battery: list[float]


class ActiveDoc(_Doc):
    cycle: float = Field(gt=0)
    windows: list[tuple[float, float]]


class StaticDoc(_Doc):
    cpu_flops: float = Field(ge=0)
    gpu_flops: float = Field(ge=0)
    peak_throughput_mbps: float = Field(ge=0)
    ram_gb: float = Field(ge=0)
    storage_gb: float = Field(ge=0)
    battery_mah: float = Field(ge=0)
    os: str
    os_version: float = Field(ge=0)
    brand: str
    model: str
    device_type: str


class ClientDoc(_Doc):
    client_id: str
    partition: int = Field(ge=0)
    static: StaticDoc
    rate: SeriesDoc
    state: StateDoc
    active: ActiveDoc
    compute_ms_per_sample: float | None = Field(default=None, gt=0)
    bandwidth_kbps: float | None = Field(default=None, gt=0)


class FleetDoc(_Doc):
    format: Literal["fedbus-fleet"]
    version: Literal[1]
    source: str = "unknown"
    seed: int | None = None
    description: str = ""
    clients: list[ClientDoc]


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TRACE_FIELDS = {"availability.values": "state.availability", "battery.values": "state.battery"}


def _series(prefix: str, times: list[float], values: list[float], cycle: float) -> StepSeries:
    """A StepSeries whose errors are renamed to the file's field (``state.battery``, ...)."""
    try:
        return StepSeries(np.asarray(times), np.asarray(values), cycle)
    except InvalidTrace as exc:
        field = prefix if exc.field == "values" and prefix.startswith("state.") else None
        raise InvalidTrace(field or f"{prefix.split('.')[0]}.{exc.field}", exc.problem) from exc


def _client_to_profile(doc: ClientDoc) -> DeviceProfile:
    r, s, a = doc.rate, doc.state, doc.active
    rate = _series("rate", r.times, r.values, r.cycle)
    availability = _series("state.availability", s.times, s.availability, s.cycle)
    battery = _series("state.battery", s.times, s.battery, s.cycle)
    try:
        trace = DeviceTrace(rate, availability, battery)
    except InvalidTrace as exc:
        raise InvalidTrace(_TRACE_FIELDS.get(exc.field, exc.field), exc.problem) from exc
    try:
        pairs = np.asarray(a.windows, dtype=np.float64).reshape(-1, 2)
        active = ActivityWindows(pairs[:, 0], pairs[:, 1], a.cycle)
    except InvalidTrace as exc:
        raise InvalidTrace(f"active.{exc.field}", exc.problem) from exc
    return DeviceProfile(
        client_id=doc.client_id,
        partition=doc.partition,
        static=doc.static.model_dump(),
        trace=trace,
        active=active,
        compute_ms_per_sample=doc.compute_ms_per_sample,
        bandwidth_kbps=doc.bandwidth_kbps,
    )


def fleet_from_json(data: bytes, path: str = "<fleet>") -> Fleet:
    """Parse and validate a fleet document; errors name ``path`` and the field."""
    try:
        doc = FleetDoc.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc, msg = tuple(first["loc"]), first["msg"]
        if loc == ("version",):
            msg = f"unsupported version {first['input']!r}; this fedbus reads {FORMAT_VERSION}"
        elif loc == ("format",):
            msg = f"is {first['input']!r}, not {FORMAT_NAME!r}: not a fleet file"
        extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise FleetFileError(path, _field_path(loc) if loc else None, msg + extra) from exc
    profiles = []
    for i, client in enumerate(doc.clients):
        try:
            profiles.append(_client_to_profile(client))
        except (InvalidTrace, InvalidProfile) as exc:
            raise FleetFileError(path, f"clients[{i}].{exc.field}", exc.problem) from exc
    try:
        return Fleet(tuple(profiles), doc.source, doc.seed, doc.description)
    except InvalidProfile as exc:
        field = exc.field.replace("profiles", "clients", 1)
        raise FleetFileError(path, field, exc.problem) from exc


def _round_trip_list(values: Any) -> list[float]:
    return [float(v) for v in values.tolist()]


def profile_to_dict(profile: DeviceProfile) -> dict[str, Any]:
    """The JSON object of one client."""
    t = profile.trace
    out: dict[str, Any] = {
        "client_id": profile.client_id,
        "partition": profile.partition,
        "static": dict(profile.static),
        "rate": {
            "cycle": t.rate.cycle,
            "times": _round_trip_list(t.rate.times),
            "values": _round_trip_list(t.rate.values),
        },
        "state": {
            "cycle": t.availability.cycle,
            "times": _round_trip_list(t.availability.times),
            "availability": _round_trip_list(t.availability.values),
            "battery": _round_trip_list(t.battery.values),
        },
        "active": {"cycle": profile.active.cycle, "windows": profile.active.intervals()},
    }
    if profile.compute_ms_per_sample is not None:
        out["compute_ms_per_sample"] = profile.compute_ms_per_sample
    if profile.bandwidth_kbps is not None:
        out["bandwidth_kbps"] = profile.bandwidth_kbps
    return out


def fleet_to_json(fleet: Fleet) -> bytes:
    """The whole document, compact UTF-8 JSON (one client per line, for diffs)."""
    head = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "source": fleet.source,
        "seed": fleet.seed,
        "description": fleet.description,
    }
    lines = [json.dumps(profile_to_dict(p), separators=(",", ":")) for p in fleet]
    body = json.dumps(head, separators=(",", ":"))[:-1]
    return (body + ',"clients":[\n' + ",\n".join(lines) + "\n]}\n").encode()


def save_fleet(path: str | Path, fleet: Fleet) -> None:
    """Write ``fleet`` to ``path`` atomically; gzip (reproducible bytes) for ``*.gz``."""
    path = Path(path)
    data = fleet_to_json(fleet)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FleetFileError(str(path), None, f"cannot write: {exc.strerror or exc}") from exc


def load_fleet(path: str | Path) -> Fleet:
    """Read a fleet file written by :func:`save_fleet` (or by hand, same format)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FleetFileError(str(path), None, f"cannot read: {exc.strerror or exc}") from exc
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise FleetFileError(str(path), None, f"not a valid gzip file: {exc}") from exc
    try:
        return fleet_from_json(data, str(path))
    except FleetFileError:
        raise
    except FleetError as exc:  # pragma: no cover - every domain error is mapped above
        raise FleetFileError(str(path), None, str(exc)) from exc
