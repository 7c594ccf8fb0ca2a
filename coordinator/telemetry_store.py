"""Agent telemetry and job status, kept: JSON lines per agent, gauges per agent and job.

:class:`TelemetryStore` appends each agent's Telemetry messages to
``RUNS_DIR/telemetry/{agent}.jsonl`` (one JSON object a line, as received) and keeps the
latest per agent. :class:`MetricsRegistry` turns the latest telemetry and each job's
retained status into Prometheus series on its own ``prometheus_client`` registry (so two
coordinators in one process, or tests, never share series).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

from prometheus_client import CollectorRegistry, Counter, Gauge

from fedbus.protocol.messages import JobStatus, Telemetry
from fedbus.protocol.topics import check_id

# Telemetry field -> (metric name, help). Every one is a gauge labelled by agent.
AGENT_GAUGES: dict[str, tuple[str, str]] = {
    "cpu_percent": ("fedbus_agent_cpu_percent", "host CPU utilisation, percent"),
    "mem_used_mb": ("fedbus_agent_memory_used_mb", "host memory in use, MiB"),
    "rss_mb": ("fedbus_agent_rss_mb", "agent process resident memory, MiB"),
    "net_sent_bytes": ("fedbus_agent_net_sent_bytes", "host network bytes sent since boot"),
    "net_recv_bytes": ("fedbus_agent_net_recv_bytes", "host network bytes received since boot"),
    "gpu_util_percent": ("fedbus_agent_gpu_util_percent", "GPU utilisation, percent"),
    "gpu_mem_used_mb": ("fedbus_agent_gpu_memory_used_mb", "GPU memory in use, MiB"),
    "gpu_temp_c": ("fedbus_agent_gpu_temperature_celsius", "GPU temperature"),
    "power_w": ("fedbus_agent_power_watts", "board or GPU power draw"),
    "ts": ("fedbus_agent_last_telemetry_timestamp_seconds", "agent's time of its last sample"),
}
JOB_GAUGES: dict[str, tuple[str, str]] = {
    "round": ("fedbus_job_rounds_completed", "rounds completed, failed ones included"),
    "rounds": ("fedbus_job_rounds_configured", "rounds the job runs"),
    "model_version": ("fedbus_job_model_version", "global model version"),
    "last_accuracy": ("fedbus_job_accuracy", "last validation accuracy"),
    "last_loss": ("fedbus_job_loss", "last validation loss"),
    "late": ("fedbus_job_late_answers", "answers that came after their round closed"),
}


class TelemetryStore:
    """Appends telemetry per agent under ``root`` and remembers each agent's latest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.latest: dict[str, Telemetry] = {}
        self._files: dict[str, IO[str]] = {}

    def path(self, agent: str) -> Path:
        return self.root / f"{check_id(agent, 'agent id')}.jsonl"

    def append(self, message: Telemetry) -> None:
        out = self._files.get(message.agent)
        if out is None:
            self.root.mkdir(parents=True, exist_ok=True)
            out = self._files[message.agent] = self.path(message.agent).open("a")
        out.write(message.model_dump_json() + "\n")
        out.flush()  # a reader (a test, `coordinator report`) sees each line as it lands
        self.latest[message.agent] = message

    def close(self) -> None:
        for out in self._files.values():
            out.close()
        self._files.clear()


class MetricsRegistry:
    """Per-agent and per-job Prometheus series, updated from messages."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._agent = {
            field: Gauge(name, text, ["agent"], registry=self.registry)
            for field, (name, text) in AGENT_GAUGES.items()
        }
        self._messages = Counter(
            "fedbus_agent_telemetry_messages",
            "telemetry messages received",
            ["agent"],
            registry=self.registry,
        )
        self._job = {
            field: Gauge(name, text, ["job"], registry=self.registry)
            for field, (name, text) in JOB_GAUGES.items()
        }
        self._job_running = Gauge(
            "fedbus_job_running", "1 while the job runs", ["job"], registry=self.registry
        )

    def observe_telemetry(self, message: Telemetry) -> None:
        self._messages.labels(agent=message.agent).inc()
        for field, gauge in self._agent.items():
            value = getattr(message, field)
            if value is not None:
                gauge.labels(agent=message.agent).set(float(value))

    def observe_job(self, status: JobStatus) -> None:
        for field, gauge in self._job.items():
            value = getattr(status, field)
            if value is not None:
                gauge.labels(job=status.job).set(float(value))
        self._job_running.labels(job=status.job).set(1.0 if status.state == "running" else 0.0)
