"""The Flower half of ``bench/vs_flower.py``: the same FedAvg job as a Flower app.

Runs in its own virtual environment (``.venv-flower``: Flower pins its own grpc, protobuf
and ray, and the project's venv stays clean); ``bench/vs_flower.py`` starts it as a
subprocess and reads the JSON it writes. Never imported by fedbus itself.

The job is the fedbus one, step for step: the model and the partitions come from the
repository's ``fedbus/examples/digits.py`` (imported, not copied: the repository root is put on
``sys.path``), the initial weights are ``torch.manual_seed(seed); make_model()`` as the
fedbus coordinator draws them, and a client trains exactly as ``edge_agent.trainer``
does: a fresh SGD optimizer (lr, momentum) per round, ``local_steps`` mini-batches of
``batch_size`` drawn from ``torch.randperm`` with a generator seeded
``seed * 1_000_003 + round * 7919 + partition``, reduction "none" then mean. FedAvg is
weighted by the number of training examples; every round evaluates the new global model
on every client's held-out split, weighted by test examples (fedbus: ``eval_interval:
1``, all agents validate). Each client process keeps its partition and model instance
between rounds, as a fedbus agent does.

Timestamps (``time.time()``, one JSON line each, appended to the timing file):
``round_start`` (configure_train), ``train_end`` (after aggregate_train), ``round_end``
(after aggregate_evaluate, with the accuracy) from the server; ``fit`` (start of every
client train call) from the clients.

    .venv-flower/bin/python bench/flower_side.py sim    --job JOB.json --out RESULT.json
    .venv-flower/bin/python bench/flower_side.py deploy --job JOB.json --out RESULT.json

``sim`` is the simulation engine (``flwr.simulation.run_simulation``, Ray actors, one CPU
each). ``deploy`` is the deployment engine on loopback: one ``flower-superlink``, N
``flower-supernode`` processes (partition-id, num-partitions in their node config), and
``flwr run`` of a Flower app directory written next to the job (pyproject + this file).
The job travels to every Flower process in the environment variable FEDBUS_BENCH_JOB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

JOB_ENV = "FEDBUS_BENCH_JOB"
REPO_ENV = "FEDBUS_REPO"


def _repo() -> Path:
    return Path(os.environ.get(REPO_ENV) or Path(__file__).resolve().parent.parent)


if str(_repo()) not in sys.path:
    sys.path.insert(0, str(_repo()))

import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)  # as `edge-agent run --threads 1`


def _job() -> dict[str, Any]:
    return json.loads(os.environ[JOB_ENV])


def _stamp(event: str, **data: Any) -> None:
    line = json.dumps({"ev": event, "t": time.time(), "pid": os.getpid(), **data}) + "\n"
    fd = os.open(_job()["timing_file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- client side
_PARTITIONS: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}
_MODEL: list[nn.Module] = []


def _partition(pid: int, n: int) -> tuple[torch.Tensor, ...]:
    if (pid, n) not in _PARTITIONS:
        from fedbus.examples.digits import load_partition

        job = _job()
        train, test = load_partition(pid, n, alpha=job["alpha"], seed=job["data_seed"])
        _PARTITIONS[(pid, n)] = (*train.tensors, *test.tensors)
    return _PARTITIONS[(pid, n)]


def _model() -> nn.Module:
    if not _MODEL:
        from fedbus.examples.digits import make_model

        _MODEL.append(make_model())
    return _MODEL[0]


def _node(context: Context) -> tuple[int, int]:
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    _stamp("fit")
    job = _job()
    pid, n = _node(context)
    x, y, _, _ = _partition(pid, n)
    model = _model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    server_round = int(msg.content["config"]["server-round"])
    generator = torch.Generator(device="cpu").manual_seed(
        job["seed"] * 1_000_003 + server_round * 7919 + pid
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=job["lr"], momentum=job["momentum"])
    model.train()
    count = int(y.shape[0])
    order, cursor, loss_sum, samples = torch.empty(0, dtype=torch.long), 0, 0.0, 0
    for _ in range(job["local_steps"]):
        size = min(job["batch_size"], count)
        if cursor + size > len(order):
            order, cursor = torch.randperm(count, generator=generator), 0
        idx = order[cursor : cursor + size]
        cursor += size
        optimizer.zero_grad(set_to_none=True)
        losses = nn.functional.cross_entropy(model(x[idx]), y[idx], reduction="none")
        losses.mean().backward()
        optimizer.step()
        loss_sum += float(losses.detach().sum())
        samples += int(losses.shape[0])
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord(
                {"train_loss": loss_sum / max(samples, 1), "num-examples": count}
            ),
        }
    )
    return Message(content=content, reply_to=msg)


@client_app.evaluate()
@torch.no_grad()
def evaluate(msg: Message, context: Context) -> Message:
    pid, n = _node(context)
    _, _, tx, ty = _partition(pid, n)
    model = _model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    model.eval()
    logits = model(tx)
    count = int(ty.shape[0])
    loss = float(nn.functional.cross_entropy(logits, ty, reduction="sum")) / max(count, 1)
    accuracy = int((logits.argmax(dim=1) == ty).sum()) / max(count, 1)
    metrics = MetricRecord({"accuracy": accuracy, "loss": loss, "num-examples": count})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)


# ---------------------------------------------------------------------------- server side
class TimedFedAvg(FedAvg):
    """FedAvg that stamps the start of each round, the end of training and of evaluation."""

    def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
        _stamp("round_start", round=server_round)
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
        replies = list(replies)
        out = super().aggregate_train(server_round, replies)
        _stamp("train_end", round=server_round, replies=len(replies))
        return out

    def aggregate_evaluate(self, server_round, replies):  # type: ignore[no-untyped-def]
        replies = list(replies)
        metrics = super().aggregate_evaluate(server_round, replies)
        _stamp(
            "round_end",
            round=server_round,
            replies=len(replies),
            accuracy=None if metrics is None else float(metrics["accuracy"]),
            loss=None if metrics is None else float(metrics["loss"]),
        )
        return metrics


server_app = ServerApp()


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
    job = _job()
    from fedbus.examples.digits import make_model

    torch.manual_seed(job["seed"])
    initial = ArrayRecord(make_model().state_dict())
    n = job["num_clients"]
    strategy = TimedFedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=n,
        min_evaluate_nodes=n,
        min_available_nodes=n,
    )
    _stamp("server_start")
    strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=job["rounds"],
        timeout=job.get("round_timeout", 3600),
        train_config=ConfigRecord({}),
        evaluate_config=ConfigRecord({}),
    )
    _stamp("server_end")


# ---------------------------------------------------------------------------- launchers
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_sim(job: dict[str, Any]) -> dict[str, Any]:
    from flwr.simulation import run_simulation

    began = time.time()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=job["num_clients"],
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
        },
    )
    return {"engine": "flower-sim", "call_began": began, "call_ended": time.time()}


APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedbusbench"
version = "1.0.0"
description = "fedbus bench: the digits FedAvg job on Flower"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedbus"

[tool.flwr.app.components]
serverapp = "flower_side:server_app"
clientapp = "flower_side:client_app"

[tool.flwr.app.config]
"""


def run_deploy(job: dict[str, Any], work: Path, timeout: float) -> dict[str, Any]:
    """SuperLink + N SuperNodes on loopback, then ``flwr run``; all stopped at the end."""
    bindir = Path(sys.executable).parent
    work.mkdir(parents=True, exist_ok=True)
    app = work / "app"
    app.mkdir(exist_ok=True)
    shutil.copy(Path(__file__), app / "flower_side.py")
    (app / "pyproject.toml").write_text(APP_PYPROJECT)
    home = work / "flwr-home"
    home.mkdir(exist_ok=True)
    link_port = _free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "bench"\n\n'
        f'[superlink.bench]\naddress = "127.0.0.1:{link_port}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        # SuperLink and SuperNode start `flower-superexec` and `flwr-*` helpers from PATH.
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(home),
        JOB_ENV: json.dumps(job),
        REPO_ENV: str(_repo()),
    }
    procs: list[subprocess.Popen[bytes]] = []
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=work,
            stdout=(logs / f"{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    result: dict[str, Any] = {"engine": "flower-deploy", "work": str(work)}
    try:
        t0 = time.time()
        start(
            "superlink",
            [
                str(bindir / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(link_port),
            ],
        )
        _wait_port(link_port, 60)
        for i in range(job["num_clients"]):
            start(
                f"supernode-{i}",
                [
                    str(bindir / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{link_port}",
                    "--port",
                    str(_free_port()),
                    "--node-config",
                    f"partition-id={i} num-partitions={job['num_clients']}",
                ],
            )
        ready = _wait_nodes(bindir, env, job["num_clients"], work, 300)
        result["nodes_ready_s"] = time.time() - t0 if ready else None
        result["nodes_seen"] = ready
        result["run_began"] = time.time()
        run = start("flwr-run", [str(bindir / "flwr"), "run", str(app), "bench", "--stream"])
        deadline = time.time() + timeout
        while time.time() < deadline and run.poll() is None:
            if _count(job["timing_file"], "round_end") >= job["rounds"]:
                break
            time.sleep(0.2)
        result["run_ended"] = time.time()
        result["timed_out"] = _count(job["timing_file"], "round_end") < job["rounds"]
        result["flwr_run_rc"] = run.poll()
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return result


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"flower-superlink did not listen on {port} within {timeout}s")


def _wait_nodes(bindir: Path, env: dict[str, str], n: int, work: Path, timeout: float) -> int:
    """Poll ``flwr supernode ls`` until n nodes are online; returns how many were seen."""
    deadline = time.time() + timeout
    seen = 0
    while time.time() < deadline:
        out = subprocess.run(
            [str(bindir / "flwr"), "supernode", "ls", "bench", "--format", "json"],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
        )
        with contextlib.suppress(ValueError):
            data = json.loads(out.stdout)
            nodes = data.get("nodes", data) if isinstance(data, dict) else data
            seen = sum(
                1
                for node in nodes
                if str(node.get("status", "online")).lower() in ("online", "registered", "active")
            )
            if seen >= n:
                return seen
        time.sleep(1.0)
    return seen


def _count(path: str, event: str) -> int:
    try:
        text = Path(path).read_text()
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if f'"ev": "{event}"' in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["sim", "deploy"])
    parser.add_argument("--job", required=True, help="job JSON written by bench/vs_flower.py")
    parser.add_argument("--out", required=True, help="where to write the result JSON")
    parser.add_argument("--work", default=None, help="deploy: working directory")
    parser.add_argument("--timeout", type=float, default=600, help="deploy: give up after")
    args = parser.parse_args()
    job = json.loads(Path(args.job).read_text())
    os.environ[JOB_ENV] = json.dumps(job)
    os.environ[REPO_ENV] = str(_repo())
    if args.mode == "sim":
        result = run_sim(job)
    else:
        result = run_deploy(job, Path(args.work or Path(args.job).parent / "deploy"), args.timeout)
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
