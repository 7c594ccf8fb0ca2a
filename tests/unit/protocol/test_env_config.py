"""FEDBUS_* environment variables as option defaults of the real CLIs; flags win."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

import coordinator.cli
import edge_agent.cli
import fedbus.fleet.cli
from fedbus.protocol import env_config
from fedbus.protocol.broker_args import broker_settings

CLIS: dict[str, tuple[Callable[[list[str]], int], list[list[str]]]] = {
    env_config.COORDINATOR: (coordinator.cli.main, [["run"], ["serve"], ["submit"], []]),
    env_config.EDGE_AGENT: (edge_agent.cli.main, [["run"], ["emulate"], []]),
    env_config.FLEET: (fedbus.fleet.cli.main, [["build", "flash"]]),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in env_config.ENV_VARS:
        monkeypatch.delenv(var.name, raising=False)


def capture(monkeypatch: pytest.MonkeyPatch, module: object, command: str) -> list[argparse.Namespace]:
    """Replace ``module.command`` (wired into the parser by name) by one that keeps its args."""
    seen: list[argparse.Namespace] = []

    def keep(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(module, command, keep)
    return seen


def test_environment_alone_configures_an_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: every setting an agent service needs, no flags.
    seen = capture(monkeypatch, edge_agent.cli, "cmd_run")
    for name, value in {
        "FEDBUS_AGENT_ID": "jetson-7",
        "FEDBUS_BROKER": "core.lab:1884",
        "FEDBUS_PREFIX": "lab",
        "FEDBUS_USERNAME": "jetson-7",
        "FEDBUS_DEVICE": "cuda:1",
        "FEDBUS_PARTITION": "7",
        "FEDBUS_THREADS": "2",
        "FEDBUS_DATA": "fedbus.examples.digits:load_partition",
        "FEDBUS_DATA_ARGS": '{"num_partitions": 8}',
        "FEDBUS_VERBOSE": "1",
    }.items():
        monkeypatch.setenv(name, value)
    # Execute
    assert edge_agent.cli.main(["run"]) == 0
    # Assert: typed values, as if the flags had been typed.
    (args,) = seen
    assert (args.id, args.broker, args.prefix, args.username) == (
        "jetson-7",
        "core.lab:1884",
        "lab",
        "jetson-7",
    )
    assert (args.device, args.partition, args.threads, args.verbose) == ("cuda:1", 7, 2, True)
    assert args.data_args == {"num_partitions": 8}


def test_a_flag_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = capture(monkeypatch, edge_agent.cli, "cmd_run")
    monkeypatch.setenv("FEDBUS_AGENT_ID", "from-env")
    monkeypatch.setenv("FEDBUS_THREADS", "3")
    monkeypatch.setenv("FEDBUS_BROKER", "env-host:1")
    assert edge_agent.cli.main(["run", "--id", "from-flag", "--threads", "5"]) == 0
    (args,) = seen
    assert (args.id, args.threads, args.broker) == ("from-flag", 5, "env-host:1")


def test_unset_variables_leave_the_shipped_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = capture(monkeypatch, coordinator.cli, "cmd_serve")
    assert coordinator.cli.main(["serve"]) == 0
    (args,) = seen
    assert (args.broker, args.prefix, args.runs_dir, args.id) == (
        "127.0.0.1:1883",
        "fedbus",
        "runs",
        "coordinator",
    )
    assert args.password_file is None and not args.verbose


def test_the_coordinator_reads_its_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = capture(monkeypatch, coordinator.cli, "cmd_serve")
    monkeypatch.setenv("FEDBUS_COORDINATOR_ID", "coordinator-b")
    monkeypatch.setenv("FEDBUS_RUNS_DIR", "/var/lib/fedbus/runs")
    monkeypatch.setenv("FEDBUS_AGENT_ID", "not-for-the-coordinator")
    assert coordinator.cli.main(["serve"]) == 0
    (args,) = seen
    assert (args.id, args.runs_dir) == ("coordinator-b", "/var/lib/fedbus/runs")


def test_an_agent_without_an_id_anywhere_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capture(monkeypatch, edge_agent.cli, "cmd_run")
    with pytest.raises(SystemExit) as exit_:
        edge_agent.cli.main(["run"])
    assert exit_.value.code == 2
    assert "--id" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "value"),
    [("FEDBUS_THREADS", "two"), ("FEDBUS_VERBOSE", "maybe"), ("FEDBUS_DATA_ARGS", "[1]")],
)
def test_a_bad_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    seen = capture(monkeypatch, edge_agent.cli, "cmd_run")
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        edge_agent.cli.main(["run", "--id", "a"])
    assert exit_.value.code == 2
    assert f"{name}={value!r} (environment)" in capsys.readouterr().err
    assert seen == []


def test_the_password_comes_from_the_file_named_by_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = capture(monkeypatch, edge_agent.cli, "cmd_run")
    secret = tmp_path / "password"
    secret.write_text("s3cret pass\n")
    monkeypatch.setenv("FEDBUS_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("FEDBUS_USERNAME", "agent-0")
    assert edge_agent.cli.main(["run", "--id", "agent-0"]) == 0
    settings = broker_settings(seen[0])
    assert (settings.username, settings.password) == ("agent-0", "s3cret pass")


def test_an_unreadable_password_file_ends_the_command_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = capture(monkeypatch, edge_agent.cli, "cmd_run")
    monkeypatch.setenv("FEDBUS_PASSWORD_FILE", str(tmp_path / "missing"))
    assert edge_agent.cli.main(["run", "--id", "agent-0"]) == 0
    with pytest.raises(ValueError, match="FEDBUS_PASSWORD_FILE"):
        broker_settings(seen[0])


def test_the_fleet_tool_reads_its_trace_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[argparse.Namespace] = []

    def fake_build(args: argparse.Namespace) -> object:
        built.append(args)
        raise fedbus.fleet.cli.FleetError("stop here")

    monkeypatch.setattr(fedbus.fleet.cli, "_build", fake_build)
    monkeypatch.setenv("FEDBUS_TRACES", "/srv/traces")
    assert fedbus.fleet.cli.main(["build", "flash", "--count", "2", "--out", "f.json"]) == 1
    assert built[0].traces == "/srv/traces"


@pytest.mark.parametrize("program", sorted(CLIS))
def test_every_variable_in_the_table_is_an_option_of_its_command(
    program: str, capsys: pytest.CaptureFixture[str]
) -> None:
    main, commands = CLIS[program]
    shown = ""
    for command in commands:
        with contextlib.suppress(SystemExit):  # argparse exits after --help; fedbus-fleet not
            main([*command, "--help"])
        shown += capsys.readouterr().out
    for var in env_config.variables_for(program):
        assert f"env {var.name}]" in " ".join(shown.split()), var.name


def test_the_agent_runs_in_its_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Prepare: a job's relative data path, and the directory it is relative to.
    monkeypatch.chdir(tmp_path)  # restored after the test, whatever main() changes
    data_dir = tmp_path / "site-data"
    (data_dir / "data").mkdir(parents=True)
    (data_dir / "data" / "part.csv").write_text("1,2\n")
    seen = capture(monkeypatch, edge_agent.cli, "cmd_run")
    monkeypatch.setenv("FEDBUS_DATA_DIR", str(data_dir))
    # Execute
    assert edge_agent.cli.main(["run", "--id", "a"]) == 0
    # Assert: relative paths now resolve under the data directory.
    assert seen and Path("data/part.csv").read_text() == "1,2\n"


def test_a_missing_data_directory_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    seen = capture(monkeypatch, edge_agent.cli, "cmd_run")
    with pytest.raises(SystemExit) as exit_:
        edge_agent.cli.main(["run", "--id", "a", "--data-dir", str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert "--data-dir" in capsys.readouterr().err and seen == []
