"""``python -m coordinator.report RUN_DIR...``: the same as ``coordinator report``."""

import sys

from coordinator.report.cli import main

sys.exit(main())
