"""The fedbus coordinator service (Python 3.11+; the agent side runs on 3.10)."""

import sys

if sys.version_info < (3, 11):  # noqa: UP036 (ruff targets 3.11; this runs on an agent's 3.10)
    raise ImportError(
        "the fedbus coordinator needs Python 3.11 or newer (this is "
        f"{sys.version_info.major}.{sys.version_info.minor}); edge-agent runs on 3.10"
    )
