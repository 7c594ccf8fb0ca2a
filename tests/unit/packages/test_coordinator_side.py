"""The coordinator's pure parts for packages: metrics summaries, exclusion, job loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coordinator.config import JobConfigError, load_job
from coordinator.metrics import round_entry, summarize
from coordinator.packages import build_command
from coordinator.unable_agents import unable_to_run
from fedbus.protocol.errors import InvalidTopic
from fedbus.protocol.topics import TopicKind, Topics

REPO = Path(__file__).resolve().parents[3]


def test_summary_is_weighted_mean_median_and_spread() -> None:
    per_agent = {"a": {"f1": 0.2, "ppl": 10.0}, "b": {"f1": 0.8}, "c": {"f1": 0.5}}
    summary = summarize(per_agent, {"a": 1, "b": 3, "c": 0})
    assert summary["f1"]["mean"] == pytest.approx((0.2 * 1 + 0.8 * 3) / 4)
    assert summary["f1"]["median"] == pytest.approx(0.5)
    assert (summary["f1"]["min"], summary["f1"]["max"]) == (0.2, 0.8)
    assert summary["f1"]["std"] == pytest.approx(0.2449, abs=1e-4)
    assert summary["ppl"] == {
        "mean": 10.0,
        "median": 10.0,
        "min": 10.0,
        "max": 10.0,
        "std": 0.0,
        "agents": 1.0,
    }


def test_round_entry_is_empty_without_custom_metrics() -> None:
    assert round_entry({"a": {}, "b": {}}, {"a": 1, "b": 1}) == {}
    entry = round_entry({"a": {"x": 1.0}, "b": {}}, {"a": 1, "b": 1}, key="train_metrics")
    assert entry["train_metrics_by_agent"] == {"a": {"x": 1.0}}


def test_only_reasons_that_will_repeat_exclude_an_agent() -> None:
    reasons = {
        "a": "EntryPointError: entry point 'wine:make' cannot import 'wine'",
        "b": "PackageRefused: package 0123... is not trusted by this agent",
        "c": "PackageUnavailable: package 0123... did not arrive within 120 s",
        "d": "training diverged (non-finite loss or weights)",
    }
    assert sorted(unable_to_run(reasons)) == ["a", "b"]


def test_package_topics_round_trip() -> None:
    topics = Topics("p")
    sha = "ab" * 32
    assert topics.parse(topics.package(sha)).package == sha
    chunk = topics.parse(topics.package_chunk(sha, 3))
    assert (chunk.kind, chunk.package) == (TopicKind.PACKAGE_CHUNK, sha)
    assert topics.package_all(sha) == f"p/packages/{sha}/#"
    with pytest.raises(InvalidTopic):
        topics.parse("p/packages/not-a-hash")


def test_job_names_a_package_relative_to_its_file(tmp_path: Path) -> None:
    _, sha, _ = build_command(str(REPO / "packages" / "wine"), str(tmp_path / "w.tar.gz"))
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "j", "package": "w.tar.gz"}))
    config = load_job(job)
    assert config.package == str(tmp_path / "w.tar.gz")
    assert config.package_sha256 == sha
    assert (config.model, config.data) == ("wine_mlp:make_model", "wine_mlp:load_partition")
    # A directory works too (packed on load, same bytes), and a wrong pin is refused.
    job.write_text(yaml.safe_dump({"name": "j", "package": str(REPO / "packages" / "wine")}))
    assert load_job(job).package_sha256 == sha
    job.write_text(yaml.safe_dump({"name": "j", "package": "w.tar.gz", "package_sha256": "0" * 64}))
    with pytest.raises(JobConfigError, match=rf"{job}: field package_sha256: .* not the pinned"):
        load_job(job)
    job.write_text(yaml.safe_dump({"name": "j", "package": "missing.tar.gz"}))
    with pytest.raises(JobConfigError, match=rf"{job}: field package: cannot read"):
        load_job(job)
