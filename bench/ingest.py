"""Update ingest: 10 publishers x 44 MB into the coordinator, beside a bare paho subscriber.

    .venv/bin/python bench/ingest.py [--agents 10] [--rounds 3] [--reps 3]
                                     [--phases bare,agents,replay] [--asyncio-debug]
                                     [--profile FILE] [--stalls]

One mosquitto (the repo config, a free port) serves every phase, one after the other:

bare     the reference: one stock paho subscriber process (``loop_forever``, QoS 1,
         MQTT 5) and N stock paho publisher processes, each holding a 44 MB payload and
         publishing it once, QoS 1, all at the same "go" message. Repeated ``--reps``
         times with fresh processes.
agents   the whole real path: ``CoordinatorService`` (this process) runs a job whose model
         is ``bench/big_model.py`` (one Linear, 11,001,000 float32 = 44.0 MB) with N
         ``edge-agent run --threads 1`` processes training one step on tiny random data;
         all N every round, no evaluation. Each round the agents receive the 44 MB global
         model, train, and publish 44 MB updates through ``edge_agent``'s own code.
replay   the same coordinator, but the N publishers are bench processes that answer each
         task at once with a ready-made dense update of the real format
         (``encode_envelope(UpdateMeta, ...)`` of the 11M layout, sent with
         ``fedbus.protocol.bus.publish_large`` exactly as an agent sends it) and skip the
         model download and training: the coordinator's ingest alone, with all
         publishers starting together as in ``bare``.

Measured the same way on both sides, at the subscriber's socket: the window runs from the
first byte of the first update: the first byte read after the go (bare), the first byte of
the first PUBLISH read after the round's last task was acknowledged (fedbus: a hook on
paho's ``_sock_recv`` in this process, which changes nothing; the PUBACKs read before it
are not ingest, and "task ack -> first byte" is the agents' model download and training),
to the last update message (bare) or to the aggregated model (fedbus: the moment the runner
hands the new global model to ``publish``, after every update was decoded, checked,
written into its row and FedAvg ran). Updates/s = N / window, MB/s = update bytes /
window. For fedbus also: the time until the last update message was in the inbox.

Loop lag: a task in the coordinator's event loop sleeps 10 ms in a loop and records by
how much each sleep overshot; the figures are the largest overshoot and the 99th
percentile while updates stream in (first byte -> aggregated model), and over the whole
job. Every round also lists the cyclic-GC runs in its window (a collection holds the GIL
and so stalls the loop from any thread). ``--stalls`` samples the loop thread's stack
once per stall over 40 ms (from a watchdog thread) and lists where the loop was.
``--asyncio-debug`` also turns on asyncio's debug mode and lists the callbacks that ran
longer than 50 ms (debug mode slows the loop; the lag figures of such a run are not the
ones to quote).
``--profile FILE`` runs the fedbus phases under cProfile (the loop thread's CPU time) and
prints the top functions.

Targets (issue): fedbus ingest >= 1.3x the bare stock-paho subscriber in the same run;
the coordinator's event loop never blocks for more than 50 ms while updates stream in.

The parts: ingest_bare.py (stock paho children), ingest_replay.py (the replay publisher),
ingest_probes.py (what the bench sees of the coordinator), ingest_analysis.py (the figures),
ingest_common.py (sizes, child processes); this file runs the phases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import logging
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt

from bench.ingest_analysis import analyse, print_fedbus
from bench.ingest_bare import bare_rep, child_bare_pub, child_bare_sub
from bench.ingest_common import (
    CHILD_ENV,
    MB,
    REPO,
    UPDATE_BYTES,
    Launcher,
    loadavg,
    speedups_from_env,
)
from bench.ingest_probes import (
    Recorder,
    SlowCallbacks,
    TimedService,
    attach,
    install_recv_hook,
    lag_probe,
    stall_watch,
)
from bench.ingest_replay import child_replay
from coordinator.broker_process import BrokerProcess
from coordinator.config import parse_job
from coordinator.events import read_events
from coordinator.process_tuning import GcFreeze, keep_freed_memory_mapped
from fedbus.protocol import bus
from fedbus.protocol.messages import AgentStatus, decode_json
from fedbus.protocol.topics import Topics


async def wait_online(settings: bus.BrokerSettings, agents: set[str], timeout: float) -> None:
    topics = Topics(settings.prefix)
    online: set[str] = set()
    async with bus.make_client(settings, f"bench-online-{os.getpid()}", persistent=False) as c:
        await c.subscribe(topics.all_agent_status(), qos=1)
        async with asyncio.timeout(timeout):
            async for message in c.messages:
                status = decode_json(AgentStatus, bytes(message.payload))  # type: ignore[arg-type]
                if status.state == "online":
                    online.add(status.agent)
                else:
                    online.discard(status.agent)
                if agents <= online:
                    return


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def fedbus_phase(
    kind: str,
    port: int,
    n: int,
    rounds: int,
    work: Path,
    debug: bool,
    stalls: bool,
    launcher: Launcher,
) -> dict[str, Any]:
    settings = bus.BrokerSettings(port=port, speedups=speedups_from_env())
    topics = Topics(settings.prefix)
    name = f"ingest-{kind}"
    ids = [f"{kind}-{i}" for i in range(n)]
    config = parse_job(
        {
            "name": name,
            "model": "bench.big_model:make_model",
            "data": "bench.big_model:load_partition",
            "data_args": {"num_partitions": n},
            "rounds": rounds,
            "num_participants": n,
            "overcommitment": 1.0,
            "clients_required": n,
            "min_agents": n,
            "agent_wait_timeout": 300,
            "round_timeout": 300,
            "local_steps": 1,
            "batch_size": 8,
            "momentum": 0.0,
            "eval_interval": 0,
        },
        f"<bench {name}>",
    )
    logs = work / f"logs-{kind}"
    logs.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    for i, agent in enumerate(ids):
        log = (logs / f"{agent}.log").open("wb")
        if kind == "agents":
            argv = [*launcher.publisher_prefix(), sys.executable, "-m", "edge_agent.cli", "run"]
            argv += ["--id", agent]
            argv += ["--partition", str(i), "--broker", f"127.0.0.1:{port}", "--threads", "1"]
            procs.append(
                subprocess.Popen(
                    argv, cwd=REPO, env={**os.environ, **CHILD_ENV}, stdout=log, stderr=log
                )
            )
        else:
            argv = ["--child", "replay", "--port", str(port), "--id", agent, "--index", str(i)]
            procs.append(launcher.child(argv, stdout=log, publisher=True))
    recorder = Recorder(client_prefix=f"coordinator-{kind}".encode())
    install_recv_hook(recorder)
    loop = asyncio.get_running_loop()
    handler = SlowCallbacks(recorder)
    logging.getLogger("asyncio").addHandler(handler)
    if debug:
        loop.set_debug(True)
        loop.slow_callback_duration = 0.050
    gc.callbacks.append(recorder.on_gc)
    freeze = GcFreeze()  # as `coordinator run` does (coordinator/process_tuning.py)
    try:
        await wait_online(settings, set(ids), timeout=300)
        service = TimedService(
            settings,
            runs_dir=work / f"runs-{kind}",
            coordinator_id=f"coordinator-{kind}",
            accept_submissions=False,
            on_runner=lambda runner: (attach(runner, recorder), freeze.attach(runner)),
        )
        service.recorder = recorder
        service.task_topics = {topics.agent_tasks(a) for a in ids}
        service.model_topics = {topics.job_model(name)}
        service.submit(config)
        probe = asyncio.create_task(lag_probe(recorder))
        watch_stop = threading.Event()
        if stalls:
            threading.Thread(
                target=stall_watch,
                args=(recorder, threading.get_ident(), threading.get_native_id(), watch_stop),
                daemon=True,
            ).start()
        began = time.perf_counter()
        results = await service.serve(exit_when_idle=True)
        total = time.perf_counter() - began
        watch_stop.set()
        probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probe
    finally:
        gc.callbacks.remove(recorder.on_gc)
        loop.set_debug(False)
        logging.getLogger("asyncio").removeHandler(handler)
        _stop(procs)
    events = read_events(work / f"runs-{kind}" / name / "events.jsonl")
    return analyse(kind, n, recorder, events, total, bool(results.get(name)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="fedbus rounds per phase")
    parser.add_argument("--reps", type=int, default=3, help="bare repetitions")
    parser.add_argument("--phases", default="bare,agents,replay")
    parser.add_argument("--asyncio-debug", action="store_true")
    parser.add_argument(
        "--publisher-nice",
        type=int,
        default=0,
        help="run every publisher process (bare, agents, replay) at this nice value",
    )
    parser.add_argument(
        "--stalls",
        action="store_true",
        help="sample the coordinator loop's stack during every stall over 40 ms",
    )
    parser.add_argument("--profile", default=None, help="cProfile the fedbus phases into FILE")
    parser.add_argument("--work", default=None)
    # child modes (this file starts itself)
    parser.add_argument(
        "--child", choices=["bare-sub", "bare-pub", "replay"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rep", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=UPDATE_BYTES, help=argparse.SUPPRESS)
    parser.add_argument("--id", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "bare-sub":
        return child_bare_sub(args.port, args.rep, args.count)
    if args.child == "bare-pub":
        return child_bare_pub(args.port, args.rep, args.index, args.size)
    if args.child == "replay":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(child_replay(args.port, args.id, args.index))
        return None

    launcher = Launcher(nice=args.publisher_nice)
    keep_freed_memory_mapped()  # as `coordinator run` does: this process hosts a coordinator
    phases = [p for p in args.phases.split(",") if p]
    work = Path(args.work or tempfile.mkdtemp(prefix="fedbus-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess.create(work / "broker")
    broker.start()
    tree = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"fedbus {tree}, paho-mqtt {paho.mqtt.__version__}, "
        f"{os.cpu_count()} cores, load {loadavg()}; {args.agents} publishers x "
        f"{UPDATE_BYTES / MB:.1f} MB; chunk size {bus.BrokerSettings().chunk_size / MB:.1f} MB; "
        + f"paho speed-ups {','.join(sorted(speedups_from_env())) or 'off'}; "
        + (f"publishers at nice {launcher.nice}; " if launcher.nice else "")
        + f"work dir {work}",
        flush=True,
    )
    bare_rate = None
    fedbus: dict[str, dict[str, Any]] = {}
    try:
        if "bare" in phases:
            reps = []
            for rep in range(args.reps):
                reps.append(bare_rep(launcher, broker.port, rep, args.agents, UPDATE_BYTES))
                r = reps[-1]
                print(
                    f"bare rep {rep}: {r['updates']} x {r['bytes'] / r['updates'] / MB:.1f} MB in "
                    f"{r['window_s']:.2f} s (load {loadavg()})",
                    flush=True,
                )
            window = statistics.median(r["window_s"] for r in reps)
            bare_rate = args.agents / window
            print(
                f"bare stock paho subscriber (median of {len(reps)}): {bare_rate:.2f} updates/s, "
                f"{args.agents * UPDATE_BYTES / MB / window:.0f} MB/s (first byte -> last message "
                f"{window:.2f} s)",
                flush=True,
            )
        # CPU time of the loop thread, not wall time: waits for a CPU or the GIL are not its work.
        profiler = cProfile.Profile(time.thread_time) if args.profile else None
        for kind in ("agents", "replay"):
            if kind not in phases:
                continue
            print(f"fedbus phase {kind} ... (load {loadavg()})", flush=True)
            if profiler:
                profiler.enable()
            fedbus[kind] = asyncio.run(
                fedbus_phase(
                    kind,
                    broker.port,
                    args.agents,
                    args.rounds,
                    work,
                    args.asyncio_debug,
                    args.stalls,
                    launcher,
                )
            )
            if profiler:
                profiler.disable()
            print_fedbus(fedbus[kind], bare_rate)
            sys.stdout.flush()
        if profiler:
            profiler.dump_stats(args.profile)
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
            print(out.getvalue())
    finally:
        broker.stop()
    (work / "result.json").write_text(json.dumps({"bare_rate": bare_rate, **fedbus}, default=str))
    print(f"load at the end {loadavg()}")


if __name__ == "__main__":
    main()
