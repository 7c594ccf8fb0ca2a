"""deploy/systemd units: `systemd-analyze verify` clean, and what the units promise.

verify needs the ExecStart binary to exist, so the units are checked with it pointing at
this environment's console scripts (the only line changed); everything else is as shipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedbus.protocol import env_config

REPO = Path(__file__).resolve().parents[3]
UNITS = REPO / "deploy" / "systemd"
SHIPPED_BIN = "/opt/fedbus/.venv/bin/"
HERE_BIN = f"{Path(sys.executable).parent}/"
# unit file -> the name it is verified under (a template needs an instance)
UNIT_NAMES = {
    "fedbus-coordinator.service": "fedbus-coordinator.service",
    "fedbus-agent@.service": "fedbus-agent@jetson-7.service",
}


def service_lines(unit: str) -> list[tuple[str, str]]:
    """(key, value) of the [Service] section, repeated keys kept in order."""
    lines, section = [], None
    for raw in (UNITS / unit).read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            lines.append((key, value))
    return lines


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here"
)
@pytest.mark.parametrize("unit", sorted(UNIT_NAMES))
def test_systemd_analyze_verifies_the_unit_without_a_warning(unit: str, tmp_path: Path) -> None:
    text = (UNITS / unit).read_text()
    assert SHIPPED_BIN in text
    copy = tmp_path / UNIT_NAMES[unit]
    copy.write_text(text.replace(SHIPPED_BIN, HERE_BIN))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and bad values (it only warns): any output is a failure.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("unit", sorted(UNIT_NAMES))
def test_units_restart_on_failure_and_read_the_password_as_a_credential(unit: str) -> None:
    settings = service_lines(unit)
    values = dict(settings)
    assert values["Restart"] == "on-failure"
    assert values["DynamicUser"] == "yes" and values["NoNewPrivileges"] == "yes"
    assert values["ProtectSystem"] == "strict"
    assert values["LoadCredential"].startswith("password:/etc/fedbus/credentials/")
    assert ("Environment", "FEDBUS_PASSWORD_FILE=%d/password") in settings
    assert not any("FEDBUS_PASSWORD=" in v or "--password" in v for _, v in settings)


@pytest.mark.parametrize(
    ("unit", "program"),
    [("fedbus-coordinator.service", "coordinator"), ("fedbus-agent@.service", "edge-agent")],
)
def test_units_set_only_variables_their_command_reads(unit: str, program: str) -> None:
    known = {v.name for v in env_config.variables_for(program)}
    exec_start = dict(service_lines(unit))["ExecStart"].split()
    assert exec_start[0] == SHIPPED_BIN + program
    assert all(not arg.startswith("-") for arg in exec_start)  # configured by environment only
    for key, value in service_lines(unit):
        if key == "Environment" and value.startswith("FEDBUS_"):
            assert value.partition("=")[0] in known, value


@pytest.mark.parametrize("env_file", ["coordinator.env", "agent.env"])
def test_example_environment_files_name_known_variables(env_file: str) -> None:
    # Set and commented-out examples alike: a reader uncomments them as they are.
    named = re.findall(r"(?m)^#?(FEDBUS_[A-Z_]+)=", (UNITS / env_file).read_text())
    assert named
    assert set(named) <= {v.name for v in env_config.ENV_VARS}
