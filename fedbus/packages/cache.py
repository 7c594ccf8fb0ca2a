"""Unpacked packages on disk, one directory per SHA-256: a package is fetched once per host.

``install`` checks the bytes against the hash they were asked for before anything is
written, unpacks into a temporary directory beside the final one and renames it into
place, so a crash half way leaves no directory that looks installed.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from fedbus.packages import PackageRefused
from fedbus.packages.archive import extract_archive, sha256_hex
from fedbus.packages.spec import PackageSpec, load_spec

_SHA = re.compile(r"^[0-9a-f]{64}$")


def check_sha(value: str) -> str:
    if not _SHA.fullmatch(value):
        raise PackageRefused(f"{value!r} is not a SHA-256 (64 lowercase hex digits)")
    return value


class PackageCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, sha: str) -> Path:
        return self.root / check_sha(sha)

    def has(self, sha: str) -> bool:
        return (self.path(sha) / "fedbus.yaml").is_file()

    def spec(self, sha: str) -> PackageSpec:
        return load_spec(self.path(sha))

    def install(self, sha: str, payload: bytes | bytearray | memoryview) -> Path:
        """Verify ``payload`` against ``sha`` and unpack it; the package's directory."""
        target = self.path(sha)
        actual = sha256_hex(payload)
        if actual != sha:
            raise PackageRefused(
                f"package bytes hash to {actual[:12]}..., not the pinned {sha[:12]}... "
                "(tampered or corrupted in transit)"
            )
        if self.has(sha):
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=self.root))
        try:
            extract_archive(payload, staging / "pkg")
            load_spec(staging / "pkg")  # a package whose spec is broken is not installed
            if not self.has(sha):
                shutil.rmtree(target, ignore_errors=True)  # a half-written earlier attempt
                (staging / "pkg").rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target
