"""Run a package's entry points: the Python-callable form and the command (SISO) form.

Callable form (``module:callable``, imported from the package directory)::

    startup() -> None
    train(weights: dict[str, np.ndarray], context: TaskContext)
        -> (weights, num_examples) | (weights, num_examples, metrics)
    validate(weights: dict[str, np.ndarray], context: TaskContext) -> dict[str, float]

Command form (FEDn's single-input single-output), run in the package directory with the
task's context as JSON in the ``FEDBUS_CONTEXT`` environment variable::

    startup:   COMMAND
    train:     COMMAND MODEL_IN.npz MODEL_OUT.npz   (and MODEL_OUT.npz-metadata, JSON:
                                                     {"num_examples": N, "metrics": {...}})
    validate:  COMMAND MODEL_IN.npz METRICS_OUT.json (a JSON object of numbers)

Models travel as ``.npz`` files of named float32 arrays (the global model's names).
``validate`` metrics may include ``num_examples`` (the weight of this agent's numbers when
the coordinator aggregates them), ``loss`` and ``accuracy``; every other key is a custom
metric, kept per agent and aggregated.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedbus.packages import PackageRunError
from fedbus.packages.spec import CommandEntry, EntryPoint
from fedbus.protocol.entry_points import resolve

MAX_METRICS = 64
MAX_METRIC_NAME = 64
COMMAND_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class TaskContext:
    """What a package's train or validate is told about the task it runs."""

    partition: int
    seed: int
    config: dict[str, Any] = field(default_factory=dict)  # the task's TrainConfig fields
    package_dir: str = ""


@dataclass(frozen=True)
class TrainResult:
    weights: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


def activate(package_dir: str | Path) -> None:
    """Make the package's modules importable (its directory first on ``sys.path``)."""
    entry = str(Path(package_dir).resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()


def check_metrics(value: Any, what: str) -> dict[str, float]:
    """``value`` as a bounded dict of finite floats; PackageRunError names what is wrong."""
    if not isinstance(value, Mapping):
        raise PackageRunError(f"{what} must return a mapping of metric names to numbers")
    if len(value) > MAX_METRICS:
        raise PackageRunError(f"{what} returned {len(value)} metrics (at most {MAX_METRICS})")
    metrics: dict[str, float] = {}
    for key, number in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_METRIC_NAME:
            raise PackageRunError(f"{what}: metric name {key!r} is not a short string")
        if isinstance(number, bool) or not isinstance(number, int | float | np.number):
            raise PackageRunError(f"{what}: metric {key!r} is {number!r}, not a number")
        if not math.isfinite(float(number)):
            raise PackageRunError(f"{what}: metric {key!r} is not finite")
        metrics[key] = float(number)
    return metrics


def check_weights(
    weights: Any, reference: Mapping[str, np.ndarray], what: str
) -> dict[str, np.ndarray]:
    if not isinstance(weights, Mapping) or set(weights) != set(reference):
        raise PackageRunError(f"{what} must return the model's arrays under the same names")
    out = {}
    for name, ref in reference.items():
        array = np.asarray(weights[name], dtype=np.float32)
        if array.shape != ref.shape:
            raise PackageRunError(
                f"{what}: array {name!r} has shape {array.shape}, expected {ref.shape}"
            )
        out[name] = array
    return out


def run_startup(entry: EntryPoint, package_dir: Path) -> None:
    if isinstance(entry, CommandEntry):
        _command(entry, package_dir, [], TaskContext(0, 0, package_dir=str(package_dir)))
    else:
        resolve(entry)()


def run_train(
    entry: EntryPoint,
    weights: Mapping[str, np.ndarray],
    context: TaskContext,
    package_dir: Path,
) -> TrainResult:
    if isinstance(entry, CommandEntry):
        return _train_command(entry, weights, context, package_dir)
    returned = resolve(entry)(dict(weights), context)
    if isinstance(returned, TrainResult):
        new, count, metrics = returned.weights, returned.num_examples, returned.metrics
    elif isinstance(returned, tuple) and len(returned) in (2, 3):
        new, count = returned[0], returned[1]
        metrics = returned[2] if len(returned) == 3 else {}
    else:
        raise PackageRunError(f"train {entry!r} must return (weights, num_examples[, metrics])")
    return _train_result(new, count, metrics, weights, f"train {entry!r}")


def run_validate(
    entry: EntryPoint,
    weights: Mapping[str, np.ndarray],
    context: TaskContext,
    package_dir: Path,
) -> dict[str, float]:
    if isinstance(entry, CommandEntry):
        with tempfile.TemporaryDirectory(prefix="fedbus-validate-") as tmp:
            model_in, out = Path(tmp) / "model_in.npz", Path(tmp) / "metrics.json"
            np.savez(model_in, **weights)  # type: ignore[arg-type]  # numpy's stub: ** might name allow_pickle
            _command(entry, package_dir, [str(model_in), str(out)], context)
            return check_metrics(_read_json(out, "validate"), f"validate {entry.command!r}")
    return check_metrics(resolve(entry)(dict(weights), context), f"validate {entry!r}")


def _train_result(
    new: Any, count: Any, metrics: Any, reference: Mapping[str, np.ndarray], what: str
) -> TrainResult:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise PackageRunError(f"{what}: num_examples {count!r} is not a count")
    return TrainResult(
        check_weights(new, reference, what), int(count), check_metrics(metrics or {}, what)
    )


def _train_command(
    entry: CommandEntry,
    weights: Mapping[str, np.ndarray],
    context: TaskContext,
    package_dir: Path,
) -> TrainResult:
    with tempfile.TemporaryDirectory(prefix="fedbus-train-") as tmp:
        model_in, model_out = Path(tmp) / "model_in.npz", Path(tmp) / "model_out.npz"
        np.savez(model_in, **weights)  # type: ignore[arg-type]  # numpy's stub: ** might name allow_pickle
        _command(entry, package_dir, [str(model_in), str(model_out)], context)
        try:
            with np.load(model_out, allow_pickle=False) as archive:
                new = {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as exc:
            raise PackageRunError(
                f"train {entry.command!r} wrote no readable {model_out.name}"
            ) from exc
        meta = _read_json(Path(f"{model_out}-metadata"), "train")
        if not isinstance(meta, dict):
            raise PackageRunError(f"train {entry.command!r}: metadata must be a JSON object")
        return _train_result(
            new, meta.get("num_examples"), meta.get("metrics"), weights, f"train {entry.command!r}"
        )


def _command(entry: CommandEntry, package_dir: Path, args: list[str], context: TaskContext) -> None:
    argv = [*shlex.split(entry.command), *args]
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable  # the agent's interpreter, with fedbus and torch
    env = {**os.environ, "FEDBUS_CONTEXT": json.dumps(asdict(context), default=str)}
    try:
        done = subprocess.run(
            argv,
            cwd=package_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PackageRunError(f"command {entry.command!r} did not run: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-300:]
        raise PackageRunError(f"command {entry.command!r} exited {done.returncode}: {tail}")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PackageRunError(f"{what} wrote no readable {path.name}: {exc}") from exc


def context_from_env() -> TaskContext:
    """In a command-form entry point: the task's context, from ``FEDBUS_CONTEXT``."""
    raw = json.loads(os.environ.get("FEDBUS_CONTEXT", "{}"))
    return TaskContext(**raw)
