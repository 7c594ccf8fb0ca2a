"""``coordinator credentials``: the users of the broker's secure listener.

Edits mosquitto's password file directly, in the format ``mosquitto_passwd`` (2.0) writes:
one ``USER:$7$ITERATIONS$SALT$HASH`` line per user, HASH being PBKDF2-HMAC-SHA512 of the
UTF-8 password with a random 12-byte salt, 101 iterations and a 64-byte result, SALT and
HASH in standard base64. Checked against mosquitto 2.0.11: hashes from either tool verify in
the other and the broker accepts passwords written here; either tool can edit the file.

An agent's username is its agent id (the ACL in deploy/mosquitto/acl keys on it);
``coordinator``, ``operator`` and ``monitor`` are the role names the ACL knows.

    coordinator credentials add --passwd FILE --user ID [--password P | --generate]
    coordinator credentials remove --passwd FILE --user ID
    coordinator credentials list --passwd FILE

``add`` without ``--password``/``--generate`` asks twice on a terminal, or reads one line
from standard input. ``--generate`` prints the new password once, alone on stdout, so a
script can capture it. The broker reads the file at start and on SIGHUP.

Errors::

    CredentialsError    a bad username, password or password file; the file is unchanged
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import getpass
import hashlib
import hmac
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from fedbus.protocol.errors import InvalidTopic
from fedbus.protocol.topics import check_id

ITERATIONS = 101  # mosquitto_passwd's default; the broker reads the count from each line
SALT_BYTES = 12
HASH_BYTES = 64
NEW_FILE_MODE = 0o600
RELOAD_HINT = "reload the broker to apply: kill -HUP <mosquitto pid> (systemctl reload mosquitto)"


class CredentialsError(Exception):
    """A bad username, password or password file; nothing was written."""


def check_username(user: str) -> str:
    """An agent id (fedbus.protocol.topics.check_id) that also fits the file: no ':'."""
    try:
        check_id(user, "username")
        if ":" in user:
            raise InvalidTopic("':' separates the username from the hash in the password file")
    except InvalidTopic as exc:
        raise CredentialsError(
            f"username {user!r} is not allowed: use 1-128 characters of A-Z a-z 0-9 _ . @ = -"
        ) from exc
    return user


def check_password(password: str) -> str:
    if not password:
        raise CredentialsError("the password is empty")
    if "\n" in password or "\r" in password or "\0" in password:
        raise CredentialsError("the password may not contain line breaks or NUL")
    if len(password.encode()) > 65535:
        raise CredentialsError("the password is longer than MQTT allows (65535 bytes)")
    return password


def generate_password() -> str:
    """32 URL-safe characters (192 random bits): typeable, no shell quoting needed."""
    return secrets.token_urlsafe(24)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``$7$...`` field mosquitto_passwd writes for this password."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches a ``$7$`` (PBKDF2) or ``$6$`` (salted SHA-512) field."""
    fields = hashed.split("$")
    try:
        if len(fields) == 5 and fields[:2] == ["", "7"]:
            iterations, salt, digest = int(fields[2]), fields[3], fields[4]
            expected = base64.b64decode(digest, validate=True)
            actual = hashlib.pbkdf2_hmac(
                "sha512",
                password.encode(),
                base64.b64decode(salt, validate=True),
                iterations,
                len(expected),
            )
        elif len(fields) == 4 and fields[:2] == ["", "6"]:
            expected = base64.b64decode(fields[3], validate=True)
            actual = hashlib.sha512(
                password.encode() + base64.b64decode(fields[2], validate=True)
            ).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


# -- the file -------------------------------------------------------------------------------


def read_entries(path: Path) -> dict[str, str]:
    """username -> hash field, in file order; a missing file has no users."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read password file {path}: {exc}") from exc
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise CredentialsError(
                f"{path}:{number}: not a 'user:hash' line; mosquitto password files have no comments"
            )
        if user in entries:
            raise CredentialsError(f"{path}:{number}: user {user!r} appears twice")
        entries[user] = hashed
    return entries


def write_entries(path: Path, entries: dict[str, str]) -> None:
    """Replace ``path`` atomically, keeping an existing file's mode and owner (else 0600)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        stat = None
    text = "".join(f"{user}:{hashed}\n" for user, hashed in entries.items())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, stat.st_mode & 0o7777 if stat else NEW_FILE_MODE)
        if stat is not None and (stat.st_uid, stat.st_gid) != (os.getuid(), os.getgid()):
            # Not root: the file becomes ours, as it would with any editor.
            with contextlib.suppress(PermissionError):
                os.chown(tmp, stat.st_uid, stat.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_user(path: Path, user: str, password: str) -> bool:
    """Add ``user`` or change its password; True when the user is new."""
    check_username(user)
    check_password(password)
    entries = read_entries(path)
    new = user not in entries
    entries[user] = hash_password(password)
    write_entries(path, entries)
    return new


def remove_user(path: Path, user: str) -> None:
    entries = read_entries(path)
    if user not in entries:
        raise CredentialsError(f"no user {user!r} in {path}")
    del entries[user]
    write_entries(path, entries)


def list_users(path: Path) -> list[str]:
    if not path.exists():
        raise CredentialsError(f"password file {path} does not exist")
    return list(read_entries(path))


# -- command line ---------------------------------------------------------------------------


def _ask_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != first:
            raise CredentialsError("the passwords do not match")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _cmd_add(args: argparse.Namespace) -> int:
    path = Path(args.passwd)
    check_username(args.user)
    if not path.parent.is_dir():
        raise CredentialsError(f"directory {path.parent} does not exist")
    if args.generate:
        password = generate_password()
    elif args.password is not None:
        password = args.password
    else:
        password = _ask_password()
    new = add_user(path, args.user, password)
    if args.generate:
        print(password, flush=True)
        print(
            f"{'added' if new else 'changed the password of'} {args.user} in {path}; its "
            "generated password is on the line above and is not stored anywhere else",
            file=sys.stderr,
        )
    else:
        print(
            f"{'added' if new else 'changed the password of'} {args.user} in {path}",
            file=sys.stderr,
        )
    print(RELOAD_HINT, file=sys.stderr)
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    path = Path(args.passwd)
    remove_user(path, args.user)
    print(f"removed {args.user} from {path}", file=sys.stderr)
    print(RELOAD_HINT, file=sys.stderr)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for user in list_users(Path(args.passwd)):
        print(user)
    return 0


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the add/remove/list subcommands to ``parser`` (each sets ``func``)."""
    sub = parser.add_subparsers(dest="credentials_command", required=True)

    add = sub.add_parser("add", help="add a user, or change its password")
    add.add_argument("--passwd", required=True, help="mosquitto password file (created if missing)")
    add.add_argument(
        "--user", required=True, help="username: the agent id, or coordinator/operator/monitor"
    )
    how = add.add_mutually_exclusive_group()
    how.add_argument(
        "--password", help="the password (visible to `ps` and shell history; prefer --generate)"
    )
    how.add_argument(
        "--generate", action="store_true", help="make a random password and print it once"
    )
    add.set_defaults(func=_cmd_add)

    remove = sub.add_parser("remove", help="remove a user")
    remove.add_argument("--passwd", required=True, help="mosquitto password file")
    remove.add_argument("--user", required=True)
    remove.set_defaults(func=_cmd_remove)

    listing = sub.add_parser("list", help="print the usernames, one a line")
    listing.add_argument("--passwd", required=True, help="mosquitto password file")
    listing.set_defaults(func=_cmd_list)
    return parser


def run(args: argparse.Namespace) -> int:
    """Carry out parsed arguments; errors are printed, exit status 1."""
    try:
        return int(args.func(args))
    except (CredentialsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """``argv`` is what follows ``coordinator credentials``, e.g. ``["list", "--passwd", F]``."""
    parser = configure(
        argparse.ArgumentParser(
            prog="coordinator credentials",
            description="Manage the users of the broker's secure listener (mosquitto password file).",
        )
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
