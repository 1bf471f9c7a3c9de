"""Benchmark: `engage rebuild` against a raw reader of the same stream, in the same run.

Starts a throw-away nats-server and PostgreSQL (from the wheels), publishes N events (the
mixed workload of ``bench.catchup``: anonymous surveys, interviews with returning
participants, gatherings, withdrawals), then:
  - reads the stream with a plain nats-py ordered consumer (the baseline),
  - reads it with the rebuild's reader and validates every event, and nothing more (the
    ceiling of any rebuild that validates in one Python process),
  - runs `engage rebuild` as its own process, as a user would, and reads its rate and
    the peak memory it reports (its maximum resident set),
  - with ``--also`` N2, does the same for a second log size, to show whether memory grows.
Prints the rates, their ratio and the peak memory.

    python -m bench.rebuild --events 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats

from bench.catchup import log_on_servers, print_figures
from services.analytics.reading.decode import decode
from services.analytics.reading.replay import raw_batches
from shared.logging import configure_logging

DEFAULT_GC = gc.get_threshold()


def rebuild_in_child(url: str, dsn: str) -> tuple[float, float, float]:
    """Run `engage rebuild` as a process; (events/s it reports, wall seconds, its peak RSS in MB)."""
    env = {
        **os.environ,
        "ENGAGE_NATS_URL": url,
        "ENGAGE_DATABASE_URL": dsn,
        "ENGAGE_LOG_FORMAT": "json",
        "COLUMNS": "120",
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "rebuild"], env=env, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"engage rebuild failed:\n{done.stderr[-3000:]}")
    # The command reports its own rate and peak memory (its maximum resident set).
    found = re.search(r"\(([\d,]+) events/s, peak memory ([\d,]+) MB\)", done.stderr)
    if found is None:
        raise SystemExit(f"engage rebuild printed no rate:\n{done.stderr[-3000:]}")
    return float(found.group(1).replace(",", "")), wall, float(found.group(2).replace(",", ""))


async def read_and_validate(url: str, stream: str) -> float:
    """The rebuild's reader and its schema validation alone, nothing projected or written:
    the ceiling of any rebuild that validates every event in one Python process."""
    gc.set_threshold(100_000, 50, 1000)  # as the rebuild sets it
    nc = await nats.connect(url)
    seen = 0
    start = time.perf_counter()
    async for batch in raw_batches(nc, stream, batch=5000):
        for _, _, data in batch:
            decode(data)
        seen += len(batch)
    elapsed = time.perf_counter() - start
    await nc.close()
    gc.set_threshold(*DEFAULT_GC)
    return seen / elapsed


async def measure(n: int, tmp: Path) -> tuple[float, float, float, float, float]:
    async with log_on_servers(n, tmp) as (settings, raw):
        url, dsn = settings.nats_url or "", settings.database_url or ""
        ceiling = await read_and_validate(url, settings.stream_name)
        rate, wall, peak = await asyncio.to_thread(rebuild_in_child, url, dsn)
    return raw, ceiling, rate, wall, peak


async def main(sizes: list[int]) -> None:
    configure_logging("json", "warning")
    rows = []
    with tempfile.TemporaryDirectory(prefix="engage-bench-") as tmp:
        for n in sorted(sizes):
            rows.append((n, *await measure(n, Path(tmp))))
    for n, raw, ceiling, rate, wall, peak in rows:
        print(f"\n{n:,} events")
        print_figures(
            {
                "raw ordered consumer": f"{raw:>9,.0f} events/s",
                "read + validate only": f"{ceiling:>9,.0f} events/s  "
                f"(ratio {ceiling / raw:.2f}: no projection, no writes)",
                "engage rebuild": f"{rate:>9,.0f} events/s  ({wall:.1f} s for the whole command)",
                "ratio": f"{rate / raw:.2f}",
                "rebuild peak RSS": f"{peak:,.0f} MB",
            },
            indent="  ",
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--also", type=int, default=None, help="a second log size, to compare peak memory")
    args = parser.parse_args()
    asyncio.run(main([args.events] + ([args.also] if args.also else [])))
