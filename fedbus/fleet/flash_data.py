"""Readers for the FLASH-derived trace files (I/O only; the fleet builder is pure).

Expected layout under the directory handed in (``shared/data/traces`` in this project)::

    device_profiles_flash/raw_ai_benchmark_list.json   333 phones, AI-Benchmark scores
    device_profiles_flash/mobiperf_samples/case*.json  MobiPerf TCP speed tests (kbps)
    availability_flash/cached_timers.json              {guid: {isSuccess, trace_start,
                                                         trace_end, ready_time: [[s, e]]}}
    bandwidth_traces/<set>/*                           "time_s  Mbps" per line

Every failure raises :class:`~fedbus.fleet.errors.TraceSourceError` naming the file and field.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.fleet.errors import TraceSourceError

AI_BENCHMARK = Path("device_profiles_flash/raw_ai_benchmark_list.json")
MOBIPERF_DIR = Path("device_profiles_flash/mobiperf_samples")
TIMERS = Path("availability_flash/cached_timers.json")
BANDWIDTH_DIR = Path("bandwidth_traces")
DEFAULT_BANDWIDTH_SET = "cooked_3gp"


@dataclass(frozen=True)
class BenchmarkPhone:
    model: str
    brand: str
    ai_score: float
    ram_gb: float
    android: float
    year: int


@dataclass(frozen=True)
class ReadyTrace:
    """One phone's eligibility windows, absolute seconds of the FLASH trace."""

    guid: str
    start: float
    end: float
    windows: tuple[tuple[float, float], ...]


@dataclass(frozen=True, eq=False)
class ThroughputSeries:
    """A measured throughput series, shifted to start at 0; repeats every ``duration``."""

    name: str
    times: np.ndarray
    mbps: np.ndarray
    duration: float


@dataclass(frozen=True)
class FlashSources:
    root: Path
    phones: tuple[BenchmarkPhone, ...]
    link_mbps: tuple[float, ...]
    ready: tuple[ReadyTrace, ...]
    series: tuple[ThroughputSeries, ...]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise TraceSourceError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise TraceSourceError(str(path), f"invalid JSON: {exc}") from exc


def _first_number(text: str) -> float:
    return float(text.strip().split()[0])


def read_phones(path: Path) -> tuple[BenchmarkPhone, ...]:
    rows = _read_json(path)
    if not isinstance(rows, list) or not rows:
        raise TraceSourceError(str(path), "must be a non-empty list of phones")
    phones = []
    for i, row in enumerate(rows):
        field = "Model"
        try:
            model = str(row["Model"]).strip()
            field = "AI_Score"
            score = _first_number(row["AI_Score"])  # e.g. " 76206 1,6"
            field = "RAM"
            ram = float(str(row["RAM"]).upper().removesuffix("GB"))
            field = "Android"
            android = float(str(row["Android"]).split()[0])
            field = "Year"
            year = int(row["Year"])
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise TraceSourceError(str(path), f"unreadable ({exc})", f"[{i}].{field}") from exc
        if score <= 0:
            raise TraceSourceError(str(path), "must be positive", f"[{i}].AI_Score")
        phones.append(BenchmarkPhone(model, model.split()[0], score, ram, android, year))
    return tuple(phones)


def read_link_speeds(folder: Path) -> tuple[float, ...]:
    """Median TCP speed (Mb/s) of each distinct MobiPerf record, ordered by record id."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise TraceSourceError(str(folder), "holds no MobiPerf *.json files")
    by_id: dict[str, float] = {}
    for path in files:
        records = _read_json(path)
        if not isinstance(records, list):
            raise TraceSourceError(str(path), "must be a list of records")
        for i, rec in enumerate(records):
            try:
                speeds = [float(v) for v in rec["tcp_speed_results"] or []]
                rid = str(rec["id"])
            except (KeyError, TypeError, ValueError) as exc:
                raise TraceSourceError(str(path), f"unreadable ({exc})", f"[{i}]") from exc
            if speeds:
                by_id.setdefault(rid, statistics.median(speeds) / 1000.0)
    if not by_id:
        raise TraceSourceError(str(folder), "no record has tcp_speed_results")
    return tuple(by_id[k] for k in sorted(by_id))


def read_ready_traces(path: Path) -> tuple[ReadyTrace, ...]:
    """The ``isSuccess`` devices of ``cached_timers.json``, ordered by guid."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise TraceSourceError(str(path), "must be a dict keyed by device guid")
    out = []
    for guid in sorted(data):
        rec = data[guid]
        if not isinstance(rec, dict) or not rec.get("isSuccess"):
            continue
        try:
            start, end = float(rec["trace_start"]), float(rec["trace_end"])
            windows = tuple((float(a), float(b)) for a, b in rec["ready_time"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceSourceError(str(path), f"unreadable ({exc})", f"[{guid!r}]") from exc
        if end <= start:
            raise TraceSourceError(str(path), "trace_end must follow trace_start", f"[{guid!r}]")
        out.append(ReadyTrace(guid, start, end, windows))
    if not out:
        raise TraceSourceError(str(path), "has no device with isSuccess true")
    return tuple(out)


def read_throughput(path: Path) -> ThroughputSeries | None:
    """A ``time_s  Mbps`` file; None when it has fewer than two distinct times."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        pairs = [(float(r[0]), float(r[1])) for r in rows]
    except OSError as exc:
        raise TraceSourceError(str(path), f"cannot read: {exc.strerror or exc}") from exc
    except (ValueError, IndexError) as exc:
        raise TraceSourceError(str(path), f"lines must be 'time_s Mbps' ({exc})") from exc
    times: list[float] = []
    mbps: list[float] = []
    for t, v in pairs:
        if not times or t > times[-1]:
            times.append(t)
            mbps.append(max(v, 0.0))
    if len(times) < 2:
        return None
    t0 = times[0]
    shifted = np.array(times) - t0
    duration = float(shifted[-1] + statistics.median(np.diff(shifted).tolist()))
    return ThroughputSeries(path.name, shifted, np.array(mbps), duration)


def read_series_set(folder: Path) -> tuple[ThroughputSeries, ...]:
    if not folder.is_dir():
        raise TraceSourceError(str(folder), "is not a directory of bandwidth traces")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("LICENSE"))
    series = tuple(s for s in map(read_throughput, files) if s is not None and s.mbps.max() > 0)
    if not series:
        raise TraceSourceError(str(folder), "holds no usable 'time_s Mbps' trace")
    return series


def load_flash_sources(
    root: str | Path, bandwidth_set: str = DEFAULT_BANDWIDTH_SET
) -> FlashSources:
    """Read everything the FLASH builder needs from ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise TraceSourceError(str(root), "is not a directory (expected shared/data/traces)")
    return FlashSources(
        root=root,
        phones=read_phones(root / AI_BENCHMARK),
        link_mbps=read_link_speeds(root / MOBIPERF_DIR),
        ready=read_ready_traces(root / TIMERS),
        series=read_series_set(root / BANDWIDTH_DIR / bandwidth_set),
    )
