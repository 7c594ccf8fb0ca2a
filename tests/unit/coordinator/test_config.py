from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import JobConfigError, load_job

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


BASE = "name: j\nmodel: fedbus.examples.digits:make_model\ndata: fedbus.examples.digits:load_partition\n"


def test_shipped_job_loads() -> None:
    config = load_job(REPO / "jobs" / "digits.yaml")
    assert config.name == "digits"
    assert config.dispatch_count == 7  # floor(6 * 1.3)


def test_error_names_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "rounds: 0\n")
    with pytest.raises(JobConfigError) as info:
        load_job(path)
    assert str(path) in str(info.value) and "field rounds" in str(info.value)


def test_unknown_field_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match="field roundz"):
        load_job(write(tmp_path, BASE + "roundz: 3\n"))


def test_nested_field_and_cross_field_errors(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match=r"field aggregator\.name"):
        load_job(write(tmp_path, BASE + "aggregator: {name: mean}\n"))
    with pytest.raises(JobConfigError, match="clients_required"):
        load_job(write(tmp_path, BASE + "num_participants: 2\nclients_required: 3\n"))
    with pytest.raises(JobConfigError, match="fleet"):
        load_job(write(tmp_path, BASE + "clock: virtual\n"))


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match="not valid YAML"):
        load_job(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(JobConfigError, match="cannot read"):
        load_job(tmp_path / "missing.yaml")
    with pytest.raises(JobConfigError, match="job name"):
        load_job(write(tmp_path, BASE.replace("name: j", "name: a/b")))


def test_selector_and_aggregator_knobs_are_checked_at_load(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match=r"field selector\.round_threshold"):
        load_job(write(tmp_path, BASE + "selector: {name: oort, round_threshold: -5}\n"))
    with pytest.raises(JobConfigError, match=r"field selector\.name"):
        load_job(write(tmp_path, BASE + "selector: {name: fastest}\n"))
    with pytest.raises(JobConfigError, match=r"field aggregator.*trim"):
        load_job(write(tmp_path, BASE + "aggregator: {name: median, trim_frac: 0.1}\n"))
    ok = load_job(write(tmp_path, BASE + "selector: {name: oort, round_threshold: 10}\n"))
    assert ok.selector.knobs == {"round_threshold": 10}


def test_a_pacing_selector_starts_from_the_jobs_t_budget(tmp_path: Path) -> None:
    from client_selectors import make_selector

    bliss = load_job(write(tmp_path, BASE + "t_budget: 12.5\nselector: {name: bliss}\n"))
    assert bliss.selector_knobs["t_budget"] == 12.5
    assert make_selector("bliss", bliss.selector_knobs, 0).t_budget == 12.5
    own = load_job(
        write(tmp_path, BASE + "t_budget: 12.5\nselector: {name: bliss, t_budget: 40}\n")
    )
    assert own.selector_knobs["t_budget"] == 40  # a knob given explicitly wins
    oort = load_job(write(tmp_path, BASE + "t_budget: 12.5\nselector: {name: oort}\n"))
    assert "t_budget" not in oort.selector_knobs  # Oort has no budget knob to fill


def test_server_side_test_data_is_an_entry_point(tmp_path: Path) -> None:
    with pytest.raises(JobConfigError, match=r"field test_data"):
        load_job(write(tmp_path, BASE + "test_data: not an entry point\n"))
    ok = load_job(write(tmp_path, BASE + "test_data: fedbus.examples.digits:load_test\n"))
    assert ok.test_data == "fedbus.examples.digits:load_test" and ok.eval_overlap
