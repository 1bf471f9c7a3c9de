"""Benchmark: how fast does analytics catch up on a log it has never seen?

Starts a throw-away nats-server and PostgreSQL (from the wheels), publishes N events
(anonymous surveys, interviews with returning participants, gatherings, withdrawals),
then times:
  - a raw nats-py ordered consumer reading the same stream (the baseline), and
  - the analytics projector (pull, validate, project, one transaction per batch)
    from a fresh database to the last sequence.
Prints both rates and their ratio.

    python -m bench.catchup --events 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import resource
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import nats

from services.analytics.engine.projector import Projector
from services.analytics.store import schema as store
from services.cli.embedded import EmbeddedNats, EmbeddedPostgres
from shared.bus import ensure_streams, make_broker
from shared.events import Envelope
from shared.logging import configure_logging
from shared.settings import Settings
from tests import factories as f


def workload(n: int, seed: int = 1) -> Iterator[Envelope]:
    """Events one at a time, so the benchmark process never holds the whole log."""
    rng = random.Random(seed)
    people = [f.ref() for _ in range(max(n // 50, 10))]
    for i in range(n):
        if i % 10 == 0:
            yield f.interview(rng.choice(people), f.random_profile(rng))
        elif i % 1000 == 1:
            yield f.gathering(12, [f.random_profile(rng) for _ in range(8)])
        elif i % 5000 == 2:
            yield f.withdrawn(rng.choice(people))
        else:
            yield f.survey(f.random_profile(rng))


async def publish(url: str, settings: Settings, events: Iterable[Envelope]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    window = []
    for ev in events:
        window.append(js.publish(ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": str(ev.event_id)}))
        if len(window) >= 1000:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)
    await nc.close()


async def raw_read(url: str, settings: Settings, n: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    done = asyncio.Event()
    seen = 0

    async def on_msg(_msg: object) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            done.set()

    start = time.perf_counter()
    sub = await js.subscribe("engagement.>", ordered_consumer=True, cb=on_msg, stream=settings.stream_name)
    await done.wait()
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    await nc.close()
    return n / elapsed


async def project(url: str, dsn: str, settings: Settings, n: int) -> float:
    broker = make_broker(url)
    await broker.connect()
    pool = await store.open_pool(dsn)
    await store.migrate(pool)
    projector = Projector(settings, broker.connection, pool)
    start = time.perf_counter()
    task = asyncio.create_task(projector.run())
    while projector.progress.checkpoint < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await pool.close()
    await broker.stop()
    return n / elapsed


@contextlib.asynccontextmanager
async def log_on_servers(n: int, folder: Path) -> AsyncIterator[tuple[Settings, float]]:
    """Throw-away servers in ``folder`` with a log of ``n`` events; the settings, and the rate of the
    baseline (a raw ordered consumer reading the whole log) measured on them."""
    nats_server = EmbeddedNats(folder / f"nats-{n}")
    postgres = EmbeddedPostgres(folder / f"pg-{n}", delete_on_stop=True)
    url, dsn = nats_server.start(), postgres.start()
    settings = Settings(nats_url=url, database_url=dsn)
    try:
        print(f"generating and publishing {n:,} events…", flush=True)
        await publish(url, settings, workload(n))
        yield settings, await raw_read(url, settings, n)
    finally:
        nats_server.stop()
        postgres.stop()


async def main(n: int) -> None:
    configure_logging("json", "warning")
    with tempfile.TemporaryDirectory(prefix="engage-bench-") as tmp:
        async with log_on_servers(n, Path(tmp)) as (settings, raw):
            rate = await project(settings.nats_url or "", settings.database_url or "", settings, n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_figures(
        {
            "raw ordered consumer": f"{raw:>9,.0f} events/s",
            "analytics catch-up": f"{rate:>9,.0f} events/s",
            "ratio": f"{rate / raw:.2f}",
            "peak RSS (process)": f"{peak:,.0f} MB",
        }
    )


def print_figures(figures: dict[str, str], indent: str = "") -> None:
    """One aligned line per figure."""
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{indent}{name:<{width}} : {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().events))
