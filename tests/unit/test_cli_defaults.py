"""The commands that talk to running services find them where ENGAGE_* says they are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def engage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )


def test_coverage_looks_for_tokens_in_the_data_dir_and_analytics_on_its_port(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    missing = engage("coverage", ENGAGE_DATA_DIR=str(folder))
    assert missing.returncode == 2 and str(folder / "tokens.json") in "".join(missing.stderr.split())  # rich wraps

    folder.mkdir()
    (folder / "tokens.json").write_text('{"coordinator": {"token": "t", "scopes": ["coverage:read"]}}')
    unreachable = engage("coverage", ENGAGE_DATA_DIR=str(folder), ENGAGE_ANALYTICS_PORT="1")  # nothing on port 1
    assert unreachable.returncode == 2 and "http://127.0.0.1:1 " in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
