"""Telemetry sources: the host through psutil, a Jetson's sysfs read from a tree of files."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.telemetry import HostSource, JetsonSource, TelemetryPublisher, sample
from fedbus.protocol.messages import Telemetry, decode_json, encode_json


def jetson_tree(root: Path) -> Path:
    """Files shaped like an Orin's: model, one INA3221 with two rails, GPU load, 2 zones."""
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    hwmon = root / "sys/class/hwmon/hwmon1"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text("ina3221\n")
    for channel, label, mv, ma in [(1, "VDD_GPU_SOC", 5000, 1200), (2, "VDD_CPU_CV", 5000, 400)]:
        (hwmon / f"in{channel}_label").write_text(label + "\n")
        (hwmon / f"in{channel}_input").write_text(f"{mv}\n")
        (hwmon / f"curr{channel}_input").write_text(f"{ma}\n")
    (root / "sys/devices/platform/gpu.0").mkdir(parents=True)
    (root / "sys/devices/platform/gpu.0/load").write_text("457\n")
    for i, (kind, milli) in enumerate([("GPU-therm", 48500), ("CPU-therm", 51000)]):
        zone = root / f"sys/class/thermal/thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(kind + "\n")
        (zone / "temp").write_text(f"{milli}\n")
    return root


def test_a_jetson_is_recognised_by_its_device_tree(tmp_path: Path) -> None:
    assert JetsonSource.open(tmp_path) is None  # no device tree: not a Jetson
    assert JetsonSource.open(jetson_tree(tmp_path / "orin")) is not None


def test_jetson_rails_gpu_load_and_temperatures_are_read_from_sysfs(tmp_path: Path) -> None:
    reading = JetsonSource(jetson_tree(tmp_path)).read()
    assert reading["power_w"] == pytest.approx(8.0)  # 6 W GPU/SoC + 2 W CPU
    assert reading["gpu_util_percent"] == pytest.approx(45.7)
    assert reading["gpu_temp_c"] == pytest.approx(48.5)
    assert reading["extra"]["rail_VDD_GPU_SOC_mw"] == pytest.approx(6000.0)
    assert reading["extra"]["temp_cpu_therm_c"] == pytest.approx(51.0)


def test_a_missing_or_garbled_sensor_is_left_out(tmp_path: Path) -> None:
    root = jetson_tree(tmp_path)
    (root / "sys/devices/platform/gpu.0/load").write_text("n/a\n")
    (root / "sys/class/hwmon/hwmon1/curr2_input").unlink()
    reading = JetsonSource(root).read()
    assert "gpu_util_percent" not in reading
    assert reading["power_w"] == pytest.approx(6.0)


def test_host_telemetry_round_trips_as_a_telemetry_message() -> None:
    message = sample("agent-1", [HostSource()], ts=12.5, interval_s=2.0)
    assert message.cpu_percent is not None and 0.0 <= message.cpu_percent <= 100.0
    assert message.rss_mb is not None and message.rss_mb > 10.0  # this process has torch
    assert message.mem_used_mb is not None and message.mem_used_mb > 0.0
    assert decode_json(Telemetry, encode_json(message)) == message


class Broken:
    name = "broken"

    def read(self) -> dict[str, float]:
        raise OSError("sensor unplugged")


def test_a_failing_source_is_dropped_from_the_sample_not_the_agent(tmp_path: Path) -> None:
    message = sample("a", [Broken(), JetsonSource(jetson_tree(tmp_path))], ts=1.0)
    assert message.power_w == pytest.approx(8.0)


async def test_batch_mode_publishes_the_kept_samples_oldest_first_on_flush() -> None:
    published: list[float] = []

    async def publish(message: Telemetry) -> None:
        published.append(message.ts)

    publisher = TelemetryPublisher("a", 1.0, publish, sources=[], mode="batch", max_buffered=2)
    for ts in (1.0, 2.0, 3.0):  # what run() keeps between tasks; the oldest falls out
        publisher.buffered.append(sample("a", [], ts=ts))
    await publisher.flush()
    assert published == [2.0, 3.0] and publisher.sent == 2 and not publisher.buffered


def test_an_unknown_mode_or_interval_is_refused() -> None:
    async def publish(message: Telemetry) -> None: ...

    with pytest.raises(ValueError, match="mode"):
        TelemetryPublisher("a", 1.0, publish, sources=[], mode="sometimes")
    with pytest.raises(ValueError, match="interval"):
        TelemetryPublisher("a", 0.0, publish, sources=[])
