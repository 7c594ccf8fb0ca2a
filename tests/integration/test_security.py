"""The secure listener of the shipped mosquitto.conf: passwords, the ACL, TLS.

Every test starts its own broker from the repo's config with a password file written by
``coordinator.credentials`` and the shipped ACL (deploy/mosquitto/acl), so the topic prefix
is the default ``fedbus``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion

from coordinator.broker_process import REPO_CONF, BrokerProcess, free_port
from coordinator.credentials import add_user
from fedbus.protocol import bus, paho_speedups
from fedbus.protocol.topics import Topics

from .conftest import SPEEDUPS

REPO = Path(__file__).resolve().parents[2]
ACL = REPO / "deploy" / "mosquitto" / "acl"
NOT_AUTHORIZED = 0x87
USERS = {"coordinator": "c-pw", "monitor": "m-pw", "agent-a": "a-pw", "agent-b": "b-pw"}
JOB = "job1"
topics = Topics()
QUIET = 0.3  # how long "nothing else arrives" is watched, after a later message did arrive


@pytest.fixture
def passwd(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    for user, password in USERS.items():
        add_user(path, user, password)
    return path


@pytest.fixture
def secure(tmp_path: Path, passwd: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess.create(tmp_path / "broker", password_file=passwd)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def login(
    port: int, user: str | None, password: str | None = None, **kw: str
) -> bus.BrokerSettings:
    if user is not None and password is None:
        password = USERS[user]
    return bus.BrokerSettings(
        port=port, username=user, password=password, keepalive=5, speedups=SPEEDUPS, **kw
    )


def client(settings: bus.BrokerSettings, name: str) -> bus.Client:
    return bus.make_client(settings, name, persistent=False)


async def next_message(c: bus.Client, seconds: float = 5.0) -> bus.Message:
    async with asyncio.timeout(seconds):
        return await anext(aiter(c.messages))


async def assert_silent(c: bus.Client, seconds: float = QUIET) -> None:
    with pytest.raises(TimeoutError):
        message = await next_message(c, seconds)
        pytest.fail(f"unexpected message on {message.topic}")


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("agent-a", "wrong"), ("nobody", "a-pw")],
    ids=["anonymous", "wrong-password", "unknown-user"],
)
async def test_secure_listener_refuses_bad_logins(
    secure: BrokerProcess, user: str | None, password: str | None
) -> None:
    assert secure.secure_port is not None
    with pytest.raises(bus.MqttError) as refused:
        async with asyncio.timeout(10), client(login(secure.secure_port, user, password), "x"):
            pass
    assert getattr(refused.value, "rc", None) == NOT_AUTHORIZED


def test_the_shipped_config_has_no_anonymous_listener() -> None:
    # Every listener block of mosquitto.conf refuses anonymous clients (finding 4 of #16).
    blocks = re.split(r"(?m)^listener ", REPO_CONF.read_text())[1:]
    assert blocks, "mosquitto.conf has no listener"
    for block in blocks:
        assert re.search(r"(?m)^allow_anonymous false$", block), block.splitlines()[0]
    assert not re.search(r"(?m)^allow_anonymous true", REPO_CONF.read_text())


async def test_a_broker_from_the_shipped_config_refuses_anonymous_clients(
    tmp_path: Path, passwd: Path
) -> None:
    process = BrokerProcess.create(
        tmp_path / "broker", password_file=passwd, anonymous_loopback=False
    )
    process.start()
    try:
        assert process.port == process.secure_port
        with pytest.raises(bus.MqttError) as refused:
            async with (
                asyncio.timeout(10),
                client(bus.BrokerSettings(port=process.port, speedups=SPEEDUPS), "x"),
            ):
                pass
        assert getattr(refused.value, "rc", None) == NOT_AUTHORIZED
        async with asyncio.timeout(10), client(login(process.port, "agent-a"), "agent-a"):
            pass
    finally:
        process.stop()


async def test_the_test_launchers_dev_listener_is_anonymous(secure: BrokerProcess) -> None:
    async with (
        asyncio.timeout(10),
        client(bus.BrokerSettings(port=secure.port, speedups=SPEEDUPS), "dev"),
    ):
        pass


# -- authorisation ------------------------------------------------------------------------------


async def test_agent_cannot_publish_another_agents_update(secure: BrokerProcess) -> None:
    assert secure.secure_port is not None
    async with asyncio.timeout(15):
        async with client(login(secure.secure_port, "coordinator"), "coordinator") as coord:
            await coord.subscribe(topics.job_updates(JOB), qos=1)
            async with client(login(secure.secure_port, "agent-a"), "agent-a") as agent:
                await agent.publish(topics.job_update(JOB, "agent-b"), b"forged", qos=1)
                await agent.publish(topics.job_update(JOB, "agent-a"), b"own", qos=1)
            # One publisher's messages arrive in order: the forged one would have come first.
            message = await next_message(coord)
            assert (str(message.topic), message.payload) == (
                topics.job_update(JOB, "agent-a"),
                b"own",
            )
            await assert_silent(coord)


async def test_refused_publish_is_acknowledged_not_authorized(secure: BrokerProcess) -> None:
    """aiomqtt drops PUBACK reason codes, so this one looks at the packet through paho."""
    assert secure.secure_port is not None
    loop = asyncio.get_running_loop()
    connected: asyncio.Future[int] = loop.create_future()
    acks: dict[int, asyncio.Future[int]] = {}

    def on_connect(
        c: paho.Client, userdata: object, flags: object, rc: paho.ReasonCode, props: object
    ) -> None:
        loop.call_soon_threadsafe(connected.set_result, rc.value)

    def on_publish(
        c: paho.Client, userdata: object, mid: int, rc: paho.ReasonCode, props: object
    ) -> None:
        loop.call_soon_threadsafe(lambda: ack(mid).set_result(rc.value))

    def ack(mid: int) -> asyncio.Future[int]:  # on the loop only: no race with the paho thread
        return acks.setdefault(mid, loop.create_future())

    raw = paho.Client(CallbackAPIVersion.VERSION2, "agent-a", protocol=paho.MQTTv5)
    raw.username_pw_set("agent-a", USERS["agent-a"])
    raw.on_connect, raw.on_publish = on_connect, on_publish
    raw.connect("127.0.0.1", secure.secure_port)
    raw.loop_start()
    try:
        async with asyncio.timeout(10):
            assert await connected == 0
            codes = {}
            for owner in ("agent-b", "agent-a"):
                info = raw.publish(topics.job_update(JOB, owner), b"x", qos=1)
                codes[owner] = await ack(info.mid)
        # Accepted: 0, or 0x10 "No matching subscribers" (nobody listens here).
        assert codes["agent-b"] == NOT_AUTHORIZED
        assert codes["agent-a"] in (0x00, 0x10)
    finally:
        raw.disconnect()
        raw.loop_stop()


@pytest.mark.skipif(
    paho_speedups.PUBACK_FUTURES not in SPEEDUPS, reason="puback_futures switched off"
)
async def test_a_refused_publish_is_not_silent(
    secure: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """fedbus's own PUBACK wait (paho_speedups.publish) sees the reason code aiomqtt drops."""
    assert secure.secure_port is not None
    forged, own = topics.job_update(JOB, "agent-b"), topics.job_update(JOB, "agent-a")
    with caplog.at_level(logging.WARNING, logger="fedbus.protocol.paho_speedups"):
        async with (
            asyncio.timeout(15),
            client(login(secure.secure_port, "agent-a"), "agent-a") as agent,
        ):
            await paho_speedups.publish(agent, forged, b"forged", 1, False)
            await paho_speedups.publish(agent, own, b"own", 1, False)
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused == [f"broker refused the publish to {forged}: Not authorized"]


async def test_agent_cannot_read_another_agents_tasks(secure: BrokerProcess) -> None:
    assert secure.secure_port is not None
    async with asyncio.timeout(15):
        async with (
            client(login(secure.secure_port, "agent-a"), "agent-a") as a,
            client(login(secure.secure_port, "agent-b"), "agent-b") as b,
        ):
            # The broker acknowledges the subscription but never delivers what a may not read.
            await a.subscribe(topics.agent_tasks("agent-b"), qos=1)
            await a.subscribe(topics.agent_tasks("agent-a"), qos=1)
            await b.subscribe(topics.agent_tasks("agent-b"), qos=1)
            async with client(login(secure.secure_port, "coordinator"), "coordinator") as coord:
                await coord.publish(topics.agent_tasks("agent-b"), b"task-b", qos=1)
                await coord.publish(topics.agent_tasks("agent-a"), b"task-a", qos=1)
            got_b = await next_message(b)
            assert (str(got_b.topic), got_b.payload) == (topics.agent_tasks("agent-b"), b"task-b")
            got_a = await next_message(a)
            assert (str(got_a.topic), got_a.payload) == (topics.agent_tasks("agent-a"), b"task-a")
            await assert_silent(a)


async def test_agents_read_the_global_model_including_chunks(secure: BrokerProcess) -> None:
    assert secure.secure_port is not None
    async with asyncio.timeout(15):
        async with client(login(secure.secure_port, "coordinator"), "coordinator") as coord:
            await coord.publish(topics.job_model(JOB), b"model", qos=1, retain=True)
            await coord.publish(f"{topics.job_model(JOB)}/chunk/0", b"chunk0", qos=1, retain=True)
        async with client(login(secure.secure_port, "agent-a"), "agent-a") as a:
            await a.subscribe(f"{topics.job_model(JOB)}/#", qos=1)
            got = {str((m := await next_message(a)).topic): m.payload for _ in range(2)}
            assert got == {
                topics.job_model(JOB): b"model",
                f"{topics.job_model(JOB)}/chunk/0": b"chunk0",
            }
            # ...but may not write one.
            await a.publish(topics.job_model(JOB), b"poisoned", qos=1, retain=True)
        async with client(login(secure.secure_port, "agent-b"), "agent-b") as b:
            await b.subscribe(topics.job_model(JOB), qos=1)
            assert (await next_message(b)).payload == b"model"


async def test_coordinator_reads_updates_and_results_from_all_agents(secure: BrokerProcess) -> None:
    assert secure.secure_port is not None
    async with asyncio.timeout(15):
        async with client(login(secure.secure_port, "coordinator"), "coordinator") as coord:
            await coord.subscribe(topics.job_updates(JOB), qos=1)
            await coord.subscribe(topics.job_results(JOB), qos=1)
            await coord.subscribe(topics.all_agent_status(), qos=1)
            expected = set()
            for agent in ("agent-a", "agent-b"):
                async with client(login(secure.secure_port, agent), agent) as c:
                    for topic in (
                        topics.job_update(JOB, agent),
                        topics.job_result(JOB, agent),
                        topics.agent_status(agent),
                    ):
                        await c.publish(topic, agent.encode(), qos=1)
                        expected.add(topic)
            got = {str((await next_message(coord)).topic) for _ in expected}
            assert got == expected


async def test_monitor_reads_status_but_cannot_act_as_an_agent(secure: BrokerProcess) -> None:
    assert secure.secure_port is not None
    async with asyncio.timeout(15):
        async with client(login(secure.secure_port, "coordinator"), "coordinator") as coord:
            await coord.subscribe("fedbus/#", qos=1)
            async with client(login(secure.secure_port, "monitor"), "monitor") as mon:
                # One pattern for every status: coordinators, agents and jobs.
                await mon.subscribe("fedbus/+/+/status", qos=1)
                # The agent patterns would let user "monitor" act as agent "monitor": denied.
                await mon.publish(topics.agent_status("monitor"), b"online", qos=1)
                await mon.publish(topics.job_update(JOB, "monitor"), b"forged", qos=1)
                await mon.publish(topics.job_status(JOB), b"forged", qos=1)
                await coord.publish(topics.coordinator_status(), b"coordinator-online", qos=1)
                await coord.publish(topics.job_status(JOB), b"job-status", qos=1)
                await coord.publish(topics.agent_tasks("agent-a"), b"task", qos=1)
                seen = {str((m := await next_message(mon)).topic): m.payload for _ in range(2)}
                assert seen == {
                    topics.coordinator_status(): b"coordinator-online",
                    topics.job_status(JOB): b"job-status",
                }
                await assert_silent(mon)
            # The coordinator sees only its own three messages, none of the monitor's.
            got = [str((await next_message(coord)).topic) for _ in range(3)]
            assert got == [
                topics.coordinator_status(),
                topics.job_status(JOB),
                topics.agent_tasks("agent-a"),
            ]
            await assert_silent(coord)


async def test_agent_cannot_take_over_the_coordinators_session(secure: BrokerProcess) -> None:
    """use_username_as_clientid: connecting with someone else's client id kicks nobody."""
    assert secure.secure_port is not None
    async with asyncio.timeout(15):
        async with client(login(secure.secure_port, "coordinator"), "coordinator") as coord:
            await coord.subscribe(topics.job_updates(JOB), qos=1)
            async with client(login(secure.secure_port, "agent-a"), "coordinator") as intruder:
                await intruder.publish(topics.job_update(JOB, "agent-a"), b"a", qos=1)
                message = await next_message(coord)
            assert message.payload == b"a"
            await coord.publish(topics.agent_tasks("agent-a"), b"still connected", qos=1)


# -- TLS ----------------------------------------------------------------------------------------


def shipped_tls_block() -> str:
    """The commented-out TLS listener of mosquitto.conf, uncommented."""
    lines = REPO_CONF.read_text().splitlines()
    start = lines.index("#listener 8883")
    block = []
    for line in lines[start:]:
        if not re.match(r"#\S", line):
            break
        block.append(line[1:])
    return "\n".join(block) + "\n"


def documented_tls_commands() -> str:
    """The shell block that follows the marker in docs/security.md."""
    text = (REPO / "docs" / "security.md").read_text()
    match = re.search(r"<!-- tls-commands -->\s*```sh\n(.*?)```", text, re.S)
    assert match, "docs/security.md lost its <!-- tls-commands --> block"
    return match[1]


async def wait_listening(port: int) -> None:
    async with asyncio.timeout(5):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
async def test_tls_listener_with_documented_certificates(tmp_path: Path, passwd: Path) -> None:
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", documented_tls_commands()],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=30,
    )
    certs = tmp_path / "deploy" / "mosquitto" / "certs"
    tls_port = free_port()
    block = (
        shipped_tls_block()
        .replace("listener 8883", f"listener {tls_port} 127.0.0.1")
        .replace("deploy/mosquitto/certs/", f"{certs}/")
        .replace("password_file deploy/mosquitto/passwd", f"password_file {passwd}")
        .replace("acl_file deploy/mosquitto/acl", f"acl_file {ACL}")
    )
    assert "cafile" in block and re.search(r"(?m)^\w+ deploy/", block) is None
    broker = BrokerProcess.create(tmp_path / "broker", extra_conf=block, password_file=passwd)
    broker.start()
    try:
        await wait_listening(tls_port)
        ca = str(certs / "ca.crt")
        async with asyncio.timeout(15):
            async with client(login(tls_port, "coordinator", tls_ca=ca), "coordinator") as coord:
                await coord.subscribe(topics.job_updates(JOB), qos=1)
                async with client(login(tls_port, "agent-a", tls_ca=ca), "agent-a") as a:
                    await a.publish(topics.job_update(JOB, "agent-b"), b"forged", qos=1)
                    await a.publish(topics.job_update(JOB, "agent-a"), b"over tls", qos=1)
                message = await next_message(coord)
                assert message.payload == b"over tls"
            # TLS without a login is refused; plain MQTT on the TLS port never connects
            # (the broker resets it; aiomqtt then waits for its own connect timeout).
            with pytest.raises(bus.MqttError):
                async with client(login(tls_port, None, tls_ca=ca), "anonymous"):
                    pass
        with pytest.raises((bus.MqttError, TimeoutError)):
            async with asyncio.timeout(1), client(login(tls_port, "agent-a"), "plain"):
                pass
    finally:
        broker.stop()
