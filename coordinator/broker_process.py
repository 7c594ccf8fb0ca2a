"""Start and stop a local mosquitto from the repo's ``mosquitto.conf`` (demo and tests).

The shipped config is copied with the persistence directory rewritten, so every run gets
its own state, and its secure listener (``listener 1883``) moved to a free loopback port,
so a run never collides with a broker already on 1883. Relative file paths (password
file, ACL, certificates) are made absolute against the repository root, because mosquitto
resolves them against its working directory.

The shipped config has no anonymous listener. Tests and benchmarks that talk to the
broker without logging in ask for ``anonymous_loopback``: the launcher then appends the
loopback-only listener of ``deploy/mosquitto/dev-anonymous.conf`` on a free port of its
own (``port``). The demo does not: it runs on the secure listener with credentials it
generates.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO_CONF = Path(__file__).resolve().parent.parent / "mosquitto.conf"
DEV_CONF = REPO_CONF.parent / "deploy" / "mosquitto" / "dev-anonymous.conf"
SECURE_LISTENER = 1883  # the port of the shipped secure (password + ACL) listener
_PATH_OPTIONS = (
    "password_file|acl_file|psk_file|cafile|capath|certfile|keyfile|crlfile|dhparamfile|include_dir"
)


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    for candidate in (
        shutil.which("mosquitto"),
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise BrokerError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto)")


def render_config(
    base: str,
    port: int | None,
    data_dir: Path,
    extra: str = "",
    *,
    secure_port: int | None = None,
    password_file: Path | None = None,
    base_dir: Path = REPO_CONF.parent,
) -> str:
    """The shipped config with the launcher's ports and paths; ``extra`` is appended.

    ``port`` (when not None) is the loopback anonymous listener of DEV_CONF, appended;
    ``secure_port`` moves the secure listener to that loopback port (None leaves it as
    shipped); ``password_file`` replaces the file it names; other relative file paths are
    resolved against ``base_dir``.
    """
    text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data_dir}/", base)
    if secure_port is not None:
        text = re.sub(
            rf"(?m)^listener {SECURE_LISTENER}$", f"listener {secure_port} 127.0.0.1", text
        )
    if password_file is not None:
        text = re.sub(r"(?m)^password_file .*$", f"password_file {password_file}", text)

    def absolute(match: re.Match[str]) -> str:
        return f"{match[1]} {(base_dir / match[2]).resolve()}"

    text = re.sub(rf"(?m)^({_PATH_OPTIONS}) +([^/\s]\S*)$", absolute, text)
    if port is not None:
        dev = re.sub(
            r"(?m)^listener \d+ 127\.0\.0\.1$", f"listener {port} 127.0.0.1", DEV_CONF.read_text()
        )
        text = text.rstrip() + "\n\n" + dev
    return text + ("\n" + extra if extra else "")


@dataclass
class BrokerProcess:
    # The anonymous loopback listener's port; without one, the secure listener's.
    port: int
    directory: Path
    conf_path: Path
    process: subprocess.Popen[bytes] | None = None
    secure_port: int | None = None  # the secure listener's port (password + ACL)

    @classmethod
    def create(
        cls,
        directory: Path,
        port: int | None = None,
        extra_conf: str = "",
        *,
        secure_port: int | None = None,
        password_file: Path | None = None,
        anonymous_loopback: bool = True,
    ) -> BrokerProcess:
        """``password_file`` replaces the shipped (empty) one of the secure listener;
        ``anonymous_loopback`` adds the dev listener (tests, benchmarks; never the demo)."""
        directory.mkdir(parents=True, exist_ok=True)
        data = directory / "data"
        data.mkdir(exist_ok=True)
        port = (port or free_port()) if anonymous_loopback else None
        base = REPO_CONF.read_text()
        if re.search(rf"(?m)^listener {SECURE_LISTENER}$", base) is None:
            secure_port = None
        else:
            while secure_port is None or secure_port == port:
                secure_port = free_port()
        if port is None and secure_port is None:
            raise BrokerError(f"{REPO_CONF} has no listener {SECURE_LISTENER} to start")
        text = render_config(
            base,
            port,
            data,
            extra_conf,
            secure_port=secure_port,
            password_file=password_file.resolve() if password_file else None,
        )
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user "mosquitto", which cannot read a
            # password file or write persistence under a private (0700) directory.
            text = "user root\n" + text
        conf = directory / "mosquitto.conf"
        conf.write_text(text)
        listening = port if port is not None else secure_port
        assert listening is not None
        return cls(listening, directory, conf, secure_port=secure_port)

    def start(self, timeout: float = 10.0) -> None:
        log = (self.directory / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with {self.process.returncode}; see {self.directory / 'mosquitto.log'}"
                )
            try:
                for port in (self.port, self.secure_port):
                    if port is not None:
                        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                            pass
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Die as a crash would: SIGKILL, no clean shutdown (persistence from the last save)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
