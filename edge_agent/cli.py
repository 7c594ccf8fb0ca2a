"""``edge-agent``: one real device (``run``), or N emulated devices in one process (``emulate``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys

from edge_agent import package_cli
from edge_agent.agent import AgentIdentity, EdgeAgent
from edge_agent.model_store import ModelStore
from edge_agent.profile import DataSpec, detect_profile, partition_size
from edge_agent.trainer import LocalTrainer
from fedbus.protocol.broker_args import add_broker_args, broker_settings
from fedbus.protocol.messages import Scalar
from fedbus.protocol.topics import check_id


def cmd_run(args: argparse.Namespace) -> int:
    check_id(args.id, "agent id")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    trainer = LocalTrainer(args.device)
    trainer.warm_up()
    data = data_spec(args)
    size = partition_size(trainer, data, args.partition) if data is not None else None
    profile = detect_profile(trainer.device, partition=args.partition, num_samples=size)
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
        packages=package_cli.agent_packages(args),
        train_fn=flower.train if flower else None,
        validate_fn=flower.validate if flower else None,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(agent.run())
    return 0


def cmd_emulate(args: argparse.Namespace) -> int:
    import torch

    from edge_agent.emulation import Emulator
    from fedbus.fleet import load_fleet

    torch.set_num_threads(args.threads or 1)
    fleet = load_fleet(args.fleet)
    emulator = Emulator(
        fleet,
        broker_settings(args),
        count=args.count,
        offset=args.offset,
        name=args.name,
        data=data_spec(args),
        packages=package_cli.agent_packages(args),
    )
    print(f"emulating {len(emulator.agents)} agents of {args.fleet}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(emulator.run())
    return 0


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


def data_spec(args: argparse.Namespace) -> DataSpec | None:
    return DataSpec(args.data, args.data_args) if args.data else None


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
    add_data_args(emulate)
    package_cli.add_trust_args(emulate)
    add_broker_args(emulate)
    emulate.set_defaults(func=cmd_emulate)

    args = parser.parse_args(argv)
    if getattr(args, "data_args", None) and not getattr(args, "data", None):
        parser.error("--data-args needs --data")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
