"""deploy/mosquitto bridge templates against the topic layout of fedbus.protocol.topics.

Every topic an agent or the coordinator uses crosses a bridge in the right direction with
its QoS, none crosses both ways (a loop), and the core-pulls layout carries exactly what
the site stops pushing.
"""

from __future__ import annotations

import re

import pytest
from paho.mqtt.client import topic_matches_sub

from coordinator.bridged_brokers import (
    BRIDGE_TEMPLATE,
    CORE_PULL_TEMPLATE,
    render_bridge,
    render_core_pull,
    without_push,
)
from fedbus.protocol.topics import Topics

PREFIX = "lab/fl"
T = Topics(PREFIX)
# topic -> (direction seen from the site broker, QoS); None: stays on the core
EXPECTED: dict[str, tuple[str, int] | None] = {
    T.agent_status("a-1"): ("out", 1),
    T.agent_telemetry("a-1"): ("out", 0),
    T.job_update("job-1", "a-1"): ("out", 1),
    T.job_result("job-1", "a-1"): ("out", 1),
    T.agent_tasks("a-1"): ("in", 1),
    T.job_model("job-1"): ("in", 1),
    T.job_model_chunk("job-1", 3): ("in", 1),
    T.coordinator_status(): ("in", 1),
    T.job_status("job-1"): ("in", 1),
    T.job_submit(): None,  # operators submit at the core
    T.job_events("job-1"): None,  # watched at the core
}


def topic_lines(conf: str) -> list[tuple[str, str, int]]:
    return [
        (m[1], m[2], int(m[3])) for m in re.finditer(r"(?m)^topic (\S+) (in|out|both) (\d)$", conf)
    ]


def site_bridge() -> str:
    return render_bridge(
        BRIDGE_TEMPLATE.read_text(),
        site="lab-a",
        core_host="core.example.org",
        core_port=8883,
        prefix=PREFIX,
        password="pw",
    )


def test_rendering_fills_every_placeholder() -> None:
    core = render_core_pull(
        CORE_PULL_TEMPLATE.read_text(), site="lab-a", site_host="h", site_port=1884, prefix=PREFIX
    )
    for conf in (site_bridge(), core):
        assert "$" not in conf
    assert "address core.example.org:8883" in site_bridge()
    assert "connection fedbus-core-lab-a" in core


@pytest.mark.parametrize("topic", sorted(EXPECTED))
def test_each_topic_crosses_the_site_bridge_one_way_with_its_qos(topic: str) -> None:
    matches = {(d, q) for pattern, d, q in topic_lines(site_bridge()) if topic_matches_sub(pattern, topic)}
    expected = EXPECTED[topic]
    assert matches == (set() if expected is None else {expected})


def test_the_core_pulls_exactly_what_the_site_stops_pushing() -> None:
    pushed = {(p, q) for p, d, q in topic_lines(site_bridge()) if d == "out"}
    assert len(pushed) == 4
    remaining = topic_lines(without_push(site_bridge()))
    assert all(d == "in" for _, d, _ in remaining)
    core = render_core_pull(
        CORE_PULL_TEMPLATE.read_text(), site="lab-a", site_host="h", site_port=1884, prefix=PREFIX
    )
    pulled = topic_lines(core)
    assert all(d == "in" for _, d, _ in pulled)
    assert {(p, q) for p, _, q in pulled} == pushed


def test_both_sides_keep_sessions_across_restarts() -> None:
    for conf in (site_bridge(), CORE_PULL_TEMPLATE.read_text()):
        assert re.search(r"(?m)^cleansession false$", conf)
        assert re.search(r"(?m)^local_cleansession false$", conf)
        # MQTT 3.1.1 + try_private: a 2.0 MQTT 5 bridge loses its session on reconnect.
        assert re.search(r"(?m)^bridge_protocol_version mqttv311$", conf)
        assert re.search(r"(?m)^try_private true$", conf)
