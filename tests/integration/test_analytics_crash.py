"""SIGKILL the analytics process mid-stream; the restarted one ends with the right counts."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from services.analytics.store import reads, schema
from services.cli.embedded import free_port
from shared.bus import ensure_streams, make_broker
from shared.settings import Settings
from tests import factories as f
from tests.polling import eventually

pytestmark = pytest.mark.integration
EVENTS = 30_000


def start_analytics(settings: Settings, consumer: str, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ENGAGE_NATS_URL": settings.nats_url or "",
        "ENGAGE_DATABASE_URL": database_url,
        "ENGAGE_CONSUMER_NAME": consumer,
        "ENGAGE_ANALYTICS_PORT": str(free_port()),
        "ENGAGE_TOKENS": "{}",
        "ENGAGE_BATCH_SIZE": "500",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve", "analytics"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def checkpoint(dsn: str, consumer: str) -> int:
    """The sequence ``consumer`` has committed (0 before its tables exist)."""
    try:
        conn = await asyncpg.connect(dsn, server_settings={"search_path": "analytics"})
        try:
            return await reads.checkpoint(conn, consumer)
        finally:
            await conn.close()
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return 0


async def wait_until_projected(dsn: str, consumer: str, timeout: float = 120) -> int:
    return await eventually(
        lambda: checkpoint(dsn, consumer),
        lambda seq: seq >= EVENTS,
        what=f"{consumer} to project all {EVENTS} events",
        timeout=timeout,
        interval=0.05,
    )


async def counts(dsn: str, consumer: str) -> tuple:
    """Everything the read models say about the process (and the sequence reached)."""
    pool = await schema.open_pool(dsn)
    try:
        c = await reads.counts(pool, "shfa-2018", consumer, None)
        sequence, _, days = await reads.daily(pool, "shfa-2018", consumer)
    finally:
        await pool.close()
    return c.sequence, c.participants, c.engagements, c.categories, c.channels, sequence, days


async def test_sigkill_mid_stream_then_restart_counts_every_event_once(
    make_settings: Callable[..., Settings], database_url: str, another_database, tmp_path: Path
) -> None:
    """Kill -9 while projecting; after a restart the counts equal an uninterrupted run's."""
    settings = make_settings()
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    js = broker.connection.jetstream()
    await ensure_streams(js, settings)
    rng = random.Random(7)
    people = [f.ref() for _ in range(300)]
    pending = []
    for i in range(EVENTS):
        if i % 10 == 0:
            ev = f.interview(rng.choice(people), f.random_profile(rng))  # repeat participants
        elif i % 997 == 0:
            ev = f.withdrawn(rng.choice(people))
        else:
            ev = f.survey(f.random_profile(rng))
        pending.append(js.publish(ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": str(ev.event_id)}))
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await broker.stop()

    log = tmp_path / "analytics.log"
    proc = start_analytics(settings, "analytics", database_url, log)
    # Kill as soon as a first batch is committed: the checkpoint is then past the start and
    # (with EVENTS batches of work ahead) far from the end.
    started = await eventually(
        lambda: checkpoint(database_url, "analytics"),
        lambda seq: seq > 0,
        what="the first committed batch",
        timeout=60,
        interval=0.01,
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert started < EVENTS, f"the projector had finished ({started}) before the kill was sent"
    at_kill = await checkpoint(database_url, "analytics")  # the process is gone: this is where it died
    print(f"killed at checkpoint {at_kill} of {EVENTS}")
    assert 0 < at_kill < EVENTS, f"the kill landed at {at_kill} of {EVENTS}: not mid-stream"
    proc = start_analytics(settings, "analytics", database_url, log)
    await wait_until_projected(database_url, "analytics")
    proc.terminate()
    proc.wait(30)

    # The same log projected without interruption, into a database of its own.
    clean_dsn = await another_database()
    proc = start_analytics(settings, "clean", clean_dsn, log)
    await wait_until_projected(clean_dsn, "clean")
    proc.terminate()
    proc.wait(30)
    assert await counts(database_url, "analytics") == await counts(clean_dsn, "clean")
