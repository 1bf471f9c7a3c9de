"""`python -m bench` at a tiny size: it runs through and prints every target's row with numbers.

Figures at 300 and 600 events say nothing about performance, so no target is asserted: only
that each row has a value, a baseline, a ratio and a verdict.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROWS = (
    "live catch-up",
    "publish → commit p99 at",
    "GET /coverage",
    "as-of at",
    "analytics RSS during as-of",
    "publish → commit p99 with 4 as-of",
    "HTTP ingest",
    "engage rebuild,",
    "engage rebuild peak RSS",
)
# Printed beside the targets, with no verdict: the latency measurement's own noise (rounds that
# change nothing against each other), and the ceiling of a rebuild that validates in one process.
INFORMATION = ("publish → commit p99, rounds without as-of", "read + validate alone")
NUMBER = re.compile(r"\d")


def test_the_benchmark_prints_every_target_with_numbers(tmp_path: Path) -> None:
    """Every row of the targets table has a figure, a same-run baseline, a ratio and PASS or miss."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    command = [
        sys.executable,
        "-m",
        "bench",
        "--sizes",
        "300,600",
        "--latency-seconds",
        "1",
        "--calls",
        "2",
        "--coordinator-calls",
        "0",
    ]
    command += ["--ingest-requests", "60", "--step-timeout", "40", "--as-of-limit", "20", "--data-dir", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    table = done.stdout.split("\nTargets (", 1)[1].splitlines()[3:]
    cells = {line.split(" | ")[0].strip(): [c.strip() for c in line.split(" | ")] for line in table if " | " in line}
    for name in ROWS:
        row = next((cells[key] for key in cells if key.startswith(name)), None)
        assert row is not None, f"no row {name!r} in:\n{done.stdout[-3000:]}"
        _figure, value, baseline, ratio, _target, met = row
        assert NUMBER.search(value) and NUMBER.search(baseline), row
        assert ratio.endswith("×") and met in {"PASS", "miss"}, f"{row}\n{done.stdout[-3000:]}"
    for name in INFORMATION:
        row = next((cells[key] for key in cells if key.startswith(name)), None)
        assert row is not None, f"no row {name!r} in:\n{done.stdout[-3000:]}"
        _figure, value, baseline, ratio, _target, met = row
        assert NUMBER.search(value) and NUMBER.search(baseline) and ratio.endswith("×") and met == "n/a", row
