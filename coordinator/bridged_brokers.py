"""A core mosquitto and N site brokers bridged to it, on loopback (tests and benchmarks).

Each site broker runs the shipped ``mosquitto.conf`` plus ``deploy/mosquitto/bridge.conf``
filled in for that site, so what the tests exercise is the template an operator deploys.
With ``core_pulls`` the core also runs ``bridge-core.conf`` once per site and the sites'
bridges lose their ``out`` lines (the lower-latency layout of docs/scale-out.md).
Agents connect to a site (``site_settings(i)``), the coordinator to the core
(``core_settings()``); nothing in fedbus knows there is more than one broker.
"""

from __future__ import annotations

import dataclasses
import re
import string
import threading
from pathlib import Path

import paho.mqtt.client as paho

from coordinator.broker_process import REPO_CONF, BrokerError, BrokerProcess, free_port
from fedbus.protocol.bus import BrokerSettings

BRIDGE_TEMPLATE = REPO_CONF.parent / "deploy" / "mosquitto" / "bridge.conf"
CORE_PULL_TEMPLATE = REPO_CONF.parent / "deploy" / "mosquitto" / "bridge-core.conf"
_OUT_TOPIC = re.compile(r"(?m)^topic \S+ out [012]\n")


def render_bridge(
    template: str, *, site: str, core_host: str, core_port: int, prefix: str, password: str = ""
) -> str:
    """``bridge.conf`` with its ``${...}`` placeholders filled in; a missing one raises KeyError."""
    return string.Template(template).substitute(
        SITE=site,
        CORE_HOST=core_host,
        CORE_PORT=core_port,
        PREFIX=prefix,
        BRIDGE_PASSWORD=password or "unused-on-the-loopback-dev-listener",
    )


def render_core_pull(
    template: str, *, site: str, site_host: str, site_port: int, prefix: str, password: str = ""
) -> str:
    """``bridge-core.conf`` for one site, placeholders filled in."""
    return string.Template(template).substitute(
        SITE=site,
        SITE_HOST=site_host,
        SITE_PORT=site_port,
        PREFIX=prefix,
        CORE_PASSWORD=password or "unused-on-the-loopback-dev-listener",
    )


def without_push(site_bridge: str) -> str:
    """A site's bridge with its ``out`` topic lines deleted, as when the core pulls them."""
    return _OUT_TOPIC.sub("", site_bridge)


def bridge_state_topic(prefix: str, site: str) -> str:
    """Where a bridge's retained 1 (connected) / 0 (not) lives: its ``notification_topic``."""
    return f"{prefix}/bridges/{site}/state"


@dataclasses.dataclass
class BridgedBrokers:
    core: BrokerProcess
    sites: list[BrokerProcess]
    site_names: list[str]
    prefix: str
    core_pulls: bool = False

    @classmethod
    def create(
        cls, directory: Path, sites: int, prefix: str, *, core_pulls: bool = False
    ) -> BridgedBrokers:
        names = [f"site-{i}" for i in range(sites)]
        ports: list[int] = []
        while len(ports) < sites:
            port = free_port()
            ports += [port] if port not in ports else []
        core_conf = ""
        if core_pulls:
            pull = CORE_PULL_TEMPLATE.read_text()
            core_conf = "\n".join(
                render_core_pull(pull, site=n, site_host="127.0.0.1", site_port=p, prefix=prefix)
                for n, p in zip(names, ports, strict=True)
            )
        core = BrokerProcess.create(directory / "core", extra_conf=core_conf)
        template = BRIDGE_TEMPLATE.read_text()
        site_brokers = []
        for name, port in zip(names, ports, strict=True):
            bridge = render_bridge(
                template, site=name, core_host="127.0.0.1", core_port=core.port, prefix=prefix
            )
            site_brokers.append(
                BrokerProcess.create(
                    directory / name,
                    port=port,
                    extra_conf=without_push(bridge) if core_pulls else bridge,
                )
            )
        return cls(core, site_brokers, names, prefix, core_pulls)

    def start(self, timeout: float = 20.0) -> None:
        self.core.start()
        for site in self.sites:
            site.start()
        self.wait_bridged(timeout)

    def stop(self) -> None:
        for broker in (*self.sites, self.core):
            broker.stop()

    def core_settings(self, keepalive: int = 15) -> BrokerSettings:
        return BrokerSettings(port=self.core.port, prefix=self.prefix, keepalive=keepalive)

    def site_settings(self, index: int, keepalive: int = 15) -> BrokerSettings:
        return BrokerSettings(port=self.sites[index].port, prefix=self.prefix, keepalive=keepalive)

    def site_of(self, agent_index: int) -> int:
        """Agents spread round-robin over the sites."""
        return agent_index % len(self.sites)

    def restart_site(self, index: int, timeout: float = 20.0) -> None:
        """A clean restart (SIGTERM: sessions and queues saved), then wait for its bridges."""
        name = self.site_names[index]
        self.sites[index].stop()
        self.wait_bridged(timeout, only=[name], state=b"0")  # the core saw it go
        self.sites[index].start()
        self.wait_bridged(timeout, only=[name])

    def wait_bridged(
        self, timeout: float, only: list[str] | None = None, state: bytes = b"1"
    ) -> None:
        """Block until the core's retained state of every (or each named) site's bridges is
        ``state``: b"1" connected, b"0" not."""
        sites = only or self.site_names
        wanted = {bridge_state_topic(self.prefix, s) for s in sites}
        if self.core_pulls:
            wanted |= {bridge_state_topic(self.prefix, f"core-{s}") for s in sites}
        up: set[str] = set()
        done = threading.Event()
        lock = threading.Lock()

        def on_message(_c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
            with lock:
                if message.topic in wanted:
                    if message.payload == state:
                        up.add(message.topic)
                    else:
                        up.discard(message.topic)
                    if up == wanted:
                        done.set()

        client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        client.on_message = on_message
        client.on_connect = lambda c, *_: c.subscribe(f"{self.prefix}/bridges/+/state", qos=1)
        client.connect("127.0.0.1", self.core.port)
        client.loop_start()
        try:
            if not done.wait(timeout):
                missing = sorted(wanted - up)
                raise BrokerError(f"bridge state not {state!r} within {timeout}s: {missing}")
        finally:
            client.disconnect()
            client.loop_stop()
