"""The ``fedbus-fleet`` command, called in-process through ``main(argv)``."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from fleet_factories import TRACES_DIR

from fedbus.fleet.cli import main
from fedbus.fleet.fleet_file import load_fleet


def test_build_synthetic_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "f.json.gz"

    assert main(["build", "synthetic", "--count", "20", "--seed", "1", "--out", str(out)]) == 0
    assert len(load_fleet(out)) == 20
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fleet: 20 clients, source synthetic, seed 1" in text
    assert "mean availability" in text


def test_build_lab_is_always_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lab.json"

    assert (
        main(["build", "synthetic", "--count", "4", "--availability", "lab", "--out", str(out)])
        == 0
    )
    assert "100.0% of the time online; 4 always on" in capsys.readouterr().out


def test_build_fedscale(tmp_path: Path) -> None:
    cap = tmp_path / "cap.pkl"
    cap.write_bytes(pickle.dumps({0: {"computation": 80.0, "communication": 3000.0}}))
    out = tmp_path / "fs.json"

    assert (
        main(["build", "fedscale", "--capacity", str(cap), "--count", "3", "--out", str(out)]) == 0
    )
    assert [p.compute_ms_per_sample for p in load_fleet(out)] == [80.0] * 3


@pytest.mark.skipif(not TRACES_DIR.is_dir(), reason=f"real trace files not present at {TRACES_DIR}")
def test_build_flash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flash.json.gz"
    argv = ["build", "flash", "--traces", str(TRACES_DIR), "--count", "25", "--seed", "2"]

    assert main([*argv, "--out", str(out)]) == 0
    assert "ms/sample" in capsys.readouterr().out
    assert load_fleet(out).source == "flash"


def test_errors_exit_1_with_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent"

    code = main(["build", "flash", "--traces", str(missing), "--count", "2", "--out", "x.json"])

    assert code == 1
    assert str(missing) in capsys.readouterr().err
    assert main(["show", str(tmp_path / "nope.json")]) == 1


def test_bad_usage_exits_2_and_help_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["build", "synthetic", "--count", "0", "--out", "x"]) == 2
    assert main(["--help"]) == 0
    assert "fedbus-fleet" in capsys.readouterr().out
