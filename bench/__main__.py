"""`python -m bench`: every figure of the performance targets, each beside its same-run baseline.

For each log size (``--sizes``, default 10,000 and 1,000,000 events) it starts a nats-server
(fsyncing every write, as ``engage up`` runs it) on a copy of a kept log of that size (made
once under ``--data-dir``), and one PostgreSQL for the run, and measures through what users
run: `engage rebuild`, `engage serve analytics` with the shipped plans, its HTTP answers (see
``bench.steps`` for the order). Then the survey's HTTP ingest (``bench.ingest``). It prints
progress as it goes, every figure per size, and the table of targets: figure, baseline,
ratio, target, met. Every step is bounded by ``--step-timeout`` seconds; one that fails or
runs out of time shows as "—" and the run goes on.

    python -m bench                       # 10k and 1M events: tens of minutes the first time
    python -m bench --quick               # 2,000 and 20,000 events: a few minutes
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import os
import platform
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from bench.logs import Progress
from bench.steps import Figures, Options, measure_size
from bench.table import details, render, rows
from services.cli.embedded import EmbeddedPostgres, nats_server_binary
from shared.logging import configure_logging

DATA_DIR = Path(__file__).resolve().parent.parent / ".engage-bench"
INGEST_CLIENTS = 20


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def versions(postgres: str) -> str:
    packages = ("nats-py", "asyncpg", "pydantic", "fastapi", "uvicorn")
    found = []
    for name in packages:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} ?")
    nats_server = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=False)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return (
        f"engage {commit.stdout.strip() or '?'}, Python {platform.python_version()}, "
        f"{nats_server.stdout.strip() or 'nats-server ?'}, {postgres}, " + ", ".join(found)
    )


async def ingest(requests: int, timeout: float, say: Progress) -> dict[str, float] | None:
    """The HTTP ingest figure from ``bench.ingest`` (written beside this command), if it is there."""
    try:
        module = importlib.import_module("bench.ingest")
    except ModuleNotFoundError:
        say("ingest: bench/ingest.py not present")
        return None
    say(f"=== HTTP ingest: {requests:,} survey writes, {INGEST_CLIENTS} clients ===")
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            result: dict[str, float] = await module.measure(requests, INGEST_CLIENTS)
    except Exception as exc:  # noqa: BLE001 - a failed ingest run is reported; the other figures stand
        say(f"  ingest: {type(exc).__name__}: {str(exc)[:300]}")
        return None
    say(f"  ingest: {time.perf_counter() - start:.1f} s: " + ", ".join(f"{k} {v:,.2f}" for k, v in result.items()))
    return result


async def main(args: argparse.Namespace) -> int:
    configure_logging("json", "warning")
    say = Progress()
    sizes = sorted(args.sizes)
    opts = Options(
        data_dir=args.data_dir,
        tail=args.tail or min(20_000, sizes[0]),
        latency_seconds=args.latency_seconds,
        rounds=args.rounds,
        calls=args.calls,
        coordinator_calls=args.coordinator_calls,
        timeout=args.step_timeout,
        as_of_limit=args.as_of_limit,
    )
    say(f"start: {load()}")
    measured: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="engage-bench-") as tmp:
        postgres = EmbeddedPostgres(Path(tmp) / "pg", delete_on_stop=True)
        dsn = postgres.start()
        try:
            conn = await asyncpg.connect(dsn)
            server_version = await conn.fetchval("SHOW server_version")
            await conn.close()
            say(versions(f"PostgreSQL {server_version}"))
            say(
                f"sizes {', '.join(f'{n:,}' for n in sizes)}; {opts.tail:,} events to catch up; "
                f"latency at {opts.rate:,}/s for {opts.latency_seconds:g} s a figure, in {opts.rounds} rounds "
                f"alternating with its baseline's; each step bounded by {opts.timeout:.0f} s"
            )
            for n in sizes:
                measured.append(await measure_size(n, opts, dsn, Path(tmp), say))
        finally:
            postgres.stop()
    ingested = await ingest(args.ingest_requests, args.step_timeout, say)
    print("\nEvery figure, per log size:\n" + details(measured), flush=True)
    for figures in measured:
        for note in figures.notes:
            print(f"  {figures.n:,}: {note}")
    print(f"\nTargets ({measured[-1].n:,} against {measured[0].n:,} where the baseline is the smaller log):")
    print(render(rows(measured[0], measured[-1], ingested)))
    say(f"end: {load()}")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], default=[10_000, 1_000_000])
    parser.add_argument(
        "--quick", action="store_true", help="--sizes 2000,20000, shorter steps, no coordinators' calls"
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where made logs are kept (.engage-bench/)")
    parser.add_argument("--tail", type=int, default=None, help="events to catch up (default min(20000, smallest))")
    parser.add_argument(
        "--latency-seconds", type=float, default=20.0, help="how long each latency is offered, all rounds together"
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds a latency alternates with its baseline in")
    parser.add_argument("--calls", type=int, default=21, help="GET /coverage calls per median")
    parser.add_argument(
        "--coordinator-calls", type=int, default=3, help="coordinators' GET /coverage calls (information; 0 skips)"
    )
    parser.add_argument("--ingest-requests", type=int, default=5000)
    parser.add_argument("--step-timeout", type=float, default=900.0, help="seconds any one step may take")
    parser.add_argument("--as-of-limit", type=float, default=120.0, help="seconds one as-of request may take")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.latency_seconds, args.calls, args.ingest_requests = [2000, 20_000], 6.0, 11, 1000
        args.coordinator_calls = 0
    if args.rounds < 1 or args.latency_seconds <= 0:
        parser.error("--rounds needs at least 1 and --latency-seconds more than 0")
    if len(args.sizes) < 2 or min(args.sizes) < 100:
        parser.error("--sizes needs two sizes of at least 100 events (the baseline and the figure)")
    return args


if __name__ == "__main__":
    # A plain kill stops the run as Ctrl-C does: the servers and the analytics process it started stop too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(asyncio.run(main(parse())))
