"""A package's ``requirements`` are checked on the agent before any of its code runs: a
missing or too old distribution refuses the package with what is missing; installs nothing."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from edge_agent.packages import AgentPackages, PackageTrust
from fedbus.packages import PackageRefused, PackageSpecError
from fedbus.packages.archive import build_archive, sha256_hex
from fedbus.packages.cache import PackageCache
from fedbus.packages.requirements import unmet
from fedbus.packages.spec import load_spec
from fedbus.protocol import bus


def test_unmet_names_what_is_missing_or_too_old() -> None:
    numpy = importlib.metadata.version("numpy")
    assert unmet(["numpy>=1.0", f"numpy=={numpy}"]) == []
    assert unmet(["nosuchdist-fedbus>=1"]) == ["nosuchdist-fedbus>=1 (not installed)"]
    assert unmet(["numpy<1"]) == [f"numpy<1 (installed: {numpy})"]
    assert unmet(['nosuchdist-fedbus; sys_platform == "nosuchplatform"']) == []  # not for here


def test_a_malformed_requirement_is_a_spec_error_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "fedbus.yaml").write_text(
        "name: p\nmodel: m:make_model\ndata: m:load\nrequirements: ['numpy >=> 1']\n"
    )
    with pytest.raises(PackageSpecError, match="requirements"):
        load_spec(tmp_path)


async def test_an_agent_refuses_a_package_it_lacks_requirements_for(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "fedbus.yaml").write_text(
        "name: needy\nmodel: needy:make_model\ndata: needy:load\nstartup: needy:startup\n"
        "requirements: ['numpy>=1', 'nosuchdist-fedbus>=2']\n"
    )
    started = tmp_path / "started"
    (source / "needy.py").write_text(
        f"from pathlib import Path\ndef startup():\n    Path({str(started)!r}).touch()\n"
    )
    payload, _ = build_archive(source)
    sha = sha256_hex(payload)
    cache = PackageCache(tmp_path / "cache")
    cache.install(sha, payload)
    packages = AgentPackages(cache, PackageTrust(frozenset({sha})))

    with pytest.raises(PackageRefused, match=r"nosuchdist-fedbus>=2 \(not installed\)"):
        await packages.ensure(sha, bus.Link(), None)  # type: ignore[arg-type]
    assert not started.exists()  # no code of the package ran
    assert packages.stats.refused
