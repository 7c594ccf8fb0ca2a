"""``coordinator``: serve jobs, run one job, or submit a job to a running service."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import yaml
from rich.console import Console

from coordinator import credentials, jobs_cli, package_cli, report, seed_model, watch
from coordinator.config import JobConfigError, load_job
from coordinator.job_runner import JobRunner
from coordinator.metrics_http import with_telemetry
from coordinator.process_tuning import GcFreeze, keep_freed_memory_mapped
from coordinator.scheduler import Policy
from coordinator.service import CoordinatorService
from fedbus.protocol import bus, env_config
from fedbus.protocol.broker_args import add_broker_args, broker_settings
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.messages import (
    CoordinatorStatus,
    Event,
    JobSubmission,
    decode_json,
    encode_json,
)
from fedbus.protocol.topics import Topics

console = Console(highlight=False)
# The broker sends a retained message right after SUBACK; none by then means none at all.
SUBMIT_STATUS_WAIT_S = 3.0
# Loading the model takes a few seconds; a refusal comes at once.
SUBMIT_ANSWER_WAIT_S = 30.0
NEW_RUN_HELP = (
    "when the job has a run with another configuration, move that run aside and start "
    "afresh (without it such a job is refused)"
)


def print_round(event: Event) -> None:
    """One line per round for people watching a run."""
    d = event.data
    if event.event == "ROUND_END":
        acc = f"acc {d['accuracy']:.4f}" if d.get("accuracy") is not None else "acc   -   "
        vt = f"  vt {event.virtual_time / 3600:7.2f} h" if event.virtual_time is not None else ""
        console.print(
            f"round {event.round:4d}  {acc}  updates {len(d['kept'])}/{len(d['selected'])}"
            f"  train-loss {d.get('train_loss') or 0:.4f}  {d['duration']:.2f}s{vt}"
        )
    elif event.event == "ROUND_FAILED":
        console.print(f"round {event.round:4d}  [yellow]failed[/]: {d.get('reason')}")
        for reason in sorted(set((d.get("failure_reasons") or {}).values())):
            console.print(f"            agents' reason: {reason}")
    if event.event in ("ROUND_END", "ROUND_FAILED"):
        for agent, reason in (d.get("excluded") or {}).items():
            console.print(f"[red]agent {agent} cannot run this job[/] (no longer picked): {reason}")
    if event.event == "JOB_END":
        final = d.get("accuracy")
        console.print(
            f"[bold]job {event.job} finished[/]: final test accuracy "
            f"{final if final is None else f'{final:.4f}'}"
        )
    elif event.event == "JOB_RESUMED":
        console.print(f"job {event.job} resumed after round {event.round}")
    elif event.event == "AGENTS_READY":
        console.print(f"{d['online']} agents online")


def _attach_printer(runner: JobRunner) -> None:
    runner.events.listeners.append(print_round)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_job(args.job)
    # Process-wide tuning belongs to the entry point, not the service (process_tuning.py).
    keep_freed_memory_mapped()
    freeze = GcFreeze()

    def on_runner(runner: JobRunner) -> None:
        freeze.attach(runner)
        if not args.quiet:
            _attach_printer(runner)

    service = CoordinatorService(
        broker_settings(args),
        runs_dir=Path(args.runs_dir),
        coordinator_id=args.id,
        accept_submissions=False,
        on_runner=on_runner,
    )
    service.submit(config, new_run=args.new_run)
    results = asyncio.run(
        with_telemetry(
            service.serve(exit_when_idle=True),
            broker_settings(args),
            Path(args.runs_dir),
            args.metrics_port,
            args.metrics_host,
            attach=service.attach_telemetry,
        )
    )
    if results.get(config.name):
        return 0
    reason = service.failures.get(config.name, "see the events log")
    console.print(f"[red]job {config.name} failed:[/] {reason}")
    return 1


def cmd_seed(args: argparse.Namespace) -> int:
    """Build the job's initial weights once and write them as its seed file."""
    config = load_job(args.job)
    out = Path(args.out or f"{config.name}-seed.npz")
    tensors = seed_model.build(config.model, config.seed)
    seed_model.save(out, tensors)
    params = sum(t.size for t in tensors.values())
    print(
        f"{out}: {len(tensors)} arrays, {params:,} parameters ({config.model}, seed {config.seed})"
    )
    print(f"use it with `initial_model: {out}` in {args.job}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    keep_freed_memory_mapped()
    # Job arrivals, rounds, waits and ends, also without -v.
    logging.getLogger("coordinator.jobs").setLevel(logging.INFO)
    service = CoordinatorService(
        broker_settings(args),
        runs_dir=Path(args.runs_dir),
        coordinator_id=args.id,
        on_runner=GcFreeze().attach,  # unfreezes when no loaded job runs any more
        policy=args.policy,
    )
    for path in args.jobs:
        service.submit(load_job(path))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            with_telemetry(
                service.serve(),
                broker_settings(args),
                Path(args.runs_dir),
                args.metrics_port,
                args.metrics_host,
                attach=service.attach_telemetry,
            )
        )
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    config = load_job(args.job)  # validate locally first: errors name the file and field
    data = yaml.safe_load(Path(args.job).read_text())
    payload = encode_json(JobSubmission(config=data, source=str(args.job), new_run=args.new_run))
    topics = Topics(args.prefix)
    settings = broker_settings(args)

    async def send() -> tuple[CoordinatorStatus | None, Event | None]:
        client = bus.make_client(settings, f"submit-{config.name}", persistent=False)
        async with client:
            status = await serving_coordinator(client, topics)
            if status is None:
                return None, None
            await client.subscribe(topics.job_events(config.name), qos=1)
            await client.publish(topics.job_submit(), payload, qos=1)
            return status, await first_job_event(client, args.wait)

    status, event = asyncio.run(send())
    if status is None:
        # Submissions are not retained: with no `coordinator serve` session to queue it
        # for, the broker would drop it without a word.
        console.print(
            f"[red]not submitted:[/] no `coordinator serve` has connected to the broker at "
            f"{settings.host}:{settings.port} under prefix {args.prefix!r}; start one first"
        )
        return 2
    if event is not None and event.event == "JOB_FAILED":
        console.print(
            f"[red]refused:[/] coordinator {status.coordinator}: {event.data.get('reason')}"
        )
        return 1
    if event is not None:
        console.print(f"submitted job {config.name}: {event.event} on {status.coordinator}")
    elif status.state == "offline":
        console.print(
            f"submitted job {config.name}; coordinator {status.coordinator} is offline, "
            "its session gets the job when it reconnects (within its session expiry)"
        )
    else:
        console.print(
            f"submitted job {config.name} to {status.coordinator}; it has not started "
            f"within {args.wait:g}s (watch {topics.job_status(config.name)})"
        )
    return 0


async def serving_coordinator(
    client: bus.Client, topics: Topics, wait: float = SUBMIT_STATUS_WAIT_S
) -> CoordinatorStatus | None:
    """A `coordinator serve` that takes submissions: an online one if any, else an offline
    one (its persistent session queues the job), else None."""
    await client.subscribe(topics.all_coordinator_status(), qos=1)
    found: list[CoordinatorStatus] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            async for message in client.messages:
                with contextlib.suppress(FedbusProtocolError):
                    status = decode_json(CoordinatorStatus, bytes(message.payload))  # type: ignore[arg-type]
                    if status.accepts_jobs:
                        found.append(status)
                        if status.state == "online":
                            break
    found.sort(key=lambda s: s.state != "online")
    return found[0] if found else None


async def first_job_event(client: bus.Client, wait: float) -> Event | None:
    """The job's first event after a submission: it started, resumed, or was refused."""
    answers = {"JOB_BEGIN", "JOB_RESUMED", "JOB_FAILED"}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            async for message in client.messages:
                with contextlib.suppress(FedbusProtocolError):
                    event = decode_json(Event, bytes(message.payload))  # type: ignore[arg-type]
                    if event.event in answers:
                        return event
    return None


async def retained_status(
    client: bus.Client, topic: str, wait: float = SUBMIT_STATUS_WAIT_S
) -> CoordinatorStatus | None:
    """The coordinator's retained status, or None when there is none (or it is unreadable)."""
    await client.subscribe(topic, qos=1)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            async for message in client.messages:
                with contextlib.suppress(FedbusProtocolError):
                    return decode_json(CoordinatorStatus, bytes(message.payload))
    return None


def add_metrics_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics (per agent and job) on this port; 0: any free port",
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address to serve them on")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coordinator", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve exactly one job and exit when it ends")
    run.add_argument("job", help="job YAML file")
    run.add_argument("--runs-dir", default="runs", help="run directories (events, checkpoints)")
    run.add_argument(
        "--id", default="coordinator", help="MQTT client id (fixed: persistent session)"
    )
    run.add_argument("--quiet", action="store_true")
    add_metrics_args(run)
    run.add_argument("--new-run", action="store_true", help=NEW_RUN_HELP)
    add_broker_args(run)
    run.set_defaults(func=cmd_run)

    serve = sub.add_parser(
        "serve", help="long-running service; jobs arrive by `coordinator submit`"
    )
    serve.add_argument("jobs", nargs="*", help="job YAML files to start with")
    serve.add_argument("--runs-dir", default="runs")
    serve.add_argument("--id", default="coordinator")
    serve.add_argument(
        "--policy",
        choices=[p.value for p in Policy],
        default="fifo",
        help="which waiting job the shared agents go to first (see docs/scheduling.md)",
    )
    add_metrics_args(serve)
    add_broker_args(serve)
    serve.set_defaults(func=cmd_serve)

    seed = sub.add_parser(
        "seed", help="write the job's initial weights to a seed file (its initial_model)"
    )
    seed.add_argument("job", help="job YAML file")
    seed.add_argument("--out", default=None, help="seed file (default: NAME-seed.npz)")
    seed.set_defaults(func=cmd_seed)

    submit = sub.add_parser("submit", help="hand a job to a running `coordinator serve`")
    submit.add_argument("job")
    submit.add_argument("--new-run", action="store_true", help=NEW_RUN_HELP)
    submit.add_argument(
        "--wait",
        type=float,
        default=SUBMIT_ANSWER_WAIT_S,
        help="seconds to wait for the job to start or be refused",
    )
    add_broker_args(submit)
    submit.set_defaults(func=cmd_submit)

    credentials.configure(
        sub.add_parser("credentials", help="users of the broker's secure listener")
    )
    report.configure(sub.add_parser("report", help="plots and a summary from runs' event logs"))
    jobs_cli.configure(sub.add_parser("jobs", help="list, inspect, cancel or follow served jobs"))
    watch.configure(sub.add_parser("watch", help="live view of jobs, rounds and agents"))
    package_cli.configure(sub.add_parser("package", help="compute packages: build"))

    env_config.apply_environment(parser, env_config.COORDINATOR)  # FEDBUS_*; flags win
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except (
        JobConfigError,
        FedbusProtocolError,
        credentials.CredentialsError,
        ValueError,
        OSError,
    ) as exc:
        # Bad input (a job file, an id, a path, a broker address): one line, exit 2.
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return 2
    except bus.MqttError as exc:
        where = getattr(args, "broker", "?")
        console.print(
            f"[red]error:[/] cannot reach the MQTT broker at {where}: {exc}", soft_wrap=True
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
