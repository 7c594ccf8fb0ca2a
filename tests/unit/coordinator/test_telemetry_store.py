"""Telemetry stored per agent as JSON lines; Prometheus series per agent and per job."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from coordinator.metrics_http import TelemetryRecorder
from coordinator.telemetry_store import MetricsRegistry, TelemetryStore
from fedbus.protocol import bus
from fedbus.protocol.messages import JobStatus, Telemetry, decode_json, encode_json


def test_each_agent_gets_its_own_file_one_line_per_message(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "telemetry")
    for ts in (1.0, 2.0):
        store.append(Telemetry(agent="a-1", ts=ts, cpu_percent=50.0))
    store.append(Telemetry(agent="a-2", ts=1.5))
    store.close()
    lines = (tmp_path / "telemetry" / "a-1.jsonl").read_text().splitlines()
    assert [decode_json(Telemetry, line.encode()).ts for line in lines] == [1.0, 2.0]
    assert store.latest["a-2"].ts == 1.5


def test_metrics_carry_per_agent_and_per_job_series() -> None:
    metrics = MetricsRegistry()
    metrics.observe_telemetry(Telemetry(agent="a-1", ts=5.0, cpu_percent=42.0, power_w=7.5))
    metrics.observe_telemetry(Telemetry(agent="a-2", ts=6.0, cpu_percent=10.0))
    metrics.observe_job(
        JobStatus(job="digits", state="running", round=3, rounds=10, last_accuracy=0.8)
    )
    text = generate_latest(metrics.registry).decode()
    assert 'fedbus_agent_cpu_percent{agent="a-1"} 42.0' in text
    assert 'fedbus_agent_cpu_percent{agent="a-2"} 10.0' in text
    assert 'fedbus_agent_power_watts{agent="a-1"} 7.5' in text
    assert 'fedbus_agent_power_watts{agent="a-2"}' not in text  # not measured: no series
    assert 'fedbus_agent_telemetry_messages_total{agent="a-1"} 1.0' in text
    assert 'fedbus_job_rounds_completed{job="digits"} 3.0' in text
    assert 'fedbus_job_accuracy{job="digits"} 0.8' in text


def test_the_recorder_drops_bad_and_misaddressed_messages(tmp_path: Path) -> None:
    recorder = TelemetryRecorder(bus.BrokerSettings(prefix="p"), tmp_path)
    recorder.handle("p/agents/a-1/telemetry", b"{not json")
    recorder.handle("p/agents/a-1/telemetry", encode_json(Telemetry(agent="a-2", ts=1.0)))
    recorder.handle("p/agents/a-1/telemetry", encode_json(Telemetry(agent="a-1", ts=1.0)))
    recorder.store.close()
    assert recorder.dropped == 2
    assert list(recorder.store.latest) == ["a-1"]
    assert not (tmp_path / "telemetry" / "a-2.jsonl").exists()
