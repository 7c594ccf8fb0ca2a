"""Seed files: `coordinator seed` writes the weights the coordinator would build from code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from coordinator import seed_model
from coordinator.config import JobConfigError, load_job

BASE = "name: j\nmodel: fedbus.examples.digits:make_model\ndata: fedbus.examples.digits:load_partition\n"


def test_the_seed_command_writes_what_building_from_code_gives(tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(BASE + "seed: 7\n")
    out = tmp_path / "seed.npz"
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "seed", str(job), "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "9,610 parameters" in done.stdout
    built = seed_model.build("fedbus.examples.digits:make_model", 7)
    loaded = seed_model.load(out)
    assert sorted(loaded) == sorted(built)
    assert all(np.array_equal(loaded[k], built[k]) for k in built)
    other = seed_model.build("fedbus.examples.digits:make_model", 8)
    assert not np.array_equal(other["0.weight"], built["0.weight"])


def test_a_job_names_its_seed_file_and_a_missing_one_is_a_config_error(tmp_path: Path) -> None:
    seed_model.save(tmp_path / "s.npz", seed_model.build("fedbus.examples.digits:make_model", 0))
    job = tmp_path / "job.yaml"
    job.write_text(BASE + f"initial_model: {tmp_path / 's.npz'}\n")
    assert load_job(job).initial_model == str(tmp_path / "s.npz")
    job.write_text(BASE + f"initial_model: {tmp_path / 'nope.npz'}\n")
    with pytest.raises(JobConfigError, match=r"job\.yaml: field initial_model: no such file"):
        load_job(job)


@pytest.mark.parametrize(
    ("arrays", "complaint"),
    [
        ({}, "holds no arrays"),
        ({"w": np.zeros(3, dtype=np.float64)}, "float64, not float32"),
        ({"w": np.array([1.0, np.nan], dtype=np.float32)}, "not finite"),
    ],
)
def test_unusable_seed_files_are_rejected_with_the_reason(
    tmp_path: Path, arrays: dict[str, np.ndarray], complaint: str
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(seed_model.SeedModelError, match=complaint):
        seed_model.load(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(seed_model.SeedModelError, match="not a readable"):
        seed_model.load(path)
