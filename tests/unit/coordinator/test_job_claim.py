"""One coordinator per job; one configuration per run directory unless a new run is asked for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.config import parse_job
from coordinator.job_claim import JobClaimed, check_run_dir, claim

BASE = {
    "name": "j",
    "model": "fedbus.examples.digits:make_model",
    "data": "fedbus.examples.digits:load_partition",
}


def test_a_second_claim_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = claim(tmp_path, "j", "coordinator 'c1' (pid 1 on h)")
    with pytest.raises(JobClaimed, match=r"already run by coordinator 'c1' \(pid 1 on h\)"):
        claim(tmp_path, "j", "coordinator 'c2'")
    claim(tmp_path, "other", "coordinator 'c2'").release()  # other jobs are free
    first.release()
    claim(tmp_path, "j", "coordinator 'c2'").release()  # released: free again


def test_the_same_config_resumes_a_changed_one_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "j"
    config = parse_job({**BASE, "rounds": 30}, "<a>")
    assert check_run_dir(run_dir, config, new_run=False) is None
    (run_dir / "events.jsonl").write_text("{}\n")
    assert check_run_dir(run_dir, config, new_run=False) is None  # a restart resumes
    changed = parse_job({**BASE, "rounds": 30, "learning_rate": 0.5}, "<b>")
    with pytest.raises(JobClaimed, match=r"changed: learning_rate.*--new-run"):
        check_run_dir(run_dir, changed, new_run=False)
    assert (run_dir / "events.jsonl").exists()  # nothing was touched


def test_a_new_run_moves_the_old_one_aside(tmp_path: Path) -> None:
    run_dir = tmp_path / "j"
    check_run_dir(run_dir, parse_job({**BASE, "rounds": 30}, "<a>"), new_run=False)
    (run_dir / "events.jsonl").write_text("{}\n")
    changed = parse_job({**BASE, "rounds": 5}, "<b>")
    moved = check_run_dir(run_dir, changed, new_run=True)
    assert moved == tmp_path / "j.run-1" and (moved / "events.jsonl").exists()
    assert not (run_dir / "events.jsonl").exists()
    assert json.loads((run_dir / "job.json").read_text())["rounds"] == 5
