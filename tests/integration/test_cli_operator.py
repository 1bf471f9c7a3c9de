"""`engage replay` and `rebuild` find the servers of a running `engage up` through the
servers.json in the data dir they are given, before any default port. (`engage export` goes
through analytics' HTTP API; tests/integration/test_export_api.py runs it.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import nats

from services.cli.embedded import free_port
from shared.bus import ensure_streams
from shared.settings import Settings


async def engage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        # nothing listens on the embedded port: only servers.json can lead to the log
        env={**clean, "ENGAGE_EMBEDDED_NATS_PORT": str(free_port()), **env},
        timeout=120,
    )


async def test_replay_and_rebuild_use_the_servers_recorded_in_the_data_dir(
    nats_url: str, database_url: str, tmp_path: Path
) -> None:
    nc = await nats.connect(nats_url)
    await ensure_streams(nc.jetstream(), Settings())
    await nc.close()
    data = tmp_path / "up"
    data.mkdir()
    (data / "servers.json").write_text(json.dumps({"nats_url": nats_url, "database_url": database_url}))

    replay = await engage("replay", "--data-dir", str(data))
    assert replay.returncode == 0 and "replay: 0 events written" in replay.stderr, replay.stderr

    nope = await engage("replay", "--process", "nope", "--data-dir", str(data))
    assert nope.returncode == 0 and nope.stdout == "", nope.stderr  # a process may have events but no plan
    assert "--process nope: no plan for it and no events; the known processes are shfa-2018" in nope.stderr

    rebuild = await engage("rebuild", "--data-dir", str(data))
    assert rebuild.returncode == 0 and "swapped in" in rebuild.stderr, rebuild.stderr
    for run in (replay, rebuild):
        assert "Traceback" not in run.stderr
