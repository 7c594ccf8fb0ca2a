"""``edge-agent``: one real device (``run``), or N emulated devices in one process (``emulate``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys

from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.model_store import ModelStore
from edge_agent.profile import DataSpec, detect_profile, partition_size
from edge_agent.trainer import LocalTrainer
from fedbus.protocol.broker_args import add_broker_args, broker_settings
from fedbus.protocol.entry_points import DEFAULT_TRUSTED
from fedbus.protocol.messages import Scalar
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
    trainer = LocalTrainer(args.device, trusted=trusted_prefixes(args))
    trainer.warm_up()
    data = data_spec(args)
    size = partition_size(trainer, data, args.partition) if data is not None else None
    profile = detect_profile(trainer.device, partition=args.partition, num_samples=size)
    agent = EdgeAgent(
        AgentIdentity(args.id, args.partition, profile),
        broker_settings(args),
        trainer,
        ModelStore(),
    )
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
        name=args.name,
        data=data_spec(args),
        trusted=trusted_prefixes(args),
    )
    print(f"emulating {len(emulator.agents)} agents of {args.fleet}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(emulator.run())
    return 0


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
    add_data_args(run)
    add_trust_args(run)
    add_broker_args(run)
    run.set_defaults(func=cmd_run)

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
    add_data_args(emulate)
    add_trust_args(emulate)
    add_broker_args(emulate)
    emulate.set_defaults(func=cmd_emulate)

    args = parser.parse_args(argv)
    if args.data_args and not args.data:
        parser.error("--data-args needs --data")
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
