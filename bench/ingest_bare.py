"""The bare phase of ``bench/ingest.py``: stock paho, one subscriber and N publishers.

The reference the coordinator's ingest is compared with: a stock paho subscriber process
(``loop_forever``, QoS 1, MQTT 5) and N stock paho publisher processes, each publishing one
payload at the same "go" message; the window runs from the first byte read after the go to
the last message.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import paho.mqtt
import paho.mqtt.client as mqtt

from bench.ingest_common import Launcher
from fedbus.protocol import paho_speedups


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


def bare_rep(launcher: Launcher, port: int, rep: int, n: int, size: int) -> dict[str, float]:
    sub = launcher.child(
        ["--child", "bare-sub", "--port", str(port), "--rep", str(rep), "--count", str(n)]
    )
    assert sub.stdout is not None
    if sub.stdout.readline().strip() != b"ready":
        raise RuntimeError("bare subscriber did not start")
    pubs = [
        launcher.child(
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
