"""Fleet files: round trip, compression, speed, and errors that name file and field."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from fleet_factories import make_profile

from fedbus.fleet.builders import build_synthetic
from fedbus.fleet.errors import FleetFileError
from fedbus.fleet.fleet_file import load_fleet, save_fleet
from fedbus.fleet.profile import Fleet


def small_fleet() -> Fleet:
    return build_synthetic(5, seed=3, availability="mobile")


@pytest.mark.parametrize("name", ["fleet.json", "fleet.json.gz"])
def test_round_trip_is_exact(tmp_path: Path, name: str) -> None:
    fleet = small_fleet()
    path = tmp_path / name

    save_fleet(path, fleet)
    loaded = load_fleet(path)

    assert loaded == fleet
    assert [p.trace for p in loaded] == [p.trace for p in fleet]
    assert [p.active for p in loaded] == [p.active for p in fleet]


def test_gz_is_gzip_and_reproducible(tmp_path: Path) -> None:
    save_fleet(tmp_path / "a.json.gz", small_fleet())
    save_fleet(tmp_path / "b.json.gz", small_fleet())

    raw = (tmp_path / "a.json.gz").read_bytes()
    assert raw == (tmp_path / "b.json.gz").read_bytes()
    assert json.loads(gzip.decompress(raw))["format"] == "fedbus-fleet"


def test_optional_fedscale_fields_round_trip(tmp_path: Path) -> None:
    base = make_profile(active=[(10, 20)], cycle=100)
    profile = type(base)(
        "x", 4, base.static, base.trace, base.active,
        compute_ms_per_sample=80.0, bandwidth_kbps=1500.0,
    )  # fmt: skip
    save_fleet(tmp_path / "f.json", Fleet((profile,), "fedscale"))

    loaded = load_fleet(tmp_path / "f.json")[0]

    assert (loaded.compute_ms_per_sample, loaded.bandwidth_kbps) == (80.0, 1500.0)
    assert loaded.active.intervals() == [(10.0, 20.0)]


def _edit(tmp_path: Path, change: Any) -> Path:
    path = tmp_path / "fleet.json"
    save_fleet(path, small_fleet())
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["clients"][2]["static"].pop("cpu_flops"), "clients[2].static.cpu_flops"),
        (lambda d: d["clients"][1]["static"].update(ram_gb="lots"), "clients[1].static.ram_gb"),
        (lambda d: d["clients"][0].update(colour="red"), "clients[0].colour"),
        (lambda d: d["clients"][3]["rate"]["times"].reverse(), "clients[3].rate.times"),
        (lambda d: d["clients"][0]["state"]["battery"].pop(), "clients[0].state.battery"),
        (lambda d: d["clients"][4]["active"]["windows"].reverse(), "clients[4].active.windows"),
        (lambda d: d["clients"][4].update(client_id="c00000"), "clients[4].client_id"),
        (lambda d: d["clients"][0].update(client_id="a/b"), "clients[0].client_id"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(format="something"), "format"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, change: Any, field: str) -> None:
    path = _edit(tmp_path, change)

    with pytest.raises(FleetFileError) as info:
        load_fleet(path)

    assert info.value.field == field
    assert str(info.value).startswith(f"{path}: {field}: ")


def test_unreadable_and_non_json_files(tmp_path: Path) -> None:
    with pytest.raises(FleetFileError, match="cannot read"):
        load_fleet(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FleetFileError, match=r"bad\.json: Invalid JSON"):
        load_fleet(tmp_path / "bad.json")
    (tmp_path / "bad.json.gz").write_bytes(b"plain")
    with pytest.raises(FleetFileError, match="gzip"):
        load_fleet(tmp_path / "bad.json.gz")


def test_unsupported_version_says_so(tmp_path: Path) -> None:
    path = _edit(tmp_path, lambda d: d.update(version=2))

    with pytest.raises(FleetFileError, match="unsupported version 2; this fedbus reads 1"):
        load_fleet(path)


def test_a_thousand_clients_round_trip(tmp_path: Path) -> None:
    # How fast they load is a figure for bench/fleet_scale.py, not an assert here.
    path = tmp_path / "big.json.gz"
    built = build_synthetic(1000, seed=1)
    save_fleet(path, built)

    fleet = load_fleet(path)

    assert len(fleet) == 1000
    assert fleet == built
