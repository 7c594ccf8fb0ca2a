"""deploy/README.md carries the one table of FEDBUS_* variables, as the code defines it."""

from __future__ import annotations

from pathlib import Path

from fedbus.protocol import env_config

README = Path(__file__).resolve().parents[3] / "deploy" / "README.md"


def test_the_readme_table_is_the_codes_table() -> None:
    assert env_config.markdown_table() in README.read_text()
