"""A site from the environment alone: broker + `coordinator serve` + 4 `edge-agent run`, no flags.

What deploy/compose.yaml and the systemd units do, with real processes: credentials made
by deploy/credentials.sh, the shipped broker config's secure listener (passwords + the
per-agent ACL), every fedbus process started with its sub-command and FEDBUS_* variables
only, and the shipped site job handed over by `coordinator submit` as the operator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from coordinator.broker_process import BrokerProcess

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the console scripts of this environment
AGENTS = 4
USERS = ["coordinator", "operator", *(f"agent-{i}" for i in range(AGENTS))]
PATH_ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    """The site's credentials, as deploy/credentials.sh makes them."""
    directory = tmp_path / "credentials"
    subprocess.run(
        [str(REPO / "deploy" / "credentials.sh"), str(directory), *USERS],
        env=PATH_ENV,
        check=True,
        capture_output=True,
    )
    return directory


@pytest.fixture
def site_broker(tmp_path: Path, credentials: Path) -> Iterator[BrokerProcess]:
    """The shipped broker config, its secure listener reading the site's password file."""
    broker = BrokerProcess.create(tmp_path / "broker", password_file=credentials / "passwd")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            if process.poll() is None:
                process.terminate()
        for process in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def events(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_site_runs_a_job_from_environment_variables_alone(
    tmp_path: Path,
    credentials: Path,
    site_broker: BrokerProcess,
    processes: list[subprocess.Popen[bytes]],  # after the broker: stopped before it
) -> None:
    # Prepare: the shipped site job, made short, and the broker's secure listener.
    assert site_broker.secure_port is not None
    job = yaml.safe_load((REPO / "deploy" / "jobs" / "site-digits.yaml").read_text())
    job.update(rounds=2, local_steps=5, agent_wait_timeout=120)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    runs = tmp_path / "runs"
    site = {
        # Nothing FEDBUS_* from the caller's environment leaks in: each process gets
        # exactly the variables listed here.
        **{k: v for k, v in PATH_ENV.items() if not k.startswith("FEDBUS_")},
        "OMP_NUM_THREADS": "1",
        "FEDBUS_BROKER": f"127.0.0.1:{site_broker.secure_port}",
    }

    def start(argv: list[str], log: str, **variables: str) -> None:
        processes.append(
            subprocess.Popen(
                [str(BIN / argv[0]), *argv[1:]],
                env={**site, **variables},
                cwd=tmp_path,
                stdout=(tmp_path / log).open("wb"),
                stderr=subprocess.STDOUT,
            )
        )

    # Execute: every process with its sub-command and the environment, no flags.
    start(
        ["coordinator", "serve"],
        "coordinator.log",
        FEDBUS_USERNAME="coordinator",
        FEDBUS_PASSWORD_FILE=str(credentials / "coordinator.password"),
        FEDBUS_RUNS_DIR=str(runs),
    )
    for i in range(AGENTS):
        start(
            ["edge-agent", "run"],
            f"agent-{i}.log",
            FEDBUS_AGENT_ID=f"agent-{i}",
            FEDBUS_USERNAME=f"agent-{i}",
            FEDBUS_PASSWORD_FILE=str(credentials / f"agent-{i}.password"),
            FEDBUS_PARTITION=str(i),
            FEDBUS_DEVICE="cpu",
            FEDBUS_THREADS="1",
            FEDBUS_DATA=job["data"],
            FEDBUS_DATA_ARGS=json.dumps(job["data_args"]),
        )

    def submitted() -> bool:
        # Refused (exit 2) until the service's retained status says it takes jobs.
        submit = subprocess.run(
            [str(BIN / "coordinator"), "submit", str(job_file)],
            env={
                **site,
                "FEDBUS_USERNAME": "operator",
                "FEDBUS_PASSWORD_FILE": str(credentials / "operator.password"),
            },
            cwd=tmp_path,
            capture_output=True,
        )
        return submit.returncode == 0

    wait_for(submitted, 120, "`coordinator submit` to reach a running `coordinator serve`")
    log = runs / job["name"] / "events.jsonl"
    wait_for(
        lambda: any(e["event"] in ("JOB_END", "JOB_FAILED") for e in events(log)),
        240,
        f"the job to end ({log})",
    )
    # Assert: the job ran both rounds, on the agents that logged in with their ids ...
    got = events(log)
    ends = [e for e in got if e["event"] == "ROUND_END"]
    assert [e["round"] for e in ends] == [1, 2]
    assert got[-1]["event"] == "JOB_END"
    kept = {agent for e in ends for agent in e["data"]["kept"]}  # type: ignore[index]
    assert kept and kept <= {f"agent-{i}" for i in range(AGENTS)}
    # ... and the services are still serving.
    assert all(p.poll() is None for p in processes)
