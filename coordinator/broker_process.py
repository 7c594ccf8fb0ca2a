"""Start and stop a local mosquitto from the repo's ``mosquitto.conf`` (demo and tests).

The shipped config is copied with only the dev listener's port and the persistence
directory rewritten, so a run never collides with a broker already on 1883 and every
test gets its own state.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO_CONF = Path(__file__).resolve().parent.parent / "mosquitto.conf"


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


def render_config(base: str, port: int, data_dir: Path, extra: str = "") -> str:
    text = re.sub(r"(?m)^listener 1883 127\.0\.0\.1$", f"listener {port} 127.0.0.1", base)
    text = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {data_dir}/", text)
    return text + ("\n" + extra if extra else "")


@dataclass
class BrokerProcess:
    port: int
    directory: Path
    conf_path: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(
        cls, directory: Path, port: int | None = None, extra_conf: str = ""
    ) -> BrokerProcess:
        directory.mkdir(parents=True, exist_ok=True)
        data = directory / "data"
        data.mkdir(exist_ok=True)
        port = port or free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text(render_config(REPO_CONF.read_text(), port, data, extra_conf))
        return cls(port, directory, conf)

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
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
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
