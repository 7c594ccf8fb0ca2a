"""``edge-agent``: one real device (``run``), or N emulated devices in one process (``emulate``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import sys

from edge_agent import package_cli
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.link_shaper import LinkShaper, parse_rate
from edge_agent.model_store import ModelStore
from edge_agent.profile import DataSpec, detect_profile, partition_size
from edge_agent.trainer import LocalTrainer
from edge_agent.wall_training import WARMUP_STEPS
from fedbus.protocol import env_config
from fedbus.protocol.broker_args import add_broker_args, broker_settings
from fedbus.protocol.entry_points import DEFAULT_TRUSTED
from fedbus.protocol.messages import AgentProfile, Scalar, TrainConfig
from fedbus.protocol.topics import check_id


class UsageError(ValueError):
    """A bad command-line input: printed as one line, exit code 2."""


def check_device(device: str | None) -> None:
    """A device this torch build has, else UsageError (not a traceback at the first task)."""
    if device is None:
        return
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {device!r}: {exc}") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device!r}: this torch build has no usable CUDA device")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device!r}: MPS is not available here")


def trusted_prefixes(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(args.trust) if args.trust else DEFAULT_TRUSTED


def cmd_run(args: argparse.Namespace) -> int:
    check_id(args.id, "agent id")
    check_device(args.device)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    trainer = LocalTrainer(args.device, slowdown=args.slowdown, trusted=trusted_prefixes(args))
    trainer.warm_up()
    data = data_spec(args)
    size = partition_size(trainer, data, args.partition) if data is not None else None
    profile = detect_profile(trainer.device, partition=args.partition, num_samples=size)
    step_s = None
    if args.model is not None and data is not None:
        # Timed on the job's model before any task: the selectors register this agent
        # with a measured duration instead of a default one.
        config = TrainConfig(model=args.model, data=data.data, data_args=dict(data.data_args))
        step_s = trainer.measure_step_seconds(config, args.partition, WARMUP_STEPS)
        profile = profile.model_copy(update={"static": {**profile.static, "step_time_s": step_s}})
    profile = advertise(profile, args)
    flower = None
    if args.flower_client:
        from edge_agent.flower import FlowerClientRunner

        sys.path.append(os.getcwd())  # the client's module, beside where the agent runs
        flower = FlowerClientRunner(args.flower_client, args.num_partitions)
    agent = EdgeAgent(
        AgentIdentity(args.id, args.partition, profile),
        broker_settings(args),
        trainer,
        ModelStore(),
        shaper=LinkShaper(args.link) if args.link is not None else None,
        telemetry_interval=args.telemetry_interval,
        telemetry_mode=args.telemetry_mode,
        packages=package_cli.agent_packages(args),
        train_fn=flower.train if flower else None,
        validate_fn=flower.validate if flower else None,
    )
    if step_s is not None:
        agent.measurements.observe_steps(args.model, WARMUP_STEPS, step_s * WARMUP_STEPS)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent.run())
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    import torch

    from edge_agent.emulation import Emulator
    from fedbus.fleet import load_fleet
    from fedbus.fleet.errors import FleetError

    torch.set_num_threads(args.threads or 1)
    try:
        fleet = load_fleet(args.fleet)
    except FleetError as exc:
        raise UsageError(f"--fleet: {exc}") from exc
    emulator = Emulator(
        fleet,
        broker_settings(args),
        count=args.count,
        offset=args.offset,
        device=args.device,
        name=args.name,
        data=data_spec(args),
        packages=package_cli.agent_packages(args),
        trusted=trusted_prefixes(args),
    )
    print(f"emulating {len(emulator.agents)} agents of {args.fleet}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(emulator.run())
    return 0


def advertise(profile: AgentProfile, args: argparse.Namespace) -> AgentProfile:
    """What the multi-job scheduler matches jobs' ``requires:`` against: the operator's
    tags and capacity, and the GPU's memory when training on one."""
    update: dict[str, object] = {"tags": list(args.tag), "capacity": args.capacity}
    if profile.torch_device.startswith("cuda") and profile.gpu_memory_gb is None:
        import torch

        props = torch.cuda.get_device_properties(torch.device(profile.torch_device))
        update["gpu_memory_gb"] = round(props.total_memory / 2**30, 2)
    return AgentProfile.model_validate({**profile.model_dump(), **update})


def parse_tag(text: str) -> str:
    """``--tag``: a label as ids are (1-64 of A-Z a-z 0-9 _ . : @ = -)."""
    try:
        check_id(text, "tag")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if len(text) > 64:
        raise argparse.ArgumentTypeError(f"tag {text!r} is longer than 64 characters")
    return text


def parse_capacity(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"capacity must be a whole number 1-64, got {text!r}")
    return value


def cmd_flower_seed(args: argparse.Namespace) -> int:
    from edge_agent.flower import cmd_seed

    return cmd_seed(args.client_fn, args.out, args.num_partitions)


def parse_data_args(text: str) -> dict[str, Scalar]:
    """``--data-args``: a JSON object of scalars, as a job's ``data_args``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(
        v is None or isinstance(v, str | int | float | bool) for v in value.values()
    ):
        raise argparse.ArgumentTypeError("must be a JSON object of scalars")
    return value


def slowdown_factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not (math.isfinite(value) and value >= 1.0):
        raise argparse.ArgumentTypeError(f"must be a number >= 1, got {text!r}")
    return value


def link_rate(text: str) -> float:
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def data_spec(args: argparse.Namespace) -> DataSpec | None:
    return DataSpec(args.data, args.data_args) if args.data else None


def add_trust_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust",
        action="append",
        metavar="MODULE_PREFIX",
        help="module prefix whose entry points tasks may name (repeatable; default: "
        f"{', '.join(DEFAULT_TRUSTED)}); a task naming anything else fails with the reason",
    )


def add_data_args(parser: argparse.ArgumentParser) -> None:
    # The coordinator registers agents with its selector before any task tells them the
    # job's data: only an agent told up front can report its sample count in its profile.
    parser.add_argument(
        "--data",
        default=None,
        help="the job's data entry point (module:callable), to report the partition's "
        "training-set size in the agent's profile (selectors start from it)",
    )
    parser.add_argument(
        "--data-args",
        type=parse_data_args,
        default={},
        help="the job's data_args as a JSON object (with --data)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="run in this directory: relative data paths in a job's data_args are read from it",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one agent on this device")
    run.add_argument(
        "--id", required=True, help="agent id (fixed: it names the persistent session)"
    )
    run.add_argument("--partition", type=int, default=0, help="data partition index of this agent")
    run.add_argument(
        "--device", default=None, help="torch device (default: cuda when present, else cpu)"
    )
    run.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    run.add_argument(
        "--tag",
        action="append",
        type=parse_tag,
        default=[],
        help="a label jobs can require (requires: {tags: [...]}); repeat for several",
    )
    run.add_argument(
        "--capacity",
        type=parse_capacity,
        default=1,
        help="jobs this agent works for at once (default 1)",
    )
    # Test aids: make agents on one machine as different as a fleet of devices.
    run.add_argument(
        "--slowdown",
        type=slowdown_factor,
        default=1.0,
        help="test aid: make every computation X times slower with real sleeps (default 1)",
    )
    run.add_argument(
        "--link",
        type=link_rate,
        default=None,
        help="test aid: shape this agent's own sends and receives to a rate, e.g. 2mbit "
        "(token bucket, real sleeps; default: unshaped)",
    )
    run.add_argument(
        "--telemetry-mode",
        choices=("live", "batch"),
        default="live",
        help="live: publish each sample as taken; batch: keep them and publish after each "
        "task, off the training rounds' link time (default live)",
    )
    run.add_argument(
        "--model",
        default=None,
        help="the job's model entry point (with --data): time SGD steps on it at start-up, "
        "so the agent's profile carries a measured step time before its first task",
    )
    run.add_argument(
        "--telemetry-interval",
        type=float,
        default=10.0,
        help="seconds between telemetry messages (CPU, memory, network; GPU and Jetson "
        "sensors where present); 0: none (default 10)",
    )
    add_data_args(run)
    run.add_argument(
        "--flower-client",
        default=None,
        metavar="MODULE:CLIENT_FN",
        help="run this Flower client_fn (NumPyClient or Client) unchanged: train tasks call "
        "its fit, validate tasks its evaluate (needs flwr: pip install 'fedbus[flower]')",
    )
    run.add_argument(
        "--num-partitions",
        type=int,
        default=1,
        help="the Flower context's num-partitions (its partition-id is --partition)",
    )
    package_cli.add_trust_args(run)
    add_trust_args(run)
    add_broker_args(run)
    run.set_defaults(func=cmd_run)

    package_cli.configure(sub.add_parser("package", help="run a compute package locally"))

    seed = sub.add_parser(
        "flower-seed", help="a Flower client's initial parameters as a job's seed file"
    )
    seed.add_argument("client_fn", metavar="MODULE:CLIENT_FN")
    seed.add_argument("--out", default="flower-seed.npz")
    seed.add_argument("--num-partitions", type=int, default=1)
    seed.set_defaults(func=cmd_flower_seed)

    emulate = sub.add_parser("emulate", help="run N emulated agents of a fleet file in one process")
    emulate.add_argument("--fleet", required=True, help="fleet file (fedbus-fleet build ...)")
    emulate.add_argument(
        "--count", type=int, default=None, help="how many (default: the whole fleet)"
    )
    emulate.add_argument("--offset", type=int, default=0, help="first fleet index to emulate")
    emulate.add_argument(
        "--name", default="emulator", help="client-id prefix of the model listener"
    )
    emulate.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    emulate.add_argument(
        "--device", default="cpu", help="torch device the emulated agents train on (cpu, cuda)"
    )
    add_data_args(emulate)
    package_cli.add_trust_args(emulate)
    add_trust_args(emulate)
    add_broker_args(emulate)
    emulate.set_defaults(func=cmd_emulate)

    env_config.apply_environment(parser, env_config.EDGE_AGENT)  # FEDBUS_*; flags win
    args = parser.parse_args(argv)
    if getattr(args, "data_args", None) and not getattr(args, "data", None):
        parser.error("--data-args needs --data")
    if getattr(args, "data_dir", None):
        # Jobs name data files relative to where the agent runs (data_args path: ...).
        try:
            os.chdir(args.data_dir)
        except OSError as exc:
            parser.error(f"--data-dir {args.data_dir}: {exc.strerror or exc}")
    if getattr(args, "model", None) and not args.data:
        parser.error("--model needs --data (the step is timed on this agent's partition)")
    if getattr(args, "telemetry_interval", 0.0) < 0:
        parser.error("--telemetry-interval must be >= 0")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (ValueError, OSError) as exc:  # UsageError, a bad id, an unreadable file
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
