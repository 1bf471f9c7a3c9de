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
from shared.bus import ensure_streams, make_broker
from services.cli.embedded import free_port
from shared.settings import Settings
from tests import factories as f

pytestmark = pytest.mark.integration
EVENTS = 30_000


def start_analytics(settings: Settings, consumer: str, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ENGAGE_NATS_URL": settings.nats_url or "", "ENGAGE_DATABASE_URL": database_url,
           "ENGAGE_CONSUMER_NAME": consumer, "ENGAGE_ANALYTICS_PORT": str(free_port()),
           "ENGAGE_TOKENS": "{}", "ENGAGE_BATCH_SIZE": "500"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.cli.main", "serve", "analytics"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)


async def wait_checkpoint(dsn: str, consumer: str, predicate: Callable[[int], bool], timeout: float) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            conn = await asyncpg.connect(dsn, server_settings={"search_path": "analytics"})
            try:
                seq = await reads.checkpoint(conn, consumer)
            finally:
                await conn.close()
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            seq = 0
        if predicate(seq):
            return seq
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"checkpoint stuck at {seq}")
        await asyncio.sleep(0.02)


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
    broker = make_broker(settings.nats_url)  # type: ignore[arg-type]
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
    reached = await wait_checkpoint(database_url, "analytics", lambda s: s > 2_000, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reached < EVENTS, "the kill came too late to interrupt anything"
    proc = start_analytics(settings, "analytics", database_url, log)
    await wait_checkpoint(database_url, "analytics", lambda s: s >= EVENTS, 120)
    proc.terminate()
    proc.wait(30)

    # The same log projected without interruption, into a database of its own.
    clean_dsn = await another_database()
    proc = start_analytics(settings, "clean", clean_dsn, log)
    await wait_checkpoint(clean_dsn, "clean", lambda s: s >= EVENTS, 120)
    proc.terminate()
    proc.wait(30)
    assert await counts(database_url, "analytics") == await counts(clean_dsn, "clean")
