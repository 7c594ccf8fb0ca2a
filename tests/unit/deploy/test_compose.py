"""deploy/compose.yaml, checked without docker: every command is a real CLI with valid flags.

Each fedbus service's command is run through the real argument parser of its console
script with the service's environment (the FEDBUS_* variables, fedbus.protocol.env_config),
so a misspelt variable, a bad value or a missing required setting fails here, not on a site.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml

import coordinator.cli
import edge_agent.cli
from coordinator.config import load_job
from fedbus.protocol import env_config

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
CLIS: dict[str, tuple[ModuleType, Callable[[list[str]], int]]] = {
    "coordinator": (coordinator.cli, coordinator.cli.main),
    "edge-agent": (edge_agent.cli, edge_agent.cli.main),
}
IMAGE_ROOT = PurePosixPath("/opt/fedbus")  # where deploy/docker/Dockerfile copies the repo


def fedbus_services() -> list[str]:
    return sorted(n for n, s in SERVICES.items() if s.get("image") == "fedbus:latest")


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume, or a bind path relative to deploy/)."""
    found = {}
    for entry in service.get("volumes", []):
        source, target, *_ = entry.split(":")
        found[target] = source
    return found


def credential_users() -> list[str]:
    return SERVICES["credentials"]["command"][2:]


def to_repo(path: str) -> Path:
    """A path in the fedbus image back to the repository file it was copied from."""
    return REPO / PurePosixPath(path).relative_to(IMAGE_ROOT)


def test_the_image_builds_from_a_dockerfile_that_copies_what_services_run() -> None:
    build = SERVICES["coordinator"]["build"]
    dockerfile = (DEPLOY / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile == DEPLOY / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    for part in ("fedbus", "coordinator", "edge_agent", "client_selectors", "deploy"):
        assert re.search(rf"(?m)^COPY {part} ", text), part
    assert "mosquitto-clients" in text  # the watch tool's mosquitto_sub


@pytest.mark.parametrize("name", fedbus_services())
def test_every_fedbus_command_parses_with_its_environment(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = SERVICES[name]
    command = service["command"]
    if "entrypoint" in service:  # a shell tool (watch): its program is in the image
        assert service["entrypoint"][0] == "sh"
        return
    if command[0].startswith("/"):  # a script of the repository, copied into the image
        script = to_repo(command[0])
        assert script.exists() and os.access(script, os.X_OK), script
        return
    assert command[0] in SCRIPTS, f"{name}: {command[0]} is not a console script"
    module, main = CLIS[command[0]]
    environment = service.get("environment", {})
    known = {v.name for v in env_config.variables_for(command[0])}
    assert set(environment) <= known, f"{name}: unknown {set(environment) - known}"
    for var in env_config.ENV_VARS:
        monkeypatch.delenv(var.name, raising=False)
    for key, value in environment.items():
        monkeypatch.setenv(key, str(value))
    seen: list[argparse.Namespace] = []
    for attr in dir(module):
        if attr.startswith("cmd_"):
            monkeypatch.setattr(module, attr, lambda args: seen.append(args) or 0)
    # Execute: the real parser, then the command function it picked (captured).
    assert main(command[1:]) == 0
    assert len(seen) == 1


@pytest.mark.parametrize("name", fedbus_services())
def test_each_password_file_is_made_by_the_credentials_service_and_mounted(name: str) -> None:
    service = SERVICES[name]
    password_file = service.get("environment", {}).get("FEDBUS_PASSWORD_FILE")
    if password_file is None:
        return
    path = PurePosixPath(password_file)
    assert mounts(service).get(str(path.parent)) == "credentials"
    assert path.name.removesuffix(".password") in credential_users()
    assert service["environment"]["FEDBUS_USERNAME"] == path.name.removesuffix(".password")


def test_agents_have_distinct_ids_and_the_site_jobs_partitions() -> None:
    job = load_job(to_repo(SERVICES["submit"]["command"][2]))
    agents = [s["environment"] for n, s in SERVICES.items() if n.startswith("agent-")]
    assert len({a["FEDBUS_AGENT_ID"] for a in agents}) == len(agents) >= job.min_agents
    assert sorted(int(a["FEDBUS_PARTITION"]) for a in agents) == list(
        range(job.data_args["num_partitions"])  # type: ignore[arg-type]
    )
    for agent in agents:
        assert agent["FEDBUS_USERNAME"] == agent["FEDBUS_AGENT_ID"]
        assert agent["FEDBUS_DATA"] == job.data
        assert yaml.safe_load(agent["FEDBUS_DATA_ARGS"]) == job.data_args


def test_the_broker_runs_the_shipped_config_with_the_generated_credentials() -> None:
    broker = SERVICES["broker"]
    where = PurePosixPath(broker["working_dir"])
    volumes = mounts(broker)
    assert volumes[str(where / "mosquitto.conf")] == "../mosquitto.conf"
    conf = (REPO / "mosquitto.conf").read_text()
    # Every file the config names resolves inside a mount of the service.
    for option in ("password_file", "acl_file", "persistence_location"):
        value = re.search(rf"(?m)^{option} (\S+)$", conf)
        assert value is not None, option
        target = where / value[1]
        assert any(target == PurePosixPath(t) or PurePosixPath(t) in target.parents for t in volumes)
    # The credentials service puts the password file and the ACL where the config reads them.
    credentials = SERVICES["credentials"]
    assert volumes[str(where / "deploy/mosquitto")] == "credentials"
    assert to_repo(credentials["environment"]["ACL_FILE"]) == DEPLOY / "mosquitto" / "acl"
    # Clients reach the secure listener: the port the config opens, published by compose.
    assert re.search(r"(?m)^listener 1883$", conf)
    assert "1883:1883" in broker["ports"]
    assert SERVICES["coordinator"]["environment"]["FEDBUS_BROKER"] == "broker:1883"


def test_references_resolve() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        for target, source in mounts(service).items():
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} -> {target}"
            else:
                assert source in COMPOSE["volumes"], f"{name}: volume {source}"
    assert set(SERVICES["submit"]["profiles"]) == {"tools"}
    assert set(SERVICES["prometheus"]["profiles"]) == {"monitoring"}
