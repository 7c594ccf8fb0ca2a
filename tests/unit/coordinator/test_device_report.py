"""Per-device round time and energy for `coordinator report`."""

from __future__ import annotations

import json
from pathlib import Path

from coordinator.device_report import DEVICE_PLOTS, device_stats, plot_devices


def round_event(
    n: int, durations: dict[str, float], resources: dict[str, dict[str, float]]
) -> dict:
    return {
        "event": "ROUND_END",
        "round": n,
        "ts": float(n),
        "data": {"durations": durations, "resources": resources},
    }


EVENTS = [
    {"event": "ROUND_BEGIN", "round": 1, "ts": 0.0, "data": {}},
    round_event(1, {"a": 1.0, "b": 3.0}, {"a": {"peak_rss_mb": 100.0}, "b": {"energy_j": 12.0}}),
    round_event(2, {"a": 2.0}, {"a": {"peak_rss_mb": 101.0}}),
]


def test_round_times_and_energy_are_gathered_per_agent() -> None:
    stats = device_stats(EVENTS)
    assert list(stats) == ["a", "b"]
    assert stats["a"].round_times == [1.0, 2.0] and stats["a"].median_round_time == 1.5
    assert stats["a"].energy_j == []  # a CPU agent without an energy counter
    assert stats["b"].energy_j == [12.0]


def test_plots_are_drawn_only_for_what_was_measured(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    events = [EVENTS[0], round_event(1, {"a": 1.0}, {"a": {"peak_rss_mb": 100.0}})]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    written = plot_devices([run], tmp_path / "out")
    assert written == [tmp_path / "out" / DEVICE_PLOTS[0]]  # no energy anywhere: no plot
    assert written[0].read_bytes().startswith(b"\x89PNG")
