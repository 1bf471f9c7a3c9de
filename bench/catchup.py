"""Benchmark: how fast does analytics catch up on a log it has never seen?

Twice in one run, once with nats-server's default lazy fsync and once with
``sync_interval: always`` (what ``engage up`` and deploy/ run: every write is on disk
before its PubAck), it starts a throw-away nats-server and PostgreSQL (from the wheels),
publishes N events (anonymous surveys, interviews with returning participants,
gatherings, withdrawals; up to 1000 in flight), then times:
  - a raw nats-py ordered consumer reading the same stream (the baseline), and
  - the analytics projector (pull, validate, project, one transaction per batch)
    from a fresh database to the last sequence.
Prints the publish rate, both read rates and their ratio for each, and what
``sync_interval: always`` costs (always / default).

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
from dataclasses import dataclass
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


async def publish(url: str, settings: Settings, events: Iterable[Envelope]) -> float:
    """Publish ``events`` with up to 1000 waiting for their PubAck; the rate in events/s."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    window = []
    count = 0
    start = time.perf_counter()
    for ev in events:
        window.append(js.publish(ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": str(ev.event_id)}))
        count += 1
        if len(window) >= 1000:
            await asyncio.gather(*window)
            window.clear()
    await asyncio.gather(*window)
    elapsed = time.perf_counter() - start
    await nc.close()
    return count / elapsed


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
    broker = make_broker(url, settings, "analytics")
    await broker.connect()
    pool = await store.open_pool(dsn)
    await store.migrate(pool)
    projector = Projector(settings, broker.connection, pool)
    start = time.perf_counter()
    task = asyncio.create_task(projector.run())
    while projector.progress.checkpoint < n:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    await projector.stop(task)
    await pool.close()
    await broker.stop()
    return n / elapsed


@dataclass(frozen=True)
class Log:
    """Throw-away servers holding a log of events, and the rates measured making and reading it."""

    settings: Settings
    published: float  # events/s, PubAck awaited, up to 1000 in flight
    raw: float  # events/s, a raw ordered consumer reading the whole log


@contextlib.asynccontextmanager
async def servers_with_log(n: int, folder: Path, *, sync_always: bool = True) -> AsyncIterator[Log]:
    """Throw-away servers in ``folder`` with a log of ``n`` events (nats-server fsyncing every
    write with ``sync_always``, else lazily), and the rates measured on them."""
    label = "always" if sync_always else "default"
    nats_server = EmbeddedNats(folder / f"nats-{n}-{label}", sync_always=sync_always)
    postgres = EmbeddedPostgres(folder / f"pg-{n}-{label}", delete_on_stop=True)
    url, dsn = nats_server.start(), postgres.start()
    settings = Settings(nats_url=url, database_url=dsn)
    try:
        print(f"generating and publishing {n:,} events (sync_interval {label})…", flush=True)
        published = await publish(url, settings, workload(n))
        yield Log(settings, published, await raw_read(url, settings, n))
    finally:
        nats_server.stop()
        postgres.stop()


@contextlib.asynccontextmanager
async def log_on_servers(n: int, folder: Path) -> AsyncIterator[tuple[Settings, float]]:
    """Throw-away servers in ``folder`` with a log of ``n`` events; the settings, and the rate of the
    baseline (a raw ordered consumer reading the whole log) measured on them."""
    async with servers_with_log(n, folder) as log:
        yield log.settings, log.raw


async def main(n: int) -> None:
    configure_logging("json", "warning")
    rates: dict[bool, tuple[float, float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="engage-bench-") as tmp:
        for sync_always in (False, True):
            async with servers_with_log(n, Path(tmp), sync_always=sync_always) as log:
                settings = log.settings
                rate = await project(settings.nats_url or "", settings.database_url or "", settings, n)
            rates[sync_always] = (log.published, log.raw, rate)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for sync_always, (published, raw, rate) in rates.items():
        print(f"sync_interval {'always' if sync_always else 'default (lazy fsync)'}:")
        print_figures(
            {
                "publish (1000 in flight)": f"{published:>9,.0f} events/s",
                "raw ordered consumer": f"{raw:>9,.0f} events/s",
                "analytics catch-up": f"{rate:>9,.0f} events/s",
                "ratio": f"{rate / raw:.2f}",
            },
            indent="  ",
        )
    (lazy_pub, lazy_raw, lazy_rate), (pub, raw, rate) = rates[False], rates[True]
    print("cost of sync_interval always (always / default):")
    print_figures(
        {
            "publish": f"{pub / lazy_pub:.2f}",
            "raw ordered consumer": f"{raw / lazy_raw:.2f}",
            "analytics catch-up": f"{rate / lazy_rate:.2f}",
        },
        indent="  ",
    )
    print_figures({"peak RSS (process)": f"{peak:,.0f} MB"})


def print_figures(figures: dict[str, str], indent: str = "") -> None:
    """One aligned line per figure."""
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{indent}{name:<{width}} : {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().events))
