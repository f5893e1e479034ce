"""The evaluation package's import surface: the metrics stay light."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("yaml", "recsight.data.ingest", "recsight.data.store", "recsight.evaluation.experiment")


def test_importing_the_metrics_pulls_in_neither_ingest_nor_yaml():
    code = (
        "import sys, recsight.evaluation.metrics\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
