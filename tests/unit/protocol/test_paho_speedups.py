"""Which paho speed-ups a client gets: the switch, the version guards, one warning each."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from fedbus.protocol import bus, paho_speedups

ALL = paho_speedups.ALL


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Stock decoders and no warning given yet; the decoders' state is put back after."""
    had = paho_speedups.decoders_installed()
    paho_speedups.uninstall_decoders()
    monkeypatch.setattr(paho_speedups, "_WARNED", set())
    try:
        yield
    finally:
        if had:
            paho_speedups.install_decoders()
        else:
            paho_speedups.uninstall_decoders()


def client(speedups: frozenset[str]) -> bus.Client:
    return bus.make_client(bus.BrokerSettings(speedups=speedups), "speedups-test")  # never connects


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("on", ALL),
        ("ALL", ALL),
        ("off", frozenset()),
        ("", frozenset()),
        ("decoders", frozenset({"decoders"})),
        (" decoders , puback_futures ", frozenset({"decoders", "puback_futures"})),
    ],
)
def test_the_switch_reads_on_off_or_a_list(text: str, expected: frozenset[str]) -> None:
    assert paho_speedups.parse_speedups(text) == expected


def test_a_dropped_patch_is_accepted_with_a_warning_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedbus.protocol.paho_speedups"):
        names = paho_speedups.parse_speedups("decoders,message_iterator", "FEDBUS_PAHO_SPEEDUPS")
    assert names == {"decoders"}
    assert "message_iterator was dropped" in caplog.text


def test_an_unknown_name_is_an_error_naming_where_it_came_from() -> None:
    with pytest.raises(ValueError, match=r"--paho-speedups: unknown paho speed-up 'fast'"):
        paho_speedups.parse_speedups("decoders,fast", "--paho-speedups")


@pytest.mark.skipif(
    paho_speedups.PAHO_VERSION not in paho_speedups.TESTED["decoders"][0]
    or paho_speedups.AIOMQTT_VERSION not in paho_speedups.TESTED["decoders"][1],
    reason="this paho/aiomqtt pair is not one every patch was tested on",
)
async def test_make_client_reports_the_patches_it_installed(fresh: None) -> None:
    assert bus.speedups(client(ALL)) == ALL
    assert bus.speedups(client(frozenset({"puback_futures"}))) == {
        "puback_futures",
        "decoders",  # process-wide: installed by the first client, active for every later one
    }


async def test_patches_switched_off_are_not_installed_and_warned_about_once(
    fresh: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedbus.protocol.paho_speedups"):
        first, second = client(frozenset()), client(frozenset())
    assert bus.speedups(first) == bus.speedups(second) == frozenset()
    assert not paho_speedups.decoders_installed()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # one line, at the first client
    for name in sorted(ALL):
        assert f"{name} (switched off)" in warnings[0]


async def test_an_untested_paho_gets_stock_behaviour_and_a_warning_naming_it(
    fresh: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paho_speedups, "PAHO_VERSION", "2.99.0")
    with caplog.at_level(logging.WARNING, logger="fedbus.protocol.paho_speedups"):
        made = client(ALL)
    assert bus.speedups(made) == frozenset()
    assert not paho_speedups.decoders_installed()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "puback_futures (paho-mqtt 2.99.0 is not a version it was tested on" in warning


async def test_an_untested_aiomqtt_is_named_too(
    fresh: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(paho_speedups, "AIOMQTT_VERSION", "2.9.0")
    with caplog.at_level(logging.WARNING, logger="fedbus.protocol.paho_speedups"):
        assert bus.speedups(client(ALL)) == frozenset()
    assert "aiomqtt 2.9.0 is not a version it was tested on" in caplog.records[0].getMessage()


async def test_a_client_make_client_never_saw_has_none_active() -> None:
    import aiomqtt

    assert bus.speedups(aiomqtt.Client("127.0.0.1")) == frozenset()
