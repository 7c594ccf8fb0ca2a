"""Package spec, archive, cache and entry points: no network, no broker."""

from __future__ import annotations

import io
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedbus.packages import PackageRefused, PackageRunError, PackageSpecError
from fedbus.packages.archive import build_archive, extract_archive, sha256_hex
from fedbus.packages.cache import PackageCache
from fedbus.packages.entry import TaskContext, check_metrics, run_train, run_validate
from fedbus.packages.spec import CommandEntry, load_spec


def write_package(root: Path, spec: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "fedbus.yaml").write_text(textwrap.dedent(spec))
    for name, text in (files or {}).items():
        (root / name).write_text(textwrap.dedent(text))
    return root


SPEC = "name: tiny\nmodel: tiny_mod:make_model\ndata: tiny_mod:load\n"


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_spec_errors_name_the_file_and_field(tmp_path: Path) -> None:
    write_package(tmp_path, "name: x\nmodel: not-an-entry\ndata: m:f\ntrain: {cmd: x}\n")
    with pytest.raises(PackageSpecError) as err:
        load_spec(tmp_path)
    text = str(err.value)
    assert f"{tmp_path / 'fedbus.yaml'}: field model:" in text
    assert "field train" in text


def test_spec_reads_both_entry_forms(tmp_path: Path) -> None:
    write_package(tmp_path, SPEC + "train: {command: python train.py}\nvalidate: tiny_mod:val\n")
    spec = load_spec(tmp_path)
    assert spec.train == CommandEntry(command="python train.py")
    assert spec.validate_entry == "tiny_mod:val"


def test_archive_is_deterministic_and_skips_caches(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", SPEC, {"tiny_mod.py": "X = 1\n"})
    first, _ = build_archive(pkg)
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "tiny_mod.cpython-311.pyc").write_bytes(b"junk")
    (pkg / "tiny_mod.py").touch()  # a newer mtime changes nothing
    second, spec = build_archive(pkg)
    assert first == second and spec.name == "tiny"
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert sorted(tar.getnames()) == ["fedbus.yaml", "tiny_mod.py"]


@pytest.mark.parametrize(
    ("name", "kind", "why"),
    [
        ("../evil.py", tarfile.REGTYPE, "outside"),
        ("/etc/evil", tarfile.REGTYPE, "outside"),
        ("link", tarfile.SYMTYPE, "not a plain file"),
    ],
)
def test_unsafe_archives_are_refused(tmp_path: Path, name: str, kind: bytes, why: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    payload = tar_gz([(tarfile.TarInfo("fedbus.yaml"), b"name: x"), (info, b"x")])
    with pytest.raises(PackageRefused, match=why):
        extract_archive(payload, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.py").exists()


def test_oversized_and_garbage_archives_are_refused(tmp_path: Path) -> None:
    payload = tar_gz([(tarfile.TarInfo("fedbus.yaml"), b"x" * 2000)])
    with pytest.raises(PackageRefused, match="more than 1000 bytes"):
        extract_archive(payload, tmp_path / "a", max_bytes=1000)
    with pytest.raises(PackageRefused, match=r"not a \.tar\.gz"):
        extract_archive(b"not an archive", tmp_path / "b")
    with pytest.raises(PackageRefused, match=r"no fedbus\.yaml"):
        extract_archive(tar_gz([(tarfile.TarInfo("a.py"), b"")]), tmp_path / "c")


def test_cache_installs_only_bytes_matching_the_pin(tmp_path: Path) -> None:
    payload, _ = build_archive(write_package(tmp_path / "p", SPEC, {"tiny_mod.py": ""}))
    sha = sha256_hex(payload)
    cache = PackageCache(tmp_path / "cache")
    tampered = bytearray(payload)
    tampered[-10] ^= 1
    with pytest.raises(PackageRefused, match="tampered"):
        cache.install(sha, tampered)
    assert not cache.has(sha)
    path = cache.install(sha, payload)
    assert cache.has(sha) and (path / "tiny_mod.py").is_file()
    assert cache.spec(sha).name == "tiny"
    assert cache.install(sha, payload) == path  # idempotent
    with pytest.raises(PackageRefused, match="SHA-256"):
        cache.path("../../etc")


WEIGHTS = {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}


def test_callable_train_and_validate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = write_package(
        tmp_path / "callable_pkg",
        SPEC,
        {
            "callable_mod.py": """
                def train(weights, context):
                    out = {k: v + context.seed for k, v in weights.items()}
                    return out, 7, {"loss": 0.5}

                def validate(weights, context):
                    return {"num_examples": 3, "perplexity": float(weights["w"].sum())}

                def bad(weights, context):
                    return {"w": weights["w"]}, 1
            """
        },
    )
    monkeypatch.syspath_prepend(str(pkg))
    ctx = TaskContext(partition=1, seed=2)
    result = run_train("callable_mod:train", WEIGHTS, ctx, pkg)
    assert result.num_examples == 7 and result.metrics == {"loss": 0.5}
    np.testing.assert_array_equal(result.weights["w"], np.full((2, 3), 3.0))
    assert run_validate("callable_mod:validate", WEIGHTS, ctx, pkg) == {
        "num_examples": 3.0,
        "perplexity": 6.0,
    }
    with pytest.raises(PackageRunError, match="same names"):
        run_train("callable_mod:bad", WEIGHTS, ctx, pkg)
    sys.modules.pop("callable_mod", None)


def test_command_form_train_and_validate(tmp_path: Path) -> None:
    # FEDn's single-input single-output form: the script gets file paths, never fedbus.
    pkg = write_package(
        tmp_path / "cmd_pkg",
        SPEC,
        {
            "train.py": """
                import json, sys
                import numpy as np
                ctx = json.loads(__import__("os").environ["FEDBUS_CONTEXT"])
                with np.load(sys.argv[1]) as m:
                    out = {k: m[k] * 2 for k in m.files}
                np.savez(sys.argv[2], **out)
                with open(sys.argv[2] + "-metadata", "w") as f:
                    json.dump({"num_examples": 5 + ctx["partition"], "metrics": {"loss": 1.5}}, f)
            """,
            "validate.py": """
                import json, sys
                json.dump({"num_examples": 4, "accuracy": 0.75, "bleu": 0.1}, open(sys.argv[2], "w"))
            """,
            "fail.py": "raise SystemExit('no data here')\n",
        },
    )
    ctx = TaskContext(partition=2, seed=0)
    result = run_train(CommandEntry(command="python train.py"), WEIGHTS, ctx, pkg)
    assert result.num_examples == 7 and result.metrics == {"loss": 1.5}
    np.testing.assert_array_equal(result.weights["w"], np.full((2, 3), 2.0))
    metrics = run_validate(CommandEntry(command="python validate.py"), WEIGHTS, ctx, pkg)
    assert metrics == {"num_examples": 4.0, "accuracy": 0.75, "bleu": 0.1}
    with pytest.raises(PackageRunError, match="no data here"):
        run_train(CommandEntry(command="python fail.py"), WEIGHTS, ctx, pkg)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([1, 2], "mapping"),
        ({"x": "high"}, "not a number"),
        ({"x": float("nan")}, "not finite"),
        ({"x": True}, "not a number"),
        ({"": 1.0}, "short string"),
        ({f"m{i}": 1.0 for i in range(65)}, "at most 64"),
    ],
)
def test_metrics_are_checked(value: object, why: str) -> None:
    with pytest.raises(PackageRunError, match=why):
        check_metrics(value, "validate")


def test_spec_needs_model_and_data_or_a_flower_client(tmp_path: Path) -> None:
    write_package(tmp_path / "a", "name: f\nflower_client: app:client_fn\n")
    spec = load_spec(tmp_path / "a")
    assert (spec.model_entry, spec.data_entry) == ("app:client_fn", "app:client_fn")
    write_package(tmp_path / "b", "name: f\nmodel: m:f\n")
    with pytest.raises(PackageSpecError, match="'model' and 'data', or a 'flower_client'"):
        load_spec(tmp_path / "b")
