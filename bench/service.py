"""The analytics service as users run it (`engage serve analytics`, its own process, the shipped
plans), `engage rebuild` as a command, and what the benchmark reads from outside them: the
checkpoint row, the process's memory, its HTTP answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from services.cli.embedded import free_port

ANALYST = "bench-analyst-" + "a" * 24
COORDINATOR = "bench-coordinator-" + "c" * 24
TOKENS = {
    "bench-analyst": {"token": ANALYST, "scopes": ["coverage:read", "analyst:read"]},
    "bench-coordinator": {"token": COORDINATOR, "scopes": ["coverage:read"]},
}


def engage_env(nats_url: str, database_url: str, folder: Path) -> dict[str, str]:
    """The environment of an engage command against these servers (nothing inherited from ENGAGE_*)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")},
        "ENGAGE_NATS_URL": nats_url,
        "ENGAGE_DATABASE_URL": database_url,
        "ENGAGE_DATA_DIR": str(folder),
        "ENGAGE_TOKENS": json.dumps(TOKENS),
        "ENGAGE_LOG_FORMAT": "json",
        "ENGAGE_LOG_LEVEL": "warning",
        "COLUMNS": "160",
    }


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), in MB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class RebuildRun:
    events: int
    rate: float  # events/s as the command reports it (its own timing of the replay)
    wall: float  # seconds for the whole command
    peak_mb: float  # its maximum resident set, as it reports it


def run_rebuild(env: dict[str, str], timeout: float) -> RebuildRun:
    """`engage rebuild` as its own process, bounded by ``timeout`` seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"engage rebuild failed:\n{done.stderr[-2000:]}")
    found = re.search(r"rebuilt from ([\d,]+) events.*?\(([\d,]+) events/s, peak memory ([\d,]+) MB\)", done.stderr)
    if found is None:
        raise RuntimeError(f"engage rebuild printed no rate:\n{done.stderr[-2000:]}")
    events, rate, peak = (float(g.replace(",", "")) for g in found.groups())
    return RebuildRun(int(events), rate, wall, peak)


@dataclass
class Analytics:
    """`engage serve analytics` as a process, and a client to it."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float) -> None:
        """Start it and wait until it answers /health/live (it may still be catching up)."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "serve", "analytics"],
                env={**self.env, "ENGAGE_ANALYTICS_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"analytics exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/health/live")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"analytics did not answer within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Checkpoint:
    """The projector's checkpoint, read from its table (one small query; it loads nothing else)."""

    def __init__(self, conn: asyncpg.Connection, consumer: str = "analytics") -> None:
        self.conn, self.consumer = conn, consumer

    async def read(self) -> int:
        try:
            value = await self.conn.fetchval(
                "SELECT stream_seq FROM analytics.checkpoint WHERE consumer = $1", self.consumer
            )
        except asyncpg.UndefinedTableError:
            return 0  # not migrated yet
        return int(value or 0)

    async def wait_for(self, sequence: int, timeout: float, every: float = 0.05) -> float:
        """Seconds until the checkpoint reaches ``sequence``; TimeoutError after ``timeout``."""
        start = time.perf_counter()
        while await self.read() < sequence:
            if time.perf_counter() - start > timeout:
                raise TimeoutError(f"the checkpoint did not reach {sequence:,} within {timeout:.0f} s")
            await asyncio.sleep(every)
        return time.perf_counter() - start


@contextlib.asynccontextmanager
async def checkpoint_reader(dsn: str) -> AsyncIterator[Checkpoint]:
    conn = await asyncpg.connect(dsn)
    try:
        yield Checkpoint(conn)
    finally:
        await conn.close()


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (e.g. analytics' as-of workers)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and every process it started, in MB."""
    return rss_mb(pid) + sum(rss_mb(child) for child in descendants(pid))


class MemoryWatch:
    """Samples the resident memory of a process and its children (the as-of workers analytics
    starts) in the background; ``peak`` is the highest sum seen."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid, self.every, self.peak = pid, every, 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_rss_mb(self.pid))
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> MemoryWatch:
        self.peak = tree_rss_mb(self.pid)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.peak = max(self.peak, tree_rss_mb(self.pid))
