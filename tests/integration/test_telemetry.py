"""Telemetry over a real broker: agents publish at their interval, the coordinator keeps it."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import urllib.request
from pathlib import Path

from coordinator.metrics_http import TelemetryRecorder, serve_metrics, with_telemetry
from fedbus.protocol import bus
from fedbus.protocol.messages import Telemetry, decode_json

from .test_wall_adaptive import AgentSpec, agents

INTERVAL = 0.5
SAMPLES = 5


def stored(path: Path) -> list[Telemetry]:
    if not path.exists():
        return []
    return [decode_json(Telemetry, line.encode()) for line in path.read_text().splitlines()]


async def test_telemetry_arrives_at_its_interval_lands_in_the_run_dir_and_is_scraped(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    recorder = TelemetryRecorder(settings, tmp_path)
    server = serve_metrics(recorder.metrics, 0)
    task = asyncio.create_task(recorder.run())
    try:
        async with asyncio.timeout(10):
            await recorder.subscribed.wait()
        files = [tmp_path / "telemetry" / f"agent-{i}.jsonl" for i in range(2)]
        async with agents(settings, [AgentSpec(), AgentSpec()], telemetry_interval=INTERVAL):
            async with asyncio.timeout(60):
                while min(len(stored(f)) for f in files) < SAMPLES:
                    await asyncio.sleep(0.1)
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.shutdown()
        server.server_close()
    for i, path in enumerate(files):
        messages = stored(path)
        assert all(m.agent == f"agent-{i}" and m.interval_s == INTERVAL for m in messages)
        assert all(m.cpu_percent is not None and m.rss_mb for m in messages)
        stamps = [m.ts for m in messages]
        assert stamps == sorted(stamps)
        # Paced from one start, not from each send: the typical gap is the interval.
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert 0.5 * INTERVAL <= statistics.median(gaps) <= 2 * INTERVAL, gaps
    body = text.decode()
    for i in range(2):
        assert f'fedbus_agent_rss_mb{{agent="agent-{i}"}}' in body
        assert f'fedbus_agent_telemetry_messages_total{{agent="agent-{i}"}}' in body


async def test_a_coordinator_records_telemetry_beside_its_jobs(
    settings: bus.BrokerSettings, tmp_path: Path
) -> None:
    """What `coordinator run|serve` wraps its service in: telemetry lands in RUNS_DIR."""
    path = tmp_path / "telemetry" / "agent-0.jsonl"

    async def until_stored() -> str:
        async with agents(settings, [AgentSpec()], telemetry_interval=INTERVAL):
            async with asyncio.timeout(60):
                while len(stored(path)) < 2:
                    await asyncio.sleep(0.1)
        return "done"

    assert await with_telemetry(until_stored(), settings, tmp_path, metrics_port=0) == "done"
    assert all(m.agent == "agent-0" for m in stored(path))
