"""coordinator.credentials: mosquitto's password file format, and the add/remove/list command."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from coordinator import credentials
from coordinator.credentials import (
    CredentialsError,
    add_user,
    hash_password,
    list_users,
    main,
    read_entries,
    remove_user,
    verify_password,
)

# Written by mosquitto_passwd 2.0.11: `mosquitto_passwd -b FILE alice secret1`.
MOSQUITTO_ALICE = (
    "$7$101$XSFlfRTFaYhrpIRz$+eR2cNmndz2ZEPZHFuOsEP3Q3k+fsXGkdmAunDfi81Ke2uQdp7hldNiY6lq9RiO"
    "/czhIBbxQ9pjgT0Bu+NYWbw=="
)
HASH_FORMAT = re.compile(r"^\$7\$101\$[A-Za-z0-9+/]{16}\$[A-Za-z0-9+/]{86}==$")


# -- the hash -----------------------------------------------------------------------------------


def test_hash_of_mosquitto_passwd_verifies() -> None:
    assert verify_password("secret1", MOSQUITTO_ALICE)
    assert not verify_password("secret2", MOSQUITTO_ALICE)


def test_same_salt_gives_mosquitto_passwds_exact_field() -> None:
    salt = base64.b64decode(MOSQUITTO_ALICE.split("$")[3])

    assert hash_password("secret1", salt=salt) == MOSQUITTO_ALICE


def test_new_hashes_have_the_format_and_a_fresh_salt() -> None:
    first, second = hash_password("pw"), hash_password("pw")

    assert HASH_FORMAT.match(first) and HASH_FORMAT.match(second)
    assert first != second
    assert verify_password("pw", first) and verify_password("pw", second)


def test_verify_reads_old_sha512_entries_and_rejects_garbage() -> None:
    salt = b"0123456789ab"
    digest = hashlib.sha512(b"pw" + salt).digest()
    old = f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"

    assert verify_password("pw", old)
    assert not verify_password("pw", "plaintext")
    assert not verify_password("pw", "$7$x$y$z")
    assert not verify_password("pw", "$7$101$!!!$!!!")


def test_non_ascii_password_is_hashed_as_utf8() -> None:
    hashed = hash_password("pässwörd")
    salt = base64.b64decode(hashed.split("$")[3])
    expected = hashlib.pbkdf2_hmac("sha512", "pässwörd".encode(), salt, 101, 64)

    assert hashed.split("$")[4] == base64.b64encode(expected).decode()


# -- the file -----------------------------------------------------------------------------------


def test_add_change_remove_keep_order_and_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(f"alice:{MOSQUITTO_ALICE}\n")

    assert add_user(path, "agent-1", "one") is True
    assert add_user(path, "coordinator", "c") is True
    assert add_user(path, "agent-1", "uno") is False
    entries = read_entries(path)

    assert list(entries) == ["alice", "agent-1", "coordinator"]
    assert entries["alice"] == MOSQUITTO_ALICE
    assert verify_password("uno", entries["agent-1"])
    assert not verify_password("one", entries["agent-1"])

    remove_user(path, "agent-1")

    assert path.read_text().splitlines() == [
        f"alice:{MOSQUITTO_ALICE}",
        f"coordinator:{entries['coordinator']}",
    ]


def test_new_file_is_private_and_existing_mode_is_kept(tmp_path: Path) -> None:
    new, shared = tmp_path / "new", tmp_path / "shared"
    shared.write_text("")
    shared.chmod(0o640)

    add_user(new, "a", "pw")
    add_user(shared, "a", "pw")

    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
    assert {p.name for p in tmp_path.iterdir()} == {"new", "shared"}  # no temporary files left


@pytest.mark.parametrize("user", ["", "a:b", "a/b", "a+b", "a#b", "a b", "ä", "x" * 129], ids=repr)
def test_bad_usernames_are_refused_and_nothing_is_written(tmp_path: Path, user: str) -> None:
    path = tmp_path / "passwd"

    with pytest.raises(CredentialsError, match="username"):
        add_user(path, user, "pw")

    assert not path.exists()


@pytest.mark.parametrize("password", ["", "a\nb", "a\rb"], ids=repr)
def test_bad_passwords_are_refused(tmp_path: Path, password: str) -> None:
    with pytest.raises(CredentialsError, match="password"):
        add_user(tmp_path / "passwd", "a", password)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("# a comment\n", "no comments"), (":hash\n", "user:hash"), ("a:x\na:y\n", "twice")],
    ids=["comment", "no-user", "duplicate"],
)
def test_corrupt_file_is_an_error_naming_the_line_and_stays_unchanged(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "passwd"
    path.write_text(text)

    with pytest.raises(CredentialsError, match=problem) as error:
        add_user(path, "b", "pw")

    assert f"{path}:" in str(error.value)
    assert path.read_text() == text


def test_remove_and_list_need_what_they_name(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    with pytest.raises(CredentialsError, match="does not exist"):
        list_users(path)
    path.write_text("")
    with pytest.raises(CredentialsError, match="no user 'ghost'"):
        remove_user(path, "ghost")


# -- the command --------------------------------------------------------------------------------


def test_generate_prints_the_password_once_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "passwd"

    rc = main(["add", "--passwd", str(path), "--user", "agent-7", "--generate"])
    out, err = capsys.readouterr()

    assert rc == 0
    password = out.strip()
    assert len(password) == 32 and "\n" not in password
    assert verify_password(password, read_entries(path)["agent-7"])
    assert password not in err and password not in path.read_text()
    assert "kill -HUP" in err


def test_password_from_argument_or_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "passwd"
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin\n"))

    assert main(["add", "--passwd", str(path), "--user", "a", "--password", "given"]) == 0
    assert main(["add", "--passwd", str(path), "--user", "b"]) == 0
    entries = read_entries(path)

    assert verify_password("given", entries["a"])
    assert verify_password("from stdin", entries["b"])
    assert capsys.readouterr().out == ""  # nothing to show when the caller chose the password


def test_list_and_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "passwd"
    for user in ("coordinator", "agent-1", "agent-2"):
        add_user(path, user, "pw")

    assert main(["remove", "--passwd", str(path), "--user", "agent-1"]) == 0
    capsys.readouterr()
    assert main(["list", "--passwd", str(path)]) == 0

    assert capsys.readouterr().out.splitlines() == ["coordinator", "agent-2"]


def test_errors_exit_1_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "passwd"

    assert main(["add", "--passwd", str(path), "--user", "a:b", "--password", "x"]) == 1
    assert main(["remove", "--passwd", str(path), "--user", "ghost"]) == 1
    assert main(["add", "--passwd", str(tmp_path / "no" / "dir"), "--user", "a", "--generate"]) == 1
    err = capsys.readouterr().err

    assert "error: username 'a:b' is not allowed" in err
    assert "does not exist" in err
    assert not path.exists()


def test_password_and_generate_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as usage:
        main(
            ["add", "--passwd", str(tmp_path / "p"), "--user", "a", "--password", "x", "--generate"]
        )
    assert usage.value.code == 2


def test_configure_wires_into_a_parent_cli(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="coordinator")
    sub = parser.add_subparsers(dest="command", required=True)
    credentials.configure(sub.add_parser("credentials"))
    args = parser.parse_args(
        ["credentials", "add", "--passwd", str(tmp_path / "p"), "--user", "a", "--password", "x"]
    )

    assert credentials.run(args) == 0
    assert list(read_entries(tmp_path / "p")) == ["a"]


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd absent")
def test_mosquitto_passwd_edits_our_file_and_we_edit_its(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    add_user(path, "ours", "pw-ours")

    subprocess.run(
        ["mosquitto_passwd", "-b", str(path), "theirs", "pw-theirs"],
        check=True,
        capture_output=True,
        timeout=10,
    )
    add_user(path, "ours-again", "pw-2")
    entries = read_entries(path)

    assert list(entries) == ["ours", "theirs", "ours-again"]
    assert verify_password("pw-ours", entries["ours"])
    assert verify_password("pw-theirs", entries["theirs"])
    assert verify_password("pw-2", entries["ours-again"])
