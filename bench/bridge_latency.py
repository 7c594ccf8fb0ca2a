"""Task -> update round trip through a bridged site broker, one message at a time.

A "coordinator" client on the core publishes a small QoS 1 task; an "agent" client answers
each with a QoS 1 update; the figure is the time from publish to the update's arrival at
the coordinator. Three layouts on loopback: both clients on one broker; the agent on a
site broker pushing up ``deploy/mosquitto/bridge.conf``; the same with the core pulling the
agents' topics (``bridge-core.conf``). Clients set TCP_NODELAY, as fedbus's do. Explains
docs/scale-out.md's latency section: mosquitto 2.0 does not set TCP_NODELAY on a bridge's
outgoing connection, so a lone message pushed up it waits for the core's delayed ACK.

    python bench/bridge_latency.py [--trips 50]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho

from coordinator.bridged_brokers import BridgedBrokers

TASK = "fedbus/agents/a-0/tasks"
UPDATE = "fedbus/jobs/job/updates/a-0"


def client(port: int, name: str) -> paho.Client:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=name)
    c.connect("127.0.0.1", port)
    c.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.loop_start()
    return c


def subscribed(c: paho.Client, topic: str) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *_: done.set()
    c.subscribe(topic, qos=1)
    if not done.wait(10):
        raise RuntimeError(f"no SUBACK for {topic}")


def round_trips(core_port: int, agent_port: int, trips: int, label: str) -> list[float]:
    arrived = threading.Event()
    agent = client(agent_port, f"agent-{label}")
    agent.on_message = lambda c, _u, m: c.publish(UPDATE, m.payload, qos=1)
    subscribed(agent, TASK)
    coordinator = client(core_port, f"coordinator-{label}")
    coordinator.on_message = lambda *_: arrived.set()
    subscribed(coordinator, "fedbus/jobs/+/updates/+")
    try:
        # The subscriptions reach the far broker through the bridge: wait for one trip.
        deadline = time.monotonic() + 20
        while not arrived.is_set():
            coordinator.publish(TASK, b"warm-up", qos=1)
            if time.monotonic() > deadline or arrived.wait(0.5):
                break
        seconds = []
        for _ in range(trips):
            arrived.clear()
            began = time.perf_counter()
            coordinator.publish(TASK, b"t" * 300, qos=1)
            if not arrived.wait(5):
                raise RuntimeError(f"{label}: an update did not arrive within 5 s")
            seconds.append(time.perf_counter() - began)
        return seconds
    finally:
        for c in (agent, coordinator):
            c.disconnect()
            c.loop_stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trips", type=int, default=50)
    args = parser.parse_args()
    for layout in ("single", "push", "pull"):
        brokers = BridgedBrokers.create(
            Path(tempfile.mkdtemp(prefix="fedbus-latency-")), 1, "fedbus",
            core_pulls=layout == "pull",
        )  # fmt: skip
        brokers.start()
        try:
            agent_port = brokers.core.port if layout == "single" else brokers.sites[0].port
            ms = [s * 1e3 for s in round_trips(brokers.core.port, agent_port, args.trips, layout)]
        finally:
            brokers.stop()
        print(
            f"{layout:6s} task -> update round trip: median {statistics.median(ms):6.2f} ms, "
            f"p90 {statistics.quantiles(ms, n=10)[-1]:6.2f} ms ({args.trips} trips)"
        )


if __name__ == "__main__":
    main()
