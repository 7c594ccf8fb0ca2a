"""Pack a package directory into a deterministic ``.tar.gz``, and unpack one safely.

Deterministic: the same files give the same bytes (sorted names, zeroed times and owners,
no gzip timestamp), so the SHA-256 a job pins does not change when a package is rebuilt
from the same sources. Unpacking refuses anything but plain files and directories below
the target (no absolute paths, no ``..``, no links or devices) and caps the unpacked size:
the archive came over the network, even if its hash was trusted.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path, PurePosixPath

from fedbus.packages import PackageRefused, PackageSpecError
from fedbus.packages.spec import SPEC_FILE, PackageSpec, load_spec

MAX_UNPACKED_BYTES = 512 * 1024 * 1024
# Never packed: caches and version-control state.
_SKIP_PARTS = {"__pycache__", ".git", ".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def sha256_hex(payload: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(payload).hexdigest()


def _files(directory: Path) -> list[Path]:
    found = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part in _SKIP_PARTS for part in rel.parts) or path.suffix == ".pyc":
            continue
        if path.is_symlink():
            raise PackageSpecError(f"{path}: links are not packed; copy the file instead")
        if path.is_file():
            found.append(path)
    return found


def build_archive(directory: str | Path) -> tuple[bytes, PackageSpec]:
    """The package in ``directory`` as ``.tar.gz`` bytes, and its spec (checked first)."""
    directory = Path(directory)
    spec = load_spec(directory)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _files(directory):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(directory).as_posix())
            info.size = len(data)
            info.mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    # GzipFile writes its header itself (gzip.compress leaves it to zlib from Python 3.11
    # on, with another OS byte): the same bytes on every Python the agents run.
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=packed, mtime=0) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue(), spec


def extract_archive(
    payload: bytes | bytearray | memoryview, target: Path, max_bytes: int = MAX_UNPACKED_BYTES
) -> None:
    """Unpack ``payload`` into ``target`` (created); PackageRefused for an unsafe archive."""
    try:
        tar = tarfile.open(fileobj=io.BytesIO(bytes(payload)), mode="r:gz")  # noqa: SIM115 (closed below)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PackageRefused(f"not a .tar.gz package: {exc}") from exc
    total = 0
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PackageRefused(f"corrupt package archive: {exc}") from exc
        names = set()
        for member in members:
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or not name.parts:
                raise PackageRefused(f"package member {member.name!r} points outside the package")
            if not (member.isfile() or member.isdir()):
                raise PackageRefused(f"package member {member.name!r} is not a plain file")
            total += member.size
            if total > max_bytes:
                raise PackageRefused(f"package unpacks to more than {max_bytes} bytes")
            names.add(name.as_posix())
        if SPEC_FILE not in names:
            raise PackageRefused(f"package has no {SPEC_FILE}")
        target.mkdir(parents=True)
        for member in members:
            dest = target.joinpath(*PurePosixPath(member.name).parts)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has a stream
            dest.write_bytes(source.read())
            dest.chmod(0o755 if member.mode & 0o111 else 0o644)
