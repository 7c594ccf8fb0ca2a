"""Small modules (issue #21): no module of the package, the benchmarks or the scripts grows
past 500 lines unnoticed; split it by what its parts do."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TREES = ("coordinator", "edge_agent", "client_selectors", "fedbus", "bench", "scripts")
MAX_LINES = 500


def test_no_module_over_500_lines() -> None:
    sizes = {
        path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
        for tree in TREES
        for path in (REPO / tree).rglob("*.py")
    }
    assert len(sizes) > 100  # the trees were found
    assert {path: n for path, n in sizes.items() if n >= MAX_LINES} == {}
