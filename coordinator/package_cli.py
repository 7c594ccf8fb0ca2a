"""``coordinator package build DIR``: pack a compute package and print its SHA-256."""

from __future__ import annotations

import argparse

from coordinator.packages import build_command
from fedbus.packages import PackageError


def cmd_build(args: argparse.Namespace) -> int:
    try:
        path, sha, size = build_command(args.dir, args.out)
    except PackageError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{path}: {size:,} bytes, sha256 {sha}")
    print(
        f"use it with `package: {path}` in a job file; agents trust it with --trust-package {sha}"
    )
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="package_command", required=True)
    build = sub.add_parser("build", help="pack a package directory (with fedbus.yaml)")
    build.add_argument("dir", help="the package directory")
    build.add_argument("--out", default=None, help="archive to write (default: NAME.tar.gz)")
    build.set_defaults(func=cmd_build)
