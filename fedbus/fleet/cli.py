"""``fedbus-fleet``: build fleet files and describe them.

::

    fedbus-fleet build synthetic --count N --seed S --out FILE [--availability lab|mobile]
    fedbus-fleet build flash --traces DIR --count N --seed S --out FILE [--bandwidth-set SET]
    fedbus-fleet build fedscale --capacity PKL [--behave PKL] --count N --out FILE
    fedbus-fleet show FILE

Exit status: 0 done, 1 a fleet error (bad input file, unreadable data), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys

from fedbus.fleet.builders import AVAILABILITY_CHOICES, build_fedscale, build_flash, build_synthetic
from fedbus.fleet.errors import FleetError
from fedbus.fleet.flash_data import DEFAULT_BANDWIDTH_SET
from fedbus.fleet.fleet_file import load_fleet, save_fleet
from fedbus.fleet.profile import Fleet
from fedbus.fleet.summary import render, summarize
from fedbus.protocol import env_config


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedbus-fleet", description="Build fleet files and describe them."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build a fleet file")
    kinds = build.add_subparsers(dest="kind", required=True)

    def common(p: argparse.ArgumentParser, seeded: bool = True) -> None:
        p.add_argument("--count", type=_positive, required=True, help="number of clients")
        if seeded:
            p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        p.add_argument("--out", required=True, help="fleet file to write (.json or .json.gz)")

    synthetic = kinds.add_parser("synthetic", help="seeded synthetic devices")
    common(synthetic)
    synthetic.add_argument("--availability", choices=AVAILABILITY_CHOICES, default="mobile",
                           help="lab: always online; mobile: phone-like windows")  # fmt: skip
    flash = kinds.add_parser("flash", help="from the FLASH-derived trace files")
    common(flash)
    flash.add_argument("--traces", required=True, help="the traces directory (data/traces)")
    flash.add_argument("--bandwidth-set", default=DEFAULT_BANDWIDTH_SET,
                       help=f"folder under bandwidth_traces/ (default {DEFAULT_BANDWIDTH_SET})")  # fmt: skip
    fedscale = kinds.add_parser("fedscale", help="from FedScale trace pickles")
    common(fedscale, seeded=False)
    fedscale.add_argument("--capacity", required=True, help="client_device_capacity pickle")
    fedscale.add_argument("--behave", help="client_behave_trace pickle (default: always on)")
    show = commands.add_parser("show", help="summarise a fleet file")
    show.add_argument("file")
    return parser


def _build(args: argparse.Namespace) -> Fleet:
    if args.kind == "synthetic":
        return build_synthetic(args.count, args.seed, args.availability)
    if args.kind == "flash":
        return build_flash(args.traces, args.count, args.seed, args.bandwidth_set)
    return build_fedscale(args.capacity, args.behave, args.count)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = _parser()
        env_config.apply_environment(parser, env_config.FLEET)  # FEDBUS_*; flags win
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.command == "show":
            fleet = load_fleet(args.file)
        else:
            fleet = _build(args)
            save_fleet(args.out, fleet)
            print(f"wrote {args.out}")
    except FleetError as exc:
        print(f"fedbus-fleet: error: {exc}", file=sys.stderr)
        return 1
    print(render(summarize(fleet)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
