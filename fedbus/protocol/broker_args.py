"""The broker options every fedbus command takes, and the settings they make."""

from __future__ import annotations

import argparse

from fedbus.protocol.bus import BrokerSettings, parse_broker
from fedbus.protocol.chunking import DEFAULT_CHUNK_SIZE


def add_broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default="127.0.0.1:1883", help="HOST:PORT of the MQTT broker")
    parser.add_argument("--prefix", default="fedbus", help="topic prefix")
    parser.add_argument("--username", help="secure listener: the user (an agent's is its id)")
    parser.add_argument("--password", help="secure listener: the password")
    parser.add_argument(
        "--password-file",
        help="secure listener: read the password from this file's first line "
        "(keeps it out of the process list)",
    )
    parser.add_argument("--tls-ca", help="CA certificate of a TLS listener")
    parser.add_argument(
        "--chunk-mb",
        type=float,
        default=DEFAULT_CHUNK_SIZE / 2**20,
        help="payloads above this many MiB travel as chunks (default 4)",
    )


def read_password(path: str) -> str:
    """The first line of ``path``; OSError or ValueError name the file."""
    with open(path, encoding="utf-8") as f:
        password = f.readline().rstrip("\r\n")
    if not password:
        raise ValueError(f"--password-file {path}: the first line is empty")
    return password


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    host, port = parse_broker(args.broker)
    password = args.password
    if getattr(args, "password_file", None):
        password = read_password(args.password_file)
    return BrokerSettings(
        host=host,
        port=port,
        prefix=args.prefix,
        username=args.username,
        password=password,
        tls_ca=args.tls_ca,
        chunk_size=max(1024, int(args.chunk_mb * 2**20)),
    )
