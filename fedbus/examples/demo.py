"""The main job, end to end on one machine: broker, coordinator and agents as processes.

``python -m fedbus.examples.demo`` starts mosquitto from the repo's ``mosquitto.conf`` on a free
loopback port, ``coordinator run jobs/digits.yaml``, and one ``edge-agent run`` process per
partition; prints the coordinator's per-round accuracy; and stops everything it started,
on success, on failure and on Ctrl-C.

It runs the real path: the secure listener (no anonymous clients), with a password file,
per-agent ACL and credentials it generates for this run (coordinator, one per agent, a
read-only monitor) in the run directory; processes read their password from a file, not
from the command line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from coordinator.broker_process import BrokerProcess
from coordinator.credentials import add_user, generate_password

REPO = Path(__file__).resolve().parents[2]  # fedbus/examples/demo.py -> the repo root


def make_credentials(directory: Path, users: list[str]) -> dict[str, Path]:
    """A fresh password for each user: the broker's password file, and one file per user
    holding its password (mode 0600, for ``--password-file``)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for user in users:
        password = generate_password()
        add_user(directory / "passwd", user, password)
        path = directory / f"{user}.password"
        path.touch(mode=0o600)
        path.write_text(password + "\n")
        files[user] = path
    return files


def login(user: str, password_files: dict[str, Path]) -> list[str]:
    return ["--username", user, "--password-file", str(password_files[user])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedbus.examples.demo", description=__doc__)
    parser.add_argument("--job", default=str(REPO / "jobs" / "digits.yaml"))
    parser.add_argument(
        "--agents", type=int, default=None, help="default: the job's num_partitions"
    )
    parser.add_argument("--run-dir", default=str(REPO / "runs" / "demo"))
    args = parser.parse_args(argv)

    job = yaml.safe_load(Path(args.job).read_text())
    agents = args.agents or int(job.get("data_args", {}).get("num_partitions", 8))
    run_dir = Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)  # a demo starts fresh; `coordinator run` resumes
    run_dir.mkdir(parents=True)

    secrets = run_dir / "credentials"
    users = ["coordinator", "monitor", *(f"agent-{i}" for i in range(agents))]
    password_files = make_credentials(secrets, users)
    broker = BrokerProcess.create(
        run_dir / "broker", password_file=secrets / "passwd", anonymous_loopback=False
    )
    broker.start()
    monitor = password_files["monitor"].read_text().strip()
    print(
        f"mosquitto on 127.0.0.1:{broker.port}, secure listener, credentials in {secrets}\n"
        f"watch: mosquitto_sub -p {broker.port} -u monitor -P {monitor} -v -t 'fedbus/+/+/status'"
    )
    address = f"127.0.0.1:{broker.port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    children: list[subprocess.Popen[bytes]] = []
    logs = run_dir / "logs"
    logs.mkdir()
    try:
        for i in range(agents):
            log = (logs / f"agent-{i}.log").open("wb")
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "edge_agent.cli",
                        "run",
                        "--id",
                        f"agent-{i}",
                        "--partition",
                        str(i),
                        "--broker",
                        address,
                        *login(f"agent-{i}", password_files),
                        "--threads",
                        "1",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=REPO,
                )
            )
        coordinator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "coordinator.cli",
                "run",
                args.job,
                "--broker",
                address,
                *login("coordinator", password_files),
                "--runs-dir",
                str(run_dir),
            ],
            env=env,
            cwd=REPO,
        )
        children.append(coordinator)
        code = coordinator.wait()
        return code
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything the demo started")
        return 130
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 5
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
