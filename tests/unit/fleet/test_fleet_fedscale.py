"""FedScale importer on small pickles written here in FedScale's format."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from fedbus.fleet.builders import build_fedscale
from fedbus.fleet.errors import TraceSourceError
from fedbus.fleet.fedscale import REFERENCE_WORK_PER_SAMPLE, read_behaviour, read_capacity
from fedbus.fleet.time_model import fedscale_completion_time, round_time

CAPACITY = {
    1: {"computation": 100.0, "communication": 2000.0},
    2: {"computation": 50.0, "communication": 8000.0},
    3: {"computation": 20.0, "communication": 500.0},
    # key 0 is missing on purpose: client n with n mod 4 == 0 gets FedScale's default
}
BEHAVE = {
    "u7": {"duration": 100, "inactive": [20, 60], "finish_time": 100, "active": [10, 50],
           "model": "SM-G960F"},
    "u9": {"duration": 50, "inactive": [40], "finish_time": 50, "active": [0], "model": "Pixel"},
}  # fmt: skip


def write(path: Path, data: object) -> Path:
    path.write_bytes(pickle.dumps(data))
    return path


def test_nth_client_uses_key_n_mod_len_and_the_default_when_missing(tmp_path: Path) -> None:
    cap = write(tmp_path / "client_device_capacity", CAPACITY)

    fleet = build_fedscale(cap, None, 8)

    # client n = index + 1 -> key n % 3 (keys 1, 2, 3 -> len 3): 1, 2, 0(missing), 1, 2, ...
    ms = [p.compute_ms_per_sample for p in fleet]
    assert ms == [100.0, 50.0, 1.0, 100.0, 50.0, 1.0, 100.0, 50.0]
    assert [p.partition for p in fleet] == list(range(8))
    assert fleet[0].bandwidth_kbps == 2000.0
    assert fleet[0].static["cpu_flops"] == REFERENCE_WORK_PER_SAMPLE * 1000 / 100.0
    assert fleet[0].static["peak_throughput_mbps"] == 2.0
    assert all(p.active.fraction() == 1.0 for p in fleet)  # no behaviour file: always on


def test_behaviour_uses_the_key_list_position_n_mod_len(tmp_path: Path) -> None:
    cap = write(tmp_path / "cap.pkl", CAPACITY)
    behave = write(tmp_path / "behave.pkl", BEHAVE)

    fleet = build_fedscale(cap, behave, 3)

    # n = 1 -> keys[1] = "u9"; n = 2 -> keys[0] = "u7"; n = 3 -> "u9"
    assert [p.static["model"] for p in fleet] == ["Pixel", "SM-G960F", "Pixel"]
    u7 = fleet[1]
    assert u7.active.cycle == 100
    assert [u7.is_active(t) for t in (5, 10, 19, 30, 55, 155)] == [
        False, True, True, False, True, True,
    ]  # fmt: skip


def test_both_time_models_agree_on_an_imported_profile(tmp_path: Path) -> None:
    fleet = build_fedscale(write(tmp_path / "cap.pkl", CAPACITY), None, 1)
    p = fleet[0]  # 100 ms/sample, 2000 Kbps
    params, batch, steps, model_bytes = REFERENCE_WORK_PER_SAMPLE, 20, 5, 1_000_000

    bliss = round_time(p, 0, model_bytes, model_bytes, 3 * params * batch * steps, None)
    fedscale = fedscale_completion_time(100.0, 2000.0, batch, steps, model_bytes)

    assert bliss.t_comp == pytest.approx(fedscale.t_comp)
    assert bliss.t_dl == pytest.approx(fedscale.t_dl * 1024 / 1000)  # kbit of 1024 bits


def test_malformed_capacity_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path / "cap.pkl", {1: {"computation": 10.0}})

    with pytest.raises(TraceSourceError) as info:
        read_capacity(path)
    assert str(path) in str(info.value)
    assert info.value.field == "[1].communication"


def test_malformed_behaviour_names_the_field(tmp_path: Path) -> None:
    path = write(tmp_path / "b.pkl", {"a": {"active": [1], "inactive": "x", "finish_time": 5}})

    with pytest.raises(TraceSourceError) as info:
        read_behaviour(path)
    assert info.value.field == "['a'].inactive"


class Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_pickles_that_would_run_code_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "evil.pkl", {1: Evil()})

    with pytest.raises(TraceSourceError, match="refusing"):
        read_capacity(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TraceSourceError, match="cannot read"):
        read_capacity(tmp_path / "nope.pkl")
