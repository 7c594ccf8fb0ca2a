"""``edge-agent package run ENTRY DIR``: run a package's entry point here, as an agent would.

For package authors, before deploying: the model is built from the package's ``model``
entry point (seeded), the partition loaded from its ``data``, and ``train`` or
``validate`` run exactly as an agent runs them (the package's own, or fedbus's built-in
SGD trainer and evaluation when the package gives none). Prints one JSON line.
Also the agent's package flags (``--trust-package``, ``--package-cache``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.packages import (
    DEFAULT_CACHE,
    AgentPackages,
    LoadedPackage,
    PackageTrust,
    train_with_package,
    validate_with_package,
)
from fedbus.packages.cache import PackageCache, check_sha
from fedbus.packages.entry import activate, run_startup
from fedbus.packages.spec import load_spec
from fedbus.protocol.messages import Task, TrainConfig
from fedbus.protocol.params import ParamLayout


def add_trust_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-package",
        action="append",
        default=[],
        metavar="SHA256",
        help="run the compute package with this SHA-256 when a job names it (repeatable)",
    )
    parser.add_argument(
        "--trust-packages-from-coordinator",
        action="store_true",
        help="run any compute package the coordinator's tasks pin by hash (the broker's "
        "ACL must let only the coordinator publish tasks)",
    )
    parser.add_argument(
        "--package-cache",
        default=str(DEFAULT_CACHE),
        help="directory of unpacked packages, one per SHA-256 (default: %(default)s)",
    )


def agent_packages(args: argparse.Namespace) -> AgentPackages:
    hashes = frozenset(check_sha(sha.lower()) for sha in args.trust_package)
    return AgentPackages(
        PackageCache(args.package_cache),
        PackageTrust(hashes, args.trust_packages_from_coordinator),
    )


def cmd_package_run(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    spec = load_spec(directory)
    activate(directory)
    loaded = LoadedPackage("0" * 64, directory, spec)
    if args.entry == "startup":
        if spec.startup is not None:
            run_startup(spec.startup, directory)
        print(json.dumps({"entry": "startup", "ran": spec.startup is not None}))
        return 0
    import torch

    from edge_agent.torch_state import state_to_numpy
    from edge_agent.trainer import LocalTrainer
    from fedbus.protocol.entry_points import resolve

    data_args = json.loads(args.package_data_args)
    if spec.flower_client is not None:
        from edge_agent.flower import initial_parameters

        parts = data_args.get("num_partitions", 1)
        tensors = initial_parameters(spec.flower_client, args.partition, int(parts))
    else:
        torch.manual_seed(args.seed)
        tensors = state_to_numpy(resolve(spec.model_entry)())
    config = TrainConfig(
        model=spec.model_entry,
        data=spec.data_entry,
        data_args=data_args,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    task = Task(
        job="local", round=1, task_id="local", kind=args.entry, model_version=0, config=config
    )
    out: dict[str, Any] = {"entry": args.entry, "package": spec.name}
    # Run here on purpose, from the directory named: the package's own modules are trusted.
    trainer = LocalTrainer("cpu", trusted=loaded.modules)
    if args.entry == "train":
        layout = ParamLayout.from_tensors(tensors)
        if loaded.trains:
            outcome = train_with_package(task, tensors, layout, args.partition, loaded)
        else:
            outcome = trainer.train(config, args.partition, tensors, layout, seed=args.seed)
        out.update(
            num_examples=outcome.num_examples,
            loss=outcome.loss,
            delta_norm=float(np.linalg.norm(outcome.delta)),
            metrics=outcome.extra,
        )
    else:
        if loaded.validates:
            loss, accuracy, count, metrics = validate_with_package(
                task, tensors, args.partition, loaded
            )
        else:
            loss, accuracy, count = trainer.evaluate(config, args.partition, tensors)
            metrics = {}
        out.update(num_examples=count, loss=loss, accuracy=accuracy, metrics=metrics)
    print(json.dumps(out))
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="package_command", required=True)
    run = sub.add_parser("run", help="run one entry point of a package directory locally")
    run.add_argument("entry", choices=["startup", "train", "validate"])
    run.add_argument("dir", help="the package directory (with fedbus.yaml)")
    run.add_argument("--partition", type=int, default=0)
    run.add_argument(
        "--data-args", dest="package_data_args", default="{}", help="the job's data_args (JSON)"
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--local-steps", type=int, default=20)
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--learning-rate", type=float, default=0.05)
    run.set_defaults(func=cmd_package_run)
