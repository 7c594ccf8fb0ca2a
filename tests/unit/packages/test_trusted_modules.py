"""A pinned package makes trusted only the modules it ships, never a name it merely
mentions (a standard-library or installed module named by an entry point)."""

from __future__ import annotations

from pathlib import Path

from edge_agent.packages import LoadedPackage
from fedbus.packages.spec import PackageSpec


def test_only_shipped_modules_become_trusted(tmp_path: Path) -> None:
    (tmp_path / "mymodel.py").write_text("def make_model(): ...\n")
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "__init__.py").write_text("")
    spec = PackageSpec.model_validate(
        {
            "name": "p",
            "model": "mymodel:make_model",
            "data": "mydata.split:load",
            "train": "subprocess:run",  # named, not shipped: must not widen the allowlist
            "validate": "os:system",
        }
    )
    package = LoadedPackage(sha="0" * 64, directory=tmp_path, spec=spec)
    assert package.modules == ("mymodel", "mydata")
    assert not package.ships("subprocess")
