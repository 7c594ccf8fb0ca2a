"""The broker options every fedbus command takes, and the settings they make."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedbus.protocol import paho_speedups
from fedbus.protocol.bus import BrokerSettings, parse_broker
from fedbus.protocol.chunking import DEFAULT_CHUNK_SIZE


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT of the MQTT broker")
    parser.add_argument("--prefix", default="fedbus", help="topic prefix")
    parser.add_argument("--username", help="secure listener: the user (an agent's is its id)")
    parser.add_argument("--password", help="secure listener: the password")
    parser.add_argument(
        "--password-file",
        help="secure listener: a file whose first line is the password (services: keeps it "
        "out of the command line and the environment)",
    )
    parser.add_argument("--tls-ca", help="CA certificate of a TLS listener")
    parser.add_argument(
        "--chunk-mb",
        type=float,
        default=DEFAULT_CHUNK_SIZE / 2**20,
        help="payloads above this many MiB travel as chunks (default 4)",
    )
    parser.add_argument(
        "--paho-speedups",
        type=_speedups,
        default=os.environ.get(paho_speedups.ENV_VAR, "on"),
        help=f"on, off, or a comma-separated list of {', '.join(sorted(paho_speedups.ALL))}: "
        f"the paho/aiomqtt patches to use (default: ${paho_speedups.ENV_VAR} or on)",
    )


def _speedups(text: str) -> frozenset[str]:
    """argparse applies this to the default too, so a bad environment value is reported."""
    try:
        return paho_speedups.parse_speedups(text, f"${paho_speedups.ENV_VAR} or --paho-speedups")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    host, port = parse_broker(args.broker)
    return BrokerSettings(
        host=host,
        port=port,
        prefix=args.prefix,
        username=args.username,
        password=args.password or read_password_file(getattr(args, "password_file", None)),
        tls_ca=args.tls_ca,
        chunk_size=max(1024, int(args.chunk_mb * 2**20)),
        speedups=args.paho_speedups,
    )


def read_password_file(path: str | None) -> str | None:
    """The first line of ``path`` (None for no file); ValueError names an unreadable or
    empty file (the CLIs print it as one line and exit 2)."""
    if not path:
        return None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(
            f"cannot read the password file {path} (--password-file / "
            f"FEDBUS_PASSWORD_FILE): {exc.strerror or exc}"
        ) from exc
    if not lines or not lines[0]:
        raise ValueError(f"the password file {path} is empty (--password-file)")
    return lines[0]
