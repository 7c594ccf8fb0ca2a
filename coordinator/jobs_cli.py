"""``coordinator jobs list | status JOB | cancel JOB | logs JOB [-f]``, over MQTT.

``list`` and ``status`` read retained statuses (the coordinator's, with its waiting
reasons, and each job's); ``cancel`` and ``logs`` send a :class:`JobControl` to
``coordinator serve`` and wait for its reply on this client's reply topic; ``logs -f``
then follows the job's events as they are published.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from fedbus.protocol import bus
from fedbus.protocol.broker_args import add_broker_args, broker_settings
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.messages import (
    ControlReply,
    CoordinatorStatus,
    Event,
    JobControl,
    JobStatus,
    decode_json,
    encode_json,
)
from fedbus.protocol.topics import TopicKind, Topics

console = Console(highlight=False)
# Retained messages follow the SUBACK at once: this long without one means no more.
QUIET_S = 1.0
READ_AT_MOST_S = 5.0
REPLY_WAIT_S = 15.0
_ENDED = ("JOB_END", "JOB_FAILED")


async def read_retained(
    settings: bus.BrokerSettings,
) -> tuple[CoordinatorStatus | None, dict[str, JobStatus]]:
    """The coordinator's retained status and every job's.

    The broker sends the retained ones right after the subscription; the first live
    (not retained) message, a quiet second or five seconds end the reading: a busy job
    republishes its status every round.
    """
    topics = Topics(settings.prefix)
    coordinator: CoordinatorStatus | None = None
    jobs: dict[str, JobStatus] = {}
    client = bus.make_client(settings, f"jobs-{uuid.uuid4().hex[:8]}", persistent=False)
    async with client:
        await client.subscribe(topics.coordinator_status(), qos=1)
        await client.subscribe(topics.all_job_status(), qos=1)
        until = asyncio.get_running_loop().time() + READ_AT_MOST_S
        with contextlib.suppress(TimeoutError):
            while True:
                async with asyncio.timeout(QUIET_S), asyncio.timeout_at(until):
                    message = await anext(aiter(client.messages))
                if not message.retain:
                    break
                with contextlib.suppress(FedbusProtocolError):
                    payload = bytes(message.payload)  # type: ignore[arg-type]
                    kind = topics.parse(str(message.topic)).kind
                    if kind is TopicKind.COORDINATOR_STATUS:
                        coordinator = decode_json(CoordinatorStatus, payload)
                    elif kind is TopicKind.JOB_STATUS:
                        status = decode_json(JobStatus, payload)
                        jobs[status.job] = status
    return coordinator, jobs


def _state(job: str, status: JobStatus | None, coordinator: CoordinatorStatus | None) -> str:
    if coordinator is not None and job in coordinator.waiting:
        return "waiting"
    return status.state if status is not None else "pending"


def cmd_list(args: argparse.Namespace) -> int:
    coordinator, jobs = asyncio.run(read_retained(broker_settings(args)))
    names = sorted(set(jobs) | set(coordinator.jobs if coordinator else ()))
    head = "no coordinator status" if coordinator is None else (
        f"coordinator {coordinator.coordinator} {coordinator.state}, policy {coordinator.policy or '-'}"
    )  # fmt: skip
    table = Table(title=head)
    for column in ("job", "state", "round", "phase", "accuracy", "waiting for"):
        table.add_column(column)
    for name in names:
        s = jobs.get(name)
        acc = s.last_accuracy if s else None
        table.add_row(
            name,
            _state(name, s, coordinator),
            f"{s.round}/{s.rounds}" if s else "-",
            s.phase if s else "-",
            "-" if acc is None else f"{acc:.4f}",
            (coordinator.waiting.get(name, "") if coordinator else ""),
        )
    console.print(table)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    coordinator, jobs = asyncio.run(read_retained(broker_settings(args)))
    status = jobs.get(args.job)
    running = coordinator is not None and args.job in coordinator.jobs
    if status is None and not running:
        console.print(f"[red]no job {args.job!r}[/] under prefix {args.prefix!r}")
        return 1
    console.print(f"job {args.job}: {_state(args.job, status, coordinator)}")
    if status is not None:
        for key, value in status.model_dump(exclude={"schema_version", "job"}).items():
            console.print(f"  {key}: {value}")
    if coordinator is not None and args.job in coordinator.waiting:
        console.print(f"  waiting for: {coordinator.waiting[args.job]}")
    return 0


async def _request(
    settings: bus.BrokerSettings, request: JobControl, follow: bool
) -> ControlReply | None:
    topics = Topics(settings.prefix)
    assert request.reply_to is not None
    client = bus.make_client(settings, request.reply_to, persistent=False)
    async with client:
        await client.subscribe(topics.control_reply(request.reply_to), qos=1)
        if follow:  # before asking: nothing between the tail and the live events is lost
            await client.subscribe(topics.job_events(request.job), qos=1)
        await client.publish(topics.job_control(), encode_json(request), qos=1)
        reply: ControlReply | None = None
        shown: set[tuple[str, int, float]] = set()
        early: list[Event] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REPLY_WAIT_S) as waiting:
                async for message in client.messages:
                    payload = bytes(message.payload)  # type: ignore[arg-type]
                    with contextlib.suppress(FedbusProtocolError):
                        if topics.parse(str(message.topic)).kind is TopicKind.CONTROL_REPLY:
                            reply = decode_json(ControlReply, payload)
                            for line in reply.lines:
                                shown.add(_print_event_line(line))
                            if not follow or not reply.ok or any(k[0] in _ENDED for k in shown):
                                return reply  # (following a job that has ended: done)
                            waiting.reschedule(None)  # follow until the job ends or ^C
                            for event in early:
                                if _key(event) not in shown and _show(event):
                                    return reply
                        else:
                            event = decode_json(Event, payload)
                            if reply is None:
                                early.append(event)
                            elif _key(event) not in shown and _show(event):
                                return reply
        return reply


def _key(event: Event) -> tuple[str, int, float]:
    return (event.event, event.round, event.ts)


def _show(event: Event) -> bool:
    """Print one event; True when it ends the job (nothing more to follow)."""
    console.print(_format(event.event, event.round, event.ts, event.data))
    return event.event in _ENDED


def _print_event_line(line: str) -> tuple[str, int, float]:
    try:
        data = json.loads(line)
        console.print(_format(data["event"], data["round"], data["ts"], data.get("data", {})))
        return (data["event"], data["round"], data["ts"])
    except (ValueError, KeyError, TypeError):
        console.print(line)
        return ("", -1, 0.0)


def _format(name: str, round_: int, ts: float, data: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(ts))
    detail = ""
    if name == "ROUND_END":
        acc = data.get("accuracy")
        detail = f"kept {len(data.get('kept', []))}/{len(data.get('selected', []))}"
        detail += f"  acc {acc:.4f}" if acc is not None else ""
    elif name in ("ROUND_FAILED", "JOB_FAILED"):
        detail = str(data.get("reason", ""))
    elif name == "ROUND_BEGIN":
        detail = f"dispatched {len(data.get('dispatched', []))}"
    elif name == "JOB_END":
        detail = f"accuracy {data.get('accuracy')}"
    return f"{when}  round {round_:4d}  {name:<14} {detail}"


def cmd_control(args: argparse.Namespace) -> int:
    follow = bool(getattr(args, "follow", False))
    request = JobControl(
        action=args.action,
        job=args.job,
        reply_to=f"ctl-{uuid.uuid4().hex[:12]}",
        tail=getattr(args, "tail", 50),
    )
    try:
        reply = asyncio.run(_request(broker_settings(args), request, follow))
    except KeyboardInterrupt:
        return 0
    if reply is None:
        console.print(
            f"[red]no reply[/] from a `coordinator serve` under prefix {args.prefix!r} "
            f"within {REPLY_WAIT_S:.0f} s"
        )
        return 2
    if reply.message:
        console.print(reply.message if reply.ok else f"[red]{reply.message}[/]")
    return 0 if reply.ok else 1


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="jobs_command", required=True)
    listing = sub.add_parser("list", help="jobs of the coordinator, their state and progress")
    add_broker_args(listing)
    listing.set_defaults(func=cmd_list)
    status = sub.add_parser("status", help="one job's status, and why it waits")
    status.add_argument("job")
    add_broker_args(status)
    status.set_defaults(func=cmd_status)
    cancel = sub.add_parser("cancel", help="end a running job now")
    cancel.add_argument("job")
    add_broker_args(cancel)
    cancel.set_defaults(func=cmd_control, action="cancel")
    logs = sub.add_parser("logs", help="a job's event log (-f: then follow it)")
    logs.add_argument("job")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("--tail", type=int, default=50, help="how many past events (default 50)")
    add_broker_args(logs)
    logs.set_defaults(func=cmd_control, action="logs")
