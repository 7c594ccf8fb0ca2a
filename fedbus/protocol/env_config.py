"""Command-line defaults from ``FEDBUS_*`` environment variables, for every fedbus CLI.

A service manager (systemd, docker compose, a Jetson container) configures a process
through its environment; a person at a shell uses flags. Both work, and a flag always wins:
each variable only becomes the *default* of its option, so argparse still prefers what is
on the command line. One table below is the whole mapping; ``deploy/README.md`` prints it.

Values are converted with the option's own ``type`` when they are read, so a bad value
fails at start-up with an error that names the variable (``FEDBUS_THREADS='x' (environment):
invalid int value``), not the flag the user never typed.

Python 3.10 (the agent side imports this module): no 3.11-only syntax or modules here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass

COORDINATOR = "coordinator"
EDGE_AGENT = "edge-agent"
FLEET = "fedbus-fleet"
_BROKER_CLIS = (COORDINATOR, EDGE_AGENT)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class EnvVar:
    """``name`` sets the default of the option whose argparse ``dest`` is ``dest``."""

    name: str
    dest: str
    programs: tuple[str, ...]
    meaning: str


ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("FEDBUS_BROKER", "broker", _BROKER_CLIS, "HOST:PORT of the MQTT broker (--broker)"),
    EnvVar("FEDBUS_PREFIX", "prefix", _BROKER_CLIS, "topic prefix (--prefix)"),
    EnvVar("FEDBUS_USERNAME", "username", _BROKER_CLIS, "broker user (--username)"),
    EnvVar(
        "FEDBUS_PASSWORD_FILE",
        "password_file",
        _BROKER_CLIS,
        "file holding the broker password, one line (--password-file)",
    ),
    EnvVar("FEDBUS_TLS_CA", "tls_ca", _BROKER_CLIS, "CA certificate of a TLS listener (--tls-ca)"),
    EnvVar("FEDBUS_CHUNK_MB", "chunk_mb", _BROKER_CLIS, "chunk payloads above this (--chunk-mb)"),
    EnvVar("FEDBUS_VERBOSE", "verbose", (*_BROKER_CLIS,), "1: log at INFO level (-v)"),
    EnvVar("FEDBUS_COORDINATOR_ID", "id", (COORDINATOR,), "coordinator client id (--id)"),
    EnvVar("FEDBUS_RUNS_DIR", "runs_dir", (COORDINATOR,), "run directories (--runs-dir)"),
    EnvVar(
        "FEDBUS_METRICS_PORT",
        "metrics_port",
        (COORDINATOR,),
        "serve Prometheus metrics on this port (--metrics-port)",
    ),
    EnvVar(
        "FEDBUS_METRICS_HOST",
        "metrics_host",
        (COORDINATOR,),
        "address to serve them on (--metrics-host)",
    ),
    EnvVar("FEDBUS_AGENT_ID", "id", (EDGE_AGENT,), "agent id, edge-agent run (--id)"),
    EnvVar(
        "FEDBUS_TELEMETRY_INTERVAL",
        "telemetry_interval",
        (EDGE_AGENT,),
        "seconds between telemetry messages, 0: none (--telemetry-interval)",
    ),
    EnvVar("FEDBUS_PARTITION", "partition", (EDGE_AGENT,), "data partition index (--partition)"),
    EnvVar("FEDBUS_DEVICE", "device", (EDGE_AGENT,), "torch device: cpu, cuda, cuda:1 (--device)"),
    EnvVar("FEDBUS_THREADS", "threads", (EDGE_AGENT,), "torch CPU threads (--threads)"),
    EnvVar(
        "FEDBUS_DATA_DIR",
        "data_dir",
        (EDGE_AGENT,),
        "directory relative data paths of a job are read from (--data-dir)",
    ),
    EnvVar("FEDBUS_DATA", "data", (EDGE_AGENT,), "the job's data entry point (--data)"),
    EnvVar("FEDBUS_DATA_ARGS", "data_args", (EDGE_AGENT,), "JSON object (--data-args)"),
    EnvVar("FEDBUS_FLEET", "fleet", (EDGE_AGENT,), "fleet file, edge-agent emulate (--fleet)"),
    EnvVar("FEDBUS_COUNT", "count", (EDGE_AGENT,), "emulated agents (--count)"),
    EnvVar("FEDBUS_OFFSET", "offset", (EDGE_AGENT,), "first fleet index (--offset)"),
    EnvVar("FEDBUS_TRACES", "traces", (FLEET,), "trace directory, build flash (--traces)"),
)


def variables_for(program: str) -> tuple[EnvVar, ...]:
    return tuple(v for v in ENV_VARS if program in v.programs)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every sub-command parser below it."""
    found = [parser]
    for action in parser._actions:  # argparse keeps no public list of its options
        choices = action.choices if isinstance(action.choices, dict) else {}
        for sub in choices.values():
            if isinstance(sub, argparse.ArgumentParser) and sub not in found:
                found.extend(p for p in _parsers(sub) if p not in found)
    return found


def _convert(parser: argparse.ArgumentParser, action: argparse.Action, var: EnvVar, text: str):  # type: ignore[no-untyped-def]
    """``text`` as the option would parse it; a bad value exits naming the variable."""
    if action.nargs == 0:  # a switch such as -v: store_true / store_false
        lowered = text.strip().lower()
        if lowered not in _TRUE + _FALSE:
            parser.error(f"{var.name}={text!r} (environment): use 1 or 0")
        on = lowered in _TRUE
        return action.const if on else action.default
    convert = action.type if callable(action.type) else str
    try:
        value = convert(text)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        parser.error(f"{var.name}={text!r} (environment): {exc or 'invalid value'}")
    if action.choices is not None and value not in action.choices:
        parser.error(f"{var.name}={text!r} (environment): choose from {list(action.choices)}")
    return value


def apply_environment(
    parser: argparse.ArgumentParser,
    program: str,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Make each set ``FEDBUS_*`` variable of ``program`` the default of its option.

    Call once, after the parser (and its sub-commands) is built and before ``parse_args``.
    An option the environment supplies is no longer required on the command line; every
    option's help names its variable, whether set or not.
    """
    environ = os.environ if environ is None else environ
    variables = {v.dest: v for v in variables_for(program)}
    for sub in _parsers(parser):
        for action in sub._actions:
            var = variables.get(action.dest)
            if var is None or not action.option_strings:
                continue
            if action.help is not argparse.SUPPRESS:
                action.help = f"{action.help or ''} [env {var.name}]".strip()
            text = environ.get(var.name)
            if text is None:
                continue
            action.default = _convert(sub, action, var, text)
            action.required = False


def markdown_table(program: str | None = None) -> str:
    """The table ``deploy/README.md`` carries (a test checks they agree)."""
    rows = ["| variable | commands | meaning |", "|---|---|---|"]
    for var in ENV_VARS:
        if program is None or program in var.programs:
            rows.append(f"| `{var.name}` | {', '.join(var.programs)} | {var.meaning} |")
    return "\n".join(rows)
