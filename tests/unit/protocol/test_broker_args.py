"""The broker options every command takes: --paho-speedups and its environment default."""

from __future__ import annotations

import argparse

import pytest

from fedbus.protocol import paho_speedups
from fedbus.protocol.broker_args import add_broker_args, broker_settings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-agent run")
    add_broker_args(parser)
    return parser.parse_args(argv)


def test_every_patch_is_wanted_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paho_speedups.ENV_VAR, raising=False)
    assert broker_settings(parse([])).speedups == paho_speedups.ALL


def test_the_environment_sets_the_default_and_the_option_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(paho_speedups.ENV_VAR, "off")
    assert broker_settings(parse([])).speedups == frozenset()
    chosen = broker_settings(parse(["--paho-speedups", "decoders"])).speedups
    assert chosen == frozenset({"decoders"})


def test_a_bad_environment_value_is_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(paho_speedups.ENV_VAR, "fastest")
    with pytest.raises(SystemExit):
        parse([])
    assert "$FEDBUS_PAHO_SPEEDUPS or --paho-speedups: unknown paho speed-up 'fastest'" in (
        capsys.readouterr().err
    )
