"""The main job, end to end on one machine: broker, coordinator and agents as processes.

``python -m fedbus.examples.demo`` starts mosquitto from the repo's ``mosquitto.conf`` on a free
loopback port, ``coordinator run jobs/digits.yaml``, and one ``edge-agent run`` process per
partition; prints the coordinator's per-round accuracy; and stops everything it started,
on success, on failure and on Ctrl-C.
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

REPO = Path(__file__).resolve().parents[2]  # fedbus/examples/demo.py -> the checkout


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

    broker = BrokerProcess.create(run_dir / "broker")
    broker.start()
    print(
        f"mosquitto on 127.0.0.1:{broker.port} (watch: mosquitto_sub -p {broker.port} -v -t 'fedbus/+/+/status')"
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
