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
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import cProfile
import gc
import io
import itertools
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
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import paho.mqtt  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from coordinator.broker_process import BrokerProcess  # noqa: E402
from coordinator.config import parse_job  # noqa: E402
from coordinator.events import read_events  # noqa: E402
from coordinator.job_runner import Inbound, JobRunner  # noqa: E402
from coordinator.service import CoordinatorService  # noqa: E402
from fedbus.protocol import bus, paho_speedups  # noqa: E402
from fedbus.protocol.messages import (  # noqa: E402
    AgentProfile,
    AgentStatus,
    Task,
    UpdateMeta,
    decode_envelope,
    decode_json,
    encode_envelope,
    encode_json,
)
from fedbus.protocol.topics import Topics  # noqa: E402

IN_FEATURES, OUT_FEATURES = 11_000, 1_000  # bench/big_model.py (not imported: no torch here)
UPDATE_BYTES = (IN_FEATURES * OUT_FEATURES + OUT_FEATURES) * 4
CHILD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
MB = 1e6


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# ============================================================================ bare paho
def _paho_decoder_is_stock() -> bool:
    packet = getattr(paho.mqtt, "_packet", None)
    return packet is None or (
        packet.decode_publish is paho_speedups.STOCK_DECODE_PUBLISH
        and packet.decode_puback is paho_speedups.STOCK_DECODE_PUBACK
    )


def child_bare_sub(port: int, rep: int, count: int) -> None:
    """Stock paho subscriber: first byte after SUBACK -> the count-th message."""
    # Stock means paho's own PUBLISH decoder too: fedbus installs its own only in
    # bus.make_client, which the bare processes never call.
    assert _paho_decoder_is_stock(), "the bare subscriber must run stock paho"
    state: dict[str, Any] = {"armed": False, "first": None, "last": None, "n": 0, "bytes": 0}
    original = mqtt.Client._sock_recv

    def _sock_recv(self: mqtt.Client, bufsize: int) -> bytes:
        data = original(self, bufsize)
        if data and state["armed"] and state["first"] is None:
            state["first"] = time.perf_counter()
        return data

    mqtt.Client._sock_recv = _sock_recv  # type: ignore[method-assign]
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bare-sub-{rep}", protocol=mqtt.MQTTv5
    )

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe(f"bench/bare/{rep}/+", qos=1)

    def on_subscribe(*_: Any) -> None:
        state["armed"] = True
        print("ready", flush=True)

    def on_message(c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        state["n"] += 1
        state["bytes"] += len(message.payload)
        if state["n"] >= count:
            state["last"] = time.perf_counter()
            c.disconnect()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()
    print(json.dumps({k: state[k] for k in ("first", "last", "n", "bytes")}), flush=True)


def child_bare_pub(port: int, rep: int, index: int, size: int) -> None:
    """Stock paho publisher: one ``size``-byte QoS 1 message at the go signal."""
    payload = np.random.default_rng(index).bytes(size)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bare-pub-{rep}-{index}", protocol=mqtt.MQTTv5
    )

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe(f"bench/bare/go/{rep}", qos=1)

    def on_subscribe(*_: Any) -> None:
        print("ready", flush=True)

    def on_message(c: mqtt.Client, *_: Any) -> None:
        c.publish(f"bench/bare/{rep}/{index}", payload, qos=1)

    def on_publish(c: mqtt.Client, *_: Any) -> None:
        c.disconnect()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message, client.on_publish = on_message, on_publish
    client.connect("127.0.0.1", port)
    client.loop_forever()


# --publisher-nice: the nice value of every publisher (bare publishers, agents, replay).
PUBLISHER_NICE = 0


def _publisher_prefix() -> list[str]:
    return ["nice", "-n", str(PUBLISHER_NICE)] if PUBLISHER_NICE else []


def _child(
    argv: list[str], *, stdout: Any = subprocess.PIPE, publisher: bool = False
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(_publisher_prefix() if publisher else []),
            sys.executable,
            str(Path(__file__).resolve()),
            *argv,
        ],
        stdout=stdout,
        stderr=None if stdout == subprocess.PIPE else subprocess.STDOUT,
        cwd=REPO,
        env={**os.environ, **CHILD_ENV},
    )


def bare_rep(port: int, rep: int, n: int, size: int) -> dict[str, float]:
    sub = _child(["--child", "bare-sub", "--port", str(port), "--rep", str(rep), "--count", str(n)])
    assert sub.stdout is not None
    if sub.stdout.readline().strip() != b"ready":
        raise RuntimeError("bare subscriber did not start")
    pubs = [
        _child(
            [
                "--child",
                "bare-pub",
                "--port",
                str(port),
                "--rep",
                str(rep),
                "--index",
                str(i),
                "--size",
                str(size),
            ],
            publisher=True,
        )
        for i in range(n)
    ]
    for p in pubs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != b"ready":
            raise RuntimeError("bare publisher did not start")
    go = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bare-go-{rep}", protocol=mqtt.MQTTv5
    )
    go.connect("127.0.0.1", port)
    go.loop_start()
    go.publish(f"bench/bare/go/{rep}", b"go", qos=1).wait_for_publish(10)
    go.loop_stop()
    go.disconnect()
    line = sub.stdout.readline()
    sub.wait(60)
    for p in pubs:
        p.wait(60)
    state = json.loads(line)
    window = state["last"] - state["first"]
    return {"window_s": window, "updates": state["n"], "bytes": state["bytes"]}


# ============================================================================ replay publisher
async def child_replay(port: int, agent: str, partition: int) -> None:
    """Answers every train task at once with a ready-made dense 11M-parameter update."""
    settings = bus.BrokerSettings(port=port)
    topics = Topics(settings.prefix)
    tensors = {
        "weight": np.full((OUT_FEATURES, IN_FEATURES), 1e-4, np.float32),
        "bias": np.full((OUT_FEATURES,), 1e-4, np.float32),
    }

    def status(state: str) -> bytes:
        profile = AgentProfile(partition=partition, num_samples=8) if state == "online" else None
        return encode_json(AgentStatus(agent=agent, state=state, profile=profile, ts=time.time()))  # type: ignore[arg-type]

    buffer = bytearray()
    client = bus.make_client(
        settings,
        f"agent-{agent}",
        will_topic=topics.agent_status(agent),
        will_payload=status("offline"),
        persistent=False,
    )
    async with client:
        await client.subscribe(topics.agent_tasks(agent), qos=1)
        await client.publish(topics.agent_status(agent), status("online"), qos=1, retain=True)
        async for message in client.messages:
            task, _ = decode_envelope(Task, bytes(message.payload))  # type: ignore[arg-type]
            if task.kind != "train":
                continue
            meta = UpdateMeta(
                job=task.job,
                round=task.round,
                agent=agent,
                task_id=task.task_id,
                base_version=task.model_version,
                num_examples=8,
                encoding="dense",
                utility=1.0,
                grad_norm=1.0,
                loss=1.0,
                steps=1,
            )
            payload = encode_envelope(meta, tensors, into=buffer)
            await bus.publish_large(
                client,
                topics.job_update(task.job, agent),
                payload,
                transfer=task.task_id,
                chunk_size=settings.chunk_size,
            )
            buffer = payload


# ============================================================================ fedbus phase
@dataclass
class Stall:
    """A stall of the coordinator's loop over 40 ms, seen by ``stall_watch``."""

    end: float  # perf_counter when the loop ran again
    lag: float  # the lag probe's overshoot
    cpu: float  # of it, seconds the loop thread ran on a CPU
    runq: float  # seconds it was runnable but other threads or processes had the CPUs
    stacks: list[str]  # the loop thread's stacks sampled during the stall, in order
    busy: dict[str, float]  # other threads of this process: seconds on a CPU meanwhile
    others: dict[str, list[str]]  # their stacks sampled meanwhile

    @property
    def blocked(self) -> float:
        """Neither running nor runnable: waiting for the GIL, or in a system call."""
        return max(0.0, self.lag + 0.010 - self.cpu - self.runq)


@dataclass
class Recorder:
    """What the bench sees of the in-process coordinator (all times perf_counter)."""

    client_prefix: bytes
    recvs: list[float] = field(default_factory=list)
    recv_bytes: list[int] = field(default_factory=list)
    # Reads of a PUBLISH packet's first byte (its command byte): during a round, updates.
    publish_starts: list[float] = field(default_factory=list)
    task_acks: list[float] = field(default_factory=list)
    model_publishes: list[float] = field(default_factory=list)
    inbox: list[tuple[float, str, int]] = field(default_factory=list)
    round_begins: dict[int, float] = field(default_factory=dict)
    lag: list[tuple[float, float]] = field(default_factory=list)  # (sleep end, overshoot)
    # The loop thread's schedstat at each lag sample: what it ran between two samples is an
    # upper bound on how long its own work held it; the rest of a lag is waiting for a CPU.
    sched: list[tuple[int, int]] = field(default_factory=list)
    slow_callbacks: list[str] = field(default_factory=list)
    # (end, pause, generation) of every cyclic-GC run in this process: a collection holds
    # the GIL, so it stalls the event loop whichever thread triggered it.
    gc_runs: list[tuple[float, float, int]] = field(default_factory=list)
    _gc_began: float = 0.0
    last_tick: float = 0.0  # the lag probe's last wake-up
    stalls: list[Stall] = field(default_factory=list)  # --stalls: loop stalls over 40 ms

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_began = now
        else:
            self.gc_runs.append((now, now - self._gc_began, int(info["generation"])))


class _InstrumentedInbox(asyncio.Queue):  # type: ignore[type-arg]
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def put_nowait(self, item: Inbound) -> None:
        self.recorder.inbox.append((time.perf_counter(), item.kind, len(item.payload)))
        super().put_nowait(item)


_RECORDERS: list[Recorder] = []


def install_recv_hook(recorder: Recorder) -> None:
    """Note the time of every socket read of the coordinator's client (once per process)."""
    if not _RECORDERS:
        original = mqtt.Client._sock_recv

        def _sock_recv(self: mqtt.Client, bufsize: int) -> bytes:
            # paho reads a packet's command byte alone, when it has no packet under way.
            command_read = self._in_packet["command"] == 0
            data = original(self, bufsize)
            current = _RECORDERS[-1]
            if data and bytes(self._client_id).startswith(current.client_prefix):
                now = time.perf_counter()
                current.recvs.append(now)
                current.recv_bytes.append(len(data))
                if command_read and data[0] & 0xF0 == 0x30:  # PUBLISH
                    current.publish_starts.append(now)
            return data

        mqtt.Client._sock_recv = _sock_recv  # type: ignore[method-assign]
    _RECORDERS.append(recorder)


class TimedService(CoordinatorService):
    """The real service; ``publish`` notes when task publishes return and models go out."""

    recorder: Recorder
    task_topics: set[str]
    model_topics: set[str]

    async def publish(self, topic: str, *args: Any, **kwargs: Any) -> None:
        if topic in self.model_topics:
            self.recorder.model_publishes.append(time.perf_counter())
        await super().publish(topic, *args, **kwargs)
        if topic in self.task_topics:
            self.recorder.task_acks.append(time.perf_counter())


def _thread_schedstat() -> tuple[int, int]:
    """This thread's (ns on a CPU, ns runnable but waiting for one); zeros off Linux."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run, wait, _ = f.read().split()
        return int(run), int(wait)
    except (OSError, ValueError):
        return 0, 0


async def lag_probe(recorder: Recorder, period: float = 0.010) -> None:
    while True:
        t = time.perf_counter()
        await asyncio.sleep(period)
        end = time.perf_counter()
        recorder.last_tick = end
        recorder.lag.append((end, end - t - period))
        recorder.sched.append(_thread_schedstat())


def _schedstats() -> dict[int, tuple[int, int]]:
    """Per thread of this process: (ns on a CPU, ns runnable but waiting for one)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            run, wait, _ = (task / "schedstat").read_text().split()
            out[int(task.name)] = (int(run), int(wait))
        except (OSError, ValueError):
            continue
    return out


def _where(frame: Any, depth: int = 5) -> str:
    stack = traceback.extract_stack(frame)[-depth:]
    return " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))


def stall_watch(recorder: Recorder, loop_thread: int, loop_tid: int, stop: threading.Event) -> None:
    """Watch the loop for stalls over 40 ms (``--stalls``) and say what each one was.

    Runs in its own thread, every 5 ms: during a stall it samples the stacks of the loop
    thread and of the other threads (it gets the GIL at the next switch interval unless a
    C call holds it throughout, a GC run or a bytes copy; then the next sample shows who
    called it), and from schedstat how much of the stall the loop thread spent on a CPU,
    waiting for one (other processes), and neither (blocked: on the GIL, or in a system
    call), and which other threads of this process ran meanwhile.
    """
    me = threading.get_native_id()
    history: list[tuple[float, dict[int, tuple[int, int]]]] = []  # samples before a stall
    began: float | None = None
    base: dict[int, tuple[int, int]] = {}
    stacks: list[str] = []
    others: dict[str, list[str]] = {}
    while not stop.wait(0.005):
        tick = recorder.last_tick
        now = time.perf_counter()
        if began is not None and tick != began:
            stats = _schedstats()
            names = {t.native_id: t.name for t in threading.enumerate()}
            now_loop, then_loop = stats.get(loop_tid, (0, 0)), base.get(loop_tid, (0, 0))
            run, wait = now_loop[0] - then_loop[0], now_loop[1] - then_loop[1]
            busy = {
                names.get(tid, str(tid)): (stats[tid][0] - base.get(tid, (0, 0))[0]) / 1e9
                for tid in stats
                if tid not in (loop_tid, me)
            }
            recorder.stalls.append(
                Stall(tick, tick - began - 0.010, run / 1e9, wait / 1e9, stacks, busy, others)
            )
            began, history = None, []
        if began is None:
            if tick and now - tick > 0.040:
                began, stacks, others = tick, [], {}
                before = [h for h in history if h[0] <= tick]
                base = before[-1][1] if before else _schedstats()
            else:
                history = [*history[-20:], (now, _schedstats())]
                continue
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in frames.items():
            if ident == threading.get_ident():
                continue
            seen = (
                stacks
                if ident == loop_thread
                else others.setdefault(names.get(ident, str(ident)), [])
            )
            where = _where(frame, 5 if ident == loop_thread else 3)
            if not seen or seen[-1] != where:
                seen.append(where)


class _SlowCallbacks(logging.Handler):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(logging.WARNING)
        self.recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "took" in message and "seconds" in message:
            # "Executing <Task ... coro=<...> ...> took 0.123 seconds": keep the name and time.
            head = message.split(" created at ")[0].split(" wait_for=")[0]
            self.recorder.slow_callbacks.append(f"{head[:160]} ... {message[-22:]}")


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
    kind: str, port: int, n: int, rounds: int, work: Path, debug: bool, stalls: bool
) -> dict[str, Any]:
    settings = bus.BrokerSettings(port=port)
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
            argv = [*_publisher_prefix(), sys.executable, "-m", "edge_agent.cli", "run"]
            argv += ["--id", agent]
            argv += ["--partition", str(i), "--broker", f"127.0.0.1:{port}", "--threads", "1"]
            procs.append(
                subprocess.Popen(
                    argv, cwd=REPO, env={**os.environ, **CHILD_ENV}, stdout=log, stderr=log
                )
            )
        else:
            argv = ["--child", "replay", "--port", str(port), "--id", agent, "--index", str(i)]
            procs.append(_child(argv, stdout=log, publisher=True))
    recorder = Recorder(client_prefix=f"coordinator-{kind}".encode())
    install_recv_hook(recorder)
    loop = asyncio.get_running_loop()
    handler = _SlowCallbacks(recorder)
    logging.getLogger("asyncio").addHandler(handler)
    if debug:
        loop.set_debug(True)
        loop.slow_callback_duration = 0.050
    gc.callbacks.append(recorder.on_gc)
    try:
        await wait_online(settings, set(ids), timeout=300)
        service = TimedService(
            settings,
            runs_dir=work / f"runs-{kind}",
            coordinator_id=f"coordinator-{kind}",
            accept_submissions=False,
            on_runner=lambda runner: _attach(runner, recorder),
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


def _attach(runner: JobRunner, recorder: Recorder) -> None:
    runner.inbox = _InstrumentedInbox(recorder)

    def listen(event: Any) -> None:
        if event.event == "ROUND_BEGIN":
            recorder.round_begins[event.round] = time.perf_counter()

    runner.events.listeners.append(listen)


def analyse(
    kind: str, n: int, rec: Recorder, events: list[dict[str, Any]], total: float, ok: bool
) -> dict[str, Any]:
    ends = {e["round"]: e["data"] for e in events if e["event"] == "ROUND_END"}
    lag_ends = [t for t, _ in rec.lag]
    rounds = []
    for r, begin in sorted(rec.round_begins.items()):
        aggregated = next((t for t in rec.model_publishes if t > begin), None)
        if aggregated is None or r not in ends:
            continue
        acks = [t for t in rec.task_acks if begin < t < aggregated]
        if not acks:
            continue
        acked = max(acks)
        # The first byte of the first update: the PUBACKs of the round's tasks, events and
        # the last model are read before it and are not the updates' ingest.
        i = bisect.bisect_right(rec.publish_starts, acked)
        if i >= len(rec.publish_starts) or rec.publish_starts[i] > aggregated:
            continue
        first = rec.publish_starts[i]
        ups = [(t, size) for t, k, size in rec.inbox if k == "update" and acked < t <= aggregated]
        last_in = max(t for t, _ in ups) if ups else None
        lo = bisect.bisect_left(lag_ends, first)
        hi = bisect.bisect_right(lag_ends, aggregated)
        window_lags = [lag for _, lag in rec.lag[lo:hi]]
        sched = rec.sched[max(lo - 1, 0) : hi]
        window_cpu = [(b[0] - a[0]) / 1e9 for a, b in itertools.pairwise(sched)]
        loop_cpu = (sched[-1][0] - sched[0][0]) / 1e9 if sched else 0.0
        loop_wait = (sched[-1][1] - sched[0][1]) / 1e9 if sched else 0.0
        window_gc = [(pause, gen) for end, pause, gen in rec.gc_runs if first <= end <= aggregated]
        window_stalls = [s for s in rec.stalls if first <= s.end <= aggregated]
        data = ends[r]
        durations = list(data.get("durations", {}).values())
        rounds.append(
            {
                "round": r,
                "window_s": aggregated - first,
                "all_in_s": (last_in - first) if last_in else None,
                "updates": len(data.get("kept", [])),
                "bytes": sum(size for _, size in ups),
                "messages": len(ups),
                "lag_max_s": max(window_lags) if window_lags else None,
                "lag_samples": len(window_lags),
                "cpu_between_ticks_max_s": max(window_cpu, default=0.0),
                "loop_cpu_s": loop_cpu,
                "loop_runq_s": loop_wait,
                "window_lags": window_lags,
                "gc_runs": len(window_gc),
                "gc_gen2": sum(1 for _, gen in window_gc if gen == 2),
                "gc_max_s": max((pause for pause, _ in window_gc), default=0.0),
                "stalls": window_stalls,
                "timing": data.get("timing", {}),
                "agent_wall_s": (min(durations), max(durations)) if durations else None,
                "dispatch_to_first_byte_s": first - acked,
            }
        )
    lags = sorted(lag for _, lag in rec.lag)
    return {
        "kind": kind,
        "ok": ok,
        "total_s": total,
        "rounds": rounds,
        "lag_max_job_s": lags[-1] if lags else None,
        "lag_p99_job_s": lags[int(0.99 * (len(lags) - 1))] if lags else None,
        "slow_callbacks": rec.slow_callbacks,
        "stalls_job": rec.stalls,
        "gc_full_job": [pause for _, pause, gen in rec.gc_runs if gen == 2],
    }


# ============================================================================ report
def print_fedbus(result: dict[str, Any], bare_rate: float | None) -> float | None:
    kind = result["kind"]
    label = {"agents": "fedbus, edge-agent run", "replay": "fedbus, replay publishers"}[kind]
    rounds = result["rounds"]
    if not rounds:
        print(f"{label}: no round measured (ok={result['ok']})")
        return None
    print(f"{label} ({len(rounds)} rounds, coordinator in this process):")
    for r in rounds:
        t = r["timing"]
        wall = r["agent_wall_s"]
        rate = r["updates"] / r["window_s"]
        print(
            f"  round {r['round']}: {r['updates']} updates, {r['bytes'] / MB:.0f} MB in "
            f"{r['messages']} messages; first byte -> aggregated {r['window_s']:.2f} s = "
            f"{rate:.2f} updates/s, {r['bytes'] / MB / r['window_s']:.0f} MB/s; all in after "
            f"{r['all_in_s']:.2f} s; loop lag max {1e3 * (r['lag_max_s'] or 0):.0f} ms; "
            f"GC {r['gc_runs']} runs ({r['gc_gen2']} full), longest {1e3 * r['gc_max_s']:.0f} ms"
        )
        print(
            f"    loop thread: on a CPU {r['loop_cpu_s']:.2f} s, waiting for one "
            f"{r['loop_runq_s']:.2f} s; most CPU between two lag samples "
            f"{1e3 * r['cpu_between_ticks_max_s']:.0f} ms (the loop's own work, 10 ms sleep included)"
        )
        print(
            f"    coordinator: ingest {t.get('ingest_s', 0):.2f} s (in _drain), aggregate "
            f"{t.get('aggregate_s', 0) * 1e3:.0f} ms, checkpoint {t.get('checkpoint_s', 0) * 1e3:.0f} ms; "
            f"task ack -> first byte {r['dispatch_to_first_byte_s']:.2f} s"
            + (f"; agents' reported wall {wall[0]:.2f}-{wall[1]:.2f} s" if wall else "")
        )
    windows = [r["window_s"] for r in rounds]
    window = statistics.median(windows)
    nbytes = statistics.median(r["bytes"] for r in rounds)
    updates = statistics.median(r["updates"] for r in rounds)
    rate = updates / window
    lag = max((r["lag_max_s"] or 0) for r in rounds)
    streaming = sorted(lag for r in rounds for lag in r["window_lags"])
    p99 = streaming[int(0.99 * (len(streaming) - 1))] if streaming else 0.0
    print(
        f"  median: {rate:.2f} updates/s, {nbytes / MB / window:.0f} MB/s (first byte -> "
        f"aggregated model {window:.2f} s)"
        + (
            f"; {rate / bare_rate:.2f}x the bare paho subscriber (target >= 1.3x)"
            if bare_rate
            else ""
        )
    )
    verdict = "met" if lag <= 0.050 else "MISSED"
    print(
        f"  loop lag while updates stream in: max {lag * 1e3:.0f} ms (target <= 50 ms: {verdict}), "
        f"p99 {p99 * 1e3:.0f} ms; "
        f"whole job: max {1e3 * (result['lag_max_job_s'] or 0):.0f} ms, p99 "
        f"{1e3 * (result['lag_p99_job_s'] or 0):.0f} ms"
    )
    streaming_stalls = [s for r in rounds for s in r["stalls"]]
    if streaming_stalls:
        print(f"  loop stalls over 40 ms while streaming ({len(streaming_stalls)}), longest first:")
        _print_stalls(streaming_stalls)
    other = [s for s in result["stalls_job"] if s not in streaming_stalls]
    if other:
        print(f"  loop stalls over 40 ms outside streaming ({len(other)}), longest first:")
        _print_stalls(other)
    full = result["gc_full_job"]
    print(
        f"  full GC runs over the whole job: {len(full)}"
        + (f", longest {1e3 * max(full):.0f} ms" if full else "")
    )
    if result["slow_callbacks"]:
        print(f"  asyncio slow callbacks (> 50 ms): {len(result['slow_callbacks'])}")
        for line in result["slow_callbacks"][:8]:
            print(f"    {line}")
    return rate


def _print_stalls(stalls: list[Stall], top: int = 5) -> None:
    for stall in sorted(stalls, key=lambda s: -s.lag)[:top]:
        print(
            f"    {1e3 * stall.lag:.0f} ms: on a CPU {1e3 * stall.cpu:.0f} ms, waiting for one "
            f"{1e3 * stall.runq:.0f} ms, blocked (GIL, system call) {1e3 * stall.blocked:.0f} ms"
        )
        for where in stall.stacks[:4]:
            print(f"      {where}")
        for name, cpu in sorted(stall.busy.items(), key=lambda kv: -kv[1])[:3]:
            if cpu >= 0.005:
                print(f"      meanwhile {name} ran {1e3 * cpu:.0f} ms:")
                for where in stall.others.get(name, [])[:3]:
                    print(f"        {where}")


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

    global PUBLISHER_NICE
    PUBLISHER_NICE = args.publisher_nice
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
        + (f"publishers at nice {PUBLISHER_NICE}; " if PUBLISHER_NICE else "")
        + f"work dir {work}",
        flush=True,
    )
    bare_rate = None
    fedbus: dict[str, dict[str, Any]] = {}
    try:
        if "bare" in phases:
            reps = []
            for rep in range(args.reps):
                reps.append(bare_rep(broker.port, rep, args.agents, UPDATE_BYTES))
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
