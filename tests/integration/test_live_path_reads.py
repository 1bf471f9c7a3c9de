"""The live path's work is proportional to the batch, not to the log.

A batch and the judgement after it read the batch's own participants and counters whose
size depends on the plan; they never read the other participants. Counted the way
PostgreSQL counts it (``pg_stat_user_tables``: rows read by sequential and index scans of
``participants``), for the same batch on read models holding 300 and 3,000 participants:
the two counts are equal, and no scan reads the whole table.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from services.analytics.engine.announce import judge_and_announce
from services.analytics.engine.batch import BatchEngine
from services.analytics.store import schema
from shared.bus import attach_streams, connect_nats
from shared.events import Envelope
from shared.plan import shipped_plans
from shared.settings import Settings
from tests import factories as f

pytestmark = pytest.mark.integration

PROCESS = "shfa-2018"
PLANS = {PROCESS: shipped_plans()[PROCESS]}
SMALL, LARGE = 300, 3_000


async def participant_reads(dsn: str) -> tuple[int, int]:
    """(sequential scans of ``participants``, rows read from it by any scan), as PostgreSQL counts them."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await conn.fetchrow(
            "SELECT seq_scan, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS rows "
            "FROM pg_stat_user_tables WHERE schemaname = 'analytics' AND relname = 'participants'"
        )
        assert row is not None
        return row["seq_scan"], row["rows"]
    finally:
        await conn.close()


def the_batch(returning: list[str]) -> list[Envelope]:
    """New survey responses, returning interviewees and a withdrawal: every kind of change."""
    rng = random.Random(7)
    events = [f.survey(f.random_profile(rng)) for _ in range(30)]
    events += [f.interview(ref, f.random_profile(rng)) for ref in returning[:15]]
    events.append(f.withdrawn(returning[15]))
    return events


async def reads_of_one_batch(dsn: str, settings: Settings, size: int, returning: list[str]) -> tuple[int, int]:
    """Fill read models with ``size`` participants, then count what one batch and its judgement read."""
    rng = random.Random(size)
    pool = await schema.open_pool(dsn)
    await schema.migrate(pool)
    await pool.execute("ALTER TABLE participants SET (autovacuum_enabled = false)")  # no reads but ours
    engine = BatchEngine(pool, settings.consumer_name, plans=PLANS)
    log = [f.interview(ref, f.random_profile(rng)) for ref in returning]
    log += [f.survey(f.random_profile(rng)) for _ in range(size - len(returning))]
    for start in range(0, len(log), 500):
        chunk = log[start : start + 500]
        await engine.apply(list(enumerate(chunk, start=start + 1)), start + len(chunk))
    nc = await connect_nats(settings, "analytics", settings.nats_url or "")
    js = await attach_streams(nc, settings)
    await pool.execute("ANALYZE participants")  # as autovacuum would: the planner knows the table's size
    await judge_and_announce(js, pool, PLANS, settings)  # the first judgement of a run judges all
    engine.take_touched()
    await pool.close()  # a backend's statistics are flushed when it ends
    before = await participant_reads(dsn)

    pool = await schema.open_pool(dsn)
    engine = BatchEngine(pool, settings.consumer_name, plans=PLANS)
    batch = the_batch(returning)
    await engine.apply(list(enumerate(batch, start=len(log) + 1)), len(log) + len(batch))
    await judge_and_announce(js, pool, PLANS, settings, engine.take_touched())
    await pool.close()
    await nc.close()
    after = await participant_reads(dsn)
    return after[0] - before[0], after[1] - before[1]


async def test_a_batch_reads_the_same_rows_whatever_the_size_of_the_log(
    make_settings: Callable[..., Settings], another_database: Callable[[], Awaitable[str]]
) -> None:
    settings = make_settings()
    returning = [f.ref() for _ in range(20)]
    small = await reads_of_one_batch(await another_database(), settings, SMALL, returning)
    large = await reads_of_one_batch(await another_database(), settings, LARGE, returning)
    assert small == large, f"{SMALL} participants: {small}; {LARGE}: {large} (sequential scans, rows read)"
    scans, rows = large
    assert scans == 0
    assert rows <= 2 * len(the_batch(returning)), rows  # the batch's own participants, looked up by key
