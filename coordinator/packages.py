"""The coordinator's side of compute packages: a job names one, agents receive it pinned.

A job file names its package (``package: wine.tar.gz``, or a package directory, built on
the fly) relative to the job file; the hash is computed when the job is loaded and written
into the job as ``package_sha256`` (a hash given in the file must match: a job can pin the
exact build it was tested with). The job's ``model`` and ``data`` default to the package's.

When the job runs, the archive is published once, retained, on the package's own topic
(chunked when large), and every task pins its hash. The coordinator never imports the
package's code into its own process: the initial weights are built by a short child
process with the unpacked package on its path.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coordinator import seed_model
from fedbus.packages import PackageError
from fedbus.packages.archive import build_archive, sha256_hex
from fedbus.packages.cache import PackageCache
from fedbus.packages.spec import load_spec

if TYPE_CHECKING:
    from coordinator.config import JobConfig
    from coordinator.publish import Publish
    from fedbus.protocol.topics import Topics

SEED_TIMEOUT_S = 600.0
# Package directories named by jobs are packed when the job is loaded, into here.
BUILT_DIR = Path.home() / ".cache" / "fedbus" / "built"


def read_package(path: str | Path) -> bytes:
    """The archive's bytes: a ``.tar.gz`` file as it is, a directory packed now."""
    path = Path(path)
    if path.is_dir():
        return build_archive(path)[0]
    return path.read_bytes()


def apply_package(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The job's fields with its package resolved: absolute path, hash, model and data.

    Raises ValueError naming the field (the caller adds the file).
    """
    if not data.get("package"):
        return data
    base = Path(source).parent if Path(source).exists() else Path.cwd()
    path = (base / str(data["package"])).resolve()
    try:
        payload = read_package(path)
        if path.is_dir():
            spec = load_spec(path)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                spec = load_spec(PackageCache(tmp).install(sha256_hex(payload), payload))
    except OSError as exc:
        raise ValueError(f"field package: cannot read {path}: {exc.strerror}") from exc
    except PackageError as exc:
        raise ValueError(f"field package: {exc}") from exc
    sha = sha256_hex(payload)
    if path.is_dir():
        # The job runs what the directory held when it was loaded, whatever changes there
        # later (a run directory, an edit): the snapshot is the job's package from now on.
        path = BUILT_DIR / f"{sha}.tar.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    pinned = data.get("package_sha256")
    if pinned is not None and pinned != sha:
        raise ValueError(f"field package_sha256: {path} hashes to {sha}, not the pinned {pinned}")
    return {
        **data,
        "package": str(path),
        "package_sha256": sha,
        "model": data.get("model") or spec.model_entry,
        "data": data.get("data") or spec.data_entry,
    }


def package_payload(path: str, sha: str) -> bytes:
    """The job's archive, checked against the hash the job was loaded with."""
    payload = read_package(path)
    actual = sha256_hex(payload)
    if actual != sha:
        raise RuntimeError(
            f"package {path} changed since the job was loaded ({actual[:12]}..., "
            f"pinned {sha[:12]}...); submit the job again"
        )
    return payload


_SEED_SCRIPT = """
import sys
from pathlib import Path
from coordinator import seed_model
from fedbus.packages.entry import activate
from fedbus.packages.spec import load_spec
activate(sys.argv[1])
flower = load_spec(sys.argv[1]).flower_client
if flower is not None and sys.argv[2] == flower:  # a Flower client: its own parameters
    from edge_agent.flower import initial_parameters
    tensors = initial_parameters(flower, 0, int(sys.argv[5]))
else:
    tensors = seed_model.build(sys.argv[2], int(sys.argv[3]))
seed_model.save(Path(sys.argv[4]), tensors)
"""


def initial_model(
    payload: bytes, sha: str, model: str, seed: int, work_dir: Path, num_partitions: int = 1
) -> dict[str, np.ndarray]:
    """``model``'s seeded initial weights, built in a child process from the package."""
    directory = PackageCache(work_dir / "packages").install(sha, payload)
    out = work_dir / "package-seed.npz"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _SEED_SCRIPT,
            str(directory),
            model,
            str(seed),
            str(out),
            str(num_partitions),
        ],
        capture_output=True,
        text=True,
        timeout=SEED_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"package {sha[:12]}...: building the initial model {model!r} failed: "
            f"{done.stderr.strip()[-500:]}"
        )
    return seed_model.load(out)


def build_command(directory: str, out: str | None) -> tuple[Path, str, int]:
    """``coordinator package build``: write the archive; (path, sha, size)."""
    payload, spec = build_archive(directory)
    target = Path(out) if out else Path(f"{spec.name}.tar.gz")
    target.write_bytes(payload)
    return target, sha256_hex(payload), len(payload)


def initial_model_of_job(config: JobConfig, run_dir: Path) -> dict[str, np.ndarray]:
    """The job's initial weights from its package (a worker thread: reads and unpacks)."""
    assert config.package is not None and config.package_sha256 is not None
    payload = package_payload(config.package, config.package_sha256)
    parts = config.data_args.get("num_partitions", 1)
    return initial_model(
        payload,
        config.package_sha256,
        config.model,
        config.seed,
        run_dir,
        parts if isinstance(parts, int) and not isinstance(parts, bool) else 1,
    )


def initial_model_of(config: JobConfig, run_dir: Path) -> dict[str, np.ndarray]:
    """A new job's weights: its seed file's, its package's, or its model entry point's."""
    if config.initial_model is not None:
        return seed_model.load(config.initial_model)
    if config.package is not None and config.package_sha256 is not None:
        return initial_model_of_job(config, run_dir)
    return seed_model.build(config.model, config.seed)


async def publish_job_package(config: JobConfig, topics: Topics, publish: Publish) -> None:
    """Publish the job's package retained on its topic, before any task names it."""
    if config.package is None or config.package_sha256 is None:
        return
    sha = config.package_sha256
    payload = await asyncio.to_thread(package_payload, config.package, sha)
    await publish(
        topics.package(sha), payload, 1, True, lambda index: topics.package_chunk(sha, index)
    )


def make_job_dir_importable(job_file: Path) -> None:
    """Put the job file's directory on ``sys.path``: ``model: my_model:make_model`` finds
    ``my_model.py`` beside the job without PYTHONPATH (on the coordinator; agents get code
    by installing it or from a package)."""
    directory = str(job_file.resolve().parent)
    if directory not in sys.path:
        sys.path.append(directory)
