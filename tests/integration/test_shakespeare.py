"""A second kind of task: the Tiny Shakespeare character LM package on four agents.

Its own train and validate run from the package (agents do not have the code); ten
rounds bring the federated perplexity down, and ``coordinator report`` shows it.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from coordinator import report
from coordinator.events import read_events
from coordinator.packages import build_command
from edge_agent.packages import PackageTrust
from fedbus.protocol import bus

from .test_packages import REPO, package_agents, run_job

TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


@pytest.fixture
def clean_lm_path() -> object:
    import sys

    before = list(sys.path)
    yield
    sys.path[:] = before
    sys.modules.pop("char_lm", None)


async def test_char_lm_perplexity_falls_over_ten_rounds(
    settings: bus.BrokerSettings,
    tmp_path: Path,
    clean_lm_path: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not TEXT.is_file():
        pytest.skip(f"{TEXT} is the shared real data; absent in this checkout")
    # Prepare
    _, sha, _ = build_command(str(REPO / "packages" / "shakespeare"), str(tmp_path / "lm.tar.gz"))
    job = tmp_path / "lm.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "lm",
                "package": "lm.tar.gz",
                "data_args": {"path": str(TEXT), "num_partitions": 4},
                "seed": 0,
                "rounds": 10,
                "num_participants": 4,
                "overcommitment": 1.0,
                "min_agents": 4,
                "round_timeout": 120,
                "eval_timeout": 120,
                "local_steps": 20,
                "batch_size": 16,
                "learning_rate": 0.5,
            }
        )
    )
    caches = [tmp_path / f"cache-{i}" for i in range(4)]

    # Execute
    async with package_agents(settings, caches, PackageTrust(frozenset({sha}))):
        assert await run_job(settings, job, tmp_path / "runs")
    capsys.readouterr()
    assert report.main([str(tmp_path / "runs" / "lm"), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out

    # Assert: ten rounds, perplexity falling from near-uniform (65 characters).
    ends = [
        e["data"]
        for e in read_events(tmp_path / "runs" / "lm" / "events.jsonl")
        if e["event"] == "ROUND_END"
    ]
    assert len(ends) == 10 and all(len(d["kept"]) == 4 for d in ends)
    ppl = [d["metrics"]["perplexity"]["mean"] for d in ends]
    assert ppl[0] > 10 and ppl[-1] < 0.75 * ppl[0], ppl
    assert sum(b < a for a, b in itertools.pairwise(ppl)) >= 6, ppl
    assert set(ends[-1]["metrics_by_agent"]) == {f"agent-{i}" for i in range(4)}
    assert "train_perplexity" in ends[-1]["train_metrics"]
    line = re.search(r"lm: perplexity ([\d.]+) \(round 1\) -> ([\d.]+) \(round 10", printed)
    assert line is not None, printed
    assert float(line.group(2)) < float(line.group(1))
    assert (tmp_path / "report" / "custom_metrics.png").stat().st_size > 0
    assert "## Custom metrics" in (tmp_path / "report" / "summary.md").read_text()
