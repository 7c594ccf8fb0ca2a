"""Agent telemetry: host, NVIDIA GPU and Jetson readings, published at an interval.

Every source has the same small interface, :class:`TelemetrySource` (``read() -> dict``
of :class:`~fedbus.protocol.messages.Telemetry` fields, plus ``extra`` entries), so the
publisher does not care what hardware it runs on:

* :class:`HostSource` — psutil: CPU %, memory used, this process's RSS, network bytes;
* :class:`NvmlSource` — ``nvidia-ml-py`` (NVML) when it imports and sees a GPU:
  utilisation, memory used, power, temperature;
* :class:`JetsonSource` — a Jetson's sysfs: INA3221 power rails (hwmon ``in*_label`` /
  ``curr*_input`` / ``in*_input``), GPU load (``/sys/devices/platform/gpu.0/load`` or
  the older ``/sys/devices/gpu.0/load``, in 0.1 %), thermal zones. The sysfs root is a
  parameter, so tests point the real reader at a tree of files shaped like a Jetson's
  (the hardware is what is absent, not the reader).

A source that fails to read is dropped from that sample with a log line, never the
agent. :class:`TelemetryPublisher` samples every ``interval_s`` seconds (CoLExT's live
mode; ``0`` turns it off) and publishes one JSON ``Telemetry`` at QoS 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import psutil

from fedbus.protocol.messages import Scalar, Telemetry

log = logging.getLogger(__name__)

Reading = dict[str, Any]


class TelemetrySource(Protocol):
    name: str

    def read(self) -> Reading:
        """Telemetry fields (and ``extra`` entries) as measured now."""
        ...


class HostSource:
    name = "host"

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def read(self) -> Reading:
        net = psutil.net_io_counters()
        return {
            "cpu_percent": psutil.cpu_percent(interval=None),
            "mem_used_mb": psutil.virtual_memory().used / 2**20,
            "rss_mb": self._process.memory_info().rss / 2**20,
            "net_sent_bytes": int(net.bytes_sent) if net else None,
            "net_recv_bytes": int(net.bytes_recv) if net else None,
        }


class NvmlSource:
    """One NVIDIA GPU through NVML; :meth:`open` returns None where there is none."""

    name = "nvml"

    def __init__(self, nvml: Any, handle: Any) -> None:
        self._nvml = nvml
        self._handle = handle

    @classmethod
    def open(cls, index: int = 0) -> NvmlSource | None:
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            return cls(pynvml, pynvml.nvmlDeviceGetHandleByIndex(index))
        except Exception as exc:  # no library, no driver, no GPU: telemetry without it
            log.info("no NVML telemetry: %s", exc)
            return None

    def read(self) -> Reading:
        nvml, handle = self._nvml, self._handle
        util = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        reading: Reading = {
            "gpu_util_percent": float(util.gpu),
            "gpu_mem_used_mb": memory.used / 2**20,
            "gpu_temp_c": float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
        }
        with contextlib.suppress(nvml.NVMLError):  # some boards do not report power
            reading["power_w"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # mW
        return reading


class JetsonSource:
    """A Jetson's power rails, GPU load and temperatures from sysfs under ``root``."""

    name = "jetson"
    GPU_LOAD = ("sys/devices/platform/gpu.0/load", "sys/devices/gpu.0/load")

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    @classmethod
    def open(cls, root: Path = Path("/")) -> JetsonSource | None:
        model = root / "proc/device-tree/model"
        try:
            name = model.read_bytes().decode(errors="replace").lower()
        except OSError:
            return None
        return cls(root) if "jetson" in name else None

    def read(self) -> Reading:
        extra: dict[str, Scalar] = {}
        total_mw = 0.0
        for label, milliwatts in self._rails():
            extra[f"rail_{label}_mw"] = milliwatts
            if not label.lower().startswith("sum"):
                total_mw += milliwatts
        reading: Reading = {"extra": extra}
        if total_mw > 0:
            reading["power_w"] = total_mw / 1000.0
        for relative in self.GPU_LOAD:
            load = _read_number(self.root / relative)
            if load is not None:
                reading["gpu_util_percent"] = load / 10.0  # per mille
                break
        for zone in sorted((self.root / "sys/class/thermal").glob("thermal_zone*")):
            kind = _read_text(zone / "type")
            millideg = _read_number(zone / "temp")
            if kind is None or millideg is None:
                continue
            extra[f"temp_{kind.lower().replace('-', '_')}_c"] = millideg / 1000.0
            if kind.lower().startswith("gpu"):
                reading["gpu_temp_c"] = millideg / 1000.0
        return reading

    def _rails(self) -> list[tuple[str, float]]:
        """(label, mW) of each INA3221 channel: volts (mV) x amps (mA) / 1000."""
        rails: list[tuple[str, float]] = []
        for hwmon in sorted((self.root / "sys/class/hwmon").glob("hwmon*")):
            if _read_text(hwmon / "name") != "ina3221":
                continue
            for label_file in sorted(hwmon.glob("in*_label")):
                channel = label_file.name[len("in") : -len("_label")]
                label = _read_text(label_file)
                millivolts = _read_number(hwmon / f"in{channel}_input")
                milliamps = _read_number(hwmon / f"curr{channel}_input")
                if label and millivolts is not None and milliamps is not None:
                    rails.append((label, millivolts * milliamps / 1000.0))
        return rails


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_number(path: Path) -> float | None:
    text = _read_text(path)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def default_sources() -> list[TelemetrySource]:
    """The host, plus NVML and Jetson sources where that hardware is present."""
    sources: list[TelemetrySource] = [HostSource()]
    for source in (NvmlSource.open(), JetsonSource.open()):
        if source is not None:
            sources.append(source)
    return sources


def sample(
    agent: str, sources: Sequence[TelemetrySource], ts: float, interval_s: float | None = None
) -> Telemetry:
    """One Telemetry message from every source that reads cleanly."""
    fields: Reading = {}
    extra: dict[str, Scalar] = {}
    for source in sources:
        try:
            reading = dict(source.read())
        except Exception as exc:
            log.warning("telemetry source %s failed: %s", source.name, exc)
            continue
        extra.update(reading.pop("extra", {}))
        fields.update({k: v for k, v in reading.items() if v is not None})
    return Telemetry(agent=agent, ts=ts, interval_s=interval_s, extra=extra, **fields)


class TelemetryPublisher:
    """Samples the sources every ``interval_s`` and hands the messages to ``publish``.

    ``live`` (CoLExT's scrape mode): each sample is published as it is taken. ``batch``
    (CoLExT's end-of-run push): samples are kept and published together by :meth:`flush`,
    which the agent calls after each task, so telemetry never shares the link with a
    model or an update (at most ``max_buffered`` are kept; the oldest go first).
    """

    def __init__(
        self,
        agent: str,
        interval_s: float,
        publish: Callable[[Telemetry], Awaitable[None]],
        sources: Sequence[TelemetrySource] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        mode: str = "live",
        max_buffered: int = 10_000,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"telemetry interval must be > 0 s, got {interval_s}")
        if mode not in ("live", "batch"):
            raise ValueError(f"telemetry mode must be live or batch, got {mode!r}")
        self.agent = agent
        self.interval_s = interval_s
        self.publish = publish
        self.sources = list(sources) if sources is not None else default_sources()
        self.clock = clock
        self.mode = mode
        self.buffered: collections.deque[Telemetry] = collections.deque(maxlen=max_buffered)
        self.sent = 0

    async def run(self) -> None:
        """Sample until cancelled, once per interval (not drifting with its cost)."""
        next_at = time.monotonic()
        while True:
            message = await asyncio.to_thread(
                sample, self.agent, self.sources, self.clock(), self.interval_s
            )
            if self.mode == "live":
                await self.publish(message)
                self.sent += 1
            else:
                self.buffered.append(message)
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def flush(self) -> None:
        """Publish the buffered samples (batch mode), oldest first."""
        while self.buffered:
            await self.publish(self.buffered.popleft())
            self.sent += 1
