"""The broker options every fedbus command takes, and the settings they make."""

from __future__ import annotations

import argparse
import os

from fedbus.protocol import paho_speedups
from fedbus.protocol.bus import BrokerSettings, parse_broker
from fedbus.protocol.chunking import DEFAULT_CHUNK_SIZE


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT of the MQTT broker")
    parser.add_argument("--prefix", default="fedbus", help="topic prefix")
    parser.add_argument("--username", help="secure listener: the user (an agent's is its id)")
    parser.add_argument("--password", help="secure listener: the password")
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
        password=args.password,
        tls_ca=args.tls_ca,
        chunk_size=max(1024, int(args.chunk_mb * 2**20)),
        speedups=args.paho_speedups,
    )
