"""``coordinator watch``: a live terminal view of jobs, rounds, accuracy and agents.

Subscribes to the retained statuses (coordinator, jobs, agents), telemetry and job
events, feeds them to :class:`WatchState` and redraws with ``rich.live`` a few times a
second. Read-only: it publishes nothing, so it can be left open beside a service.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import uuid

from rich.console import Console
from rich.live import Live

from coordinator.watch_state import WatchState
from fedbus.protocol import bus
from fedbus.protocol.broker_args import add_broker_args, broker_settings
from fedbus.protocol.errors import FedbusProtocolError
from fedbus.protocol.messages import (
    AgentStatus,
    CoordinatorStatus,
    Event,
    JobStatus,
    Telemetry,
    decode_json,
)
from fedbus.protocol.topics import TopicKind, Topics

log = logging.getLogger(__name__)
REFRESH_PER_SECOND = 4


def apply(state: WatchState, topics: Topics, topic: str, payload: bytes) -> None:
    """One message into the view; what cannot be read is skipped (logged at debug)."""
    try:
        kind = topics.parse(topic).kind
        match kind:
            case TopicKind.COORDINATOR_STATUS:
                state.coordinator_status(decode_json(CoordinatorStatus, payload))
            case TopicKind.JOB_STATUS:
                state.job_status(decode_json(JobStatus, payload))
            case TopicKind.AGENT_STATUS:
                state.agent_status(decode_json(AgentStatus, payload))
            case TopicKind.AGENT_TELEMETRY:
                state.telemetry(decode_json(Telemetry, payload))
            case TopicKind.JOB_EVENTS:
                state.event(decode_json(Event, payload))
    except FedbusProtocolError as exc:
        log.debug("watch: skipped %s: %s", topic, exc)


async def watch(settings: bus.BrokerSettings, console: Console) -> None:
    topics = Topics(settings.prefix)
    state = WatchState()
    with Live(state.render(), console=console, refresh_per_second=REFRESH_PER_SECOND) as live:

        async def session() -> None:
            client = bus.make_client(settings, f"watch-{uuid.uuid4().hex[:8]}", persistent=False)
            async with client:
                for topic in (
                    topics.coordinator_status(),
                    topics.all_job_status(),
                    topics.all_agent_status(),
                    topics.all_agent_telemetry(),
                    topics.all_job_events(),
                ):
                    await client.subscribe(topic, qos=0)
                async for message in client.messages:
                    payload = message.payload
                    if isinstance(payload, bytes | bytearray):
                        apply(state, topics, str(message.topic), bytes(payload))
                        live.update(state.render())

        await bus.run_with_reconnect(session, "watch")


def cmd_watch(args: argparse.Namespace) -> int:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(broker_settings(args), Console()))
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    add_broker_args(parser)
    parser.set_defaults(func=cmd_watch)
