"""A batch's writes: one statement for every table, whatever the batch holds.

The live path's latency is mostly round trips to PostgreSQL, each a wake-up of two processes
that wait for a processor when the machine is busy (an as-of answer being folded beside
them). So a batch costs the same few round trips however many tables it moves, counted here
as asyncpg sends them; and the feed that the one statement trims holds exactly the latest
``activity.KEEP`` items of each process, however the log was cut into batches.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from services.analytics.engine.batch import BatchEngine
from services.analytics.projection import activity
from services.analytics.store import schema, writes
from shared.events import Envelope
from shared.plan import shipped_plans
from tests import factories as f
from tests.integration.test_rebuild import workload

pytestmark = pytest.mark.integration

PROCESS = "shfa-2018"
PLANS = {PROCESS: shipped_plans()[PROCESS]}
CONSUMER = "analytics"
# BEGIN, the checkpoint locked, the batch's participants loaded, every write, COMMIT, and the
# pool's reset of the connection when it is given back; one more read for the feed's regions
# of interviews scheduled in an earlier batch.
ROUND_TRIPS = 6


def expected_feed(log: list[Envelope]) -> list[tuple[int, str, str | None]]:
    """The latest KEEP feed items of ``log``, as one batch of it would make them."""
    numbered = list(enumerate(log, start=1))
    items = activity.items(numbered, activity.regions_scheduled(log))
    return [(i.sequence, i.kind, i.region) for i in items]


async def feed_of(dsn: str) -> list[tuple[int, str, str | None]]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema.SCHEMA})
    try:
        rows = await conn.fetch("SELECT sequence, kind, region FROM activity ORDER BY sequence")
        return [(r["sequence"], r["kind"], r["region"]) for r in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize("cuts", [[1, 3, 49, 50, 51, 7, 2], [60, 60, 60], [400]])
async def test_the_feed_holds_the_latest_items_however_the_log_is_cut(
    cuts: list[int], another_database: Callable[[], Awaitable[str]]
) -> None:
    log = workload(random.Random(11), 160)
    dsn = await another_database()
    pool = await schema.open_pool(dsn)
    await schema.migrate(pool)
    engine = BatchEngine(pool, CONSUMER, plans=PLANS)
    start = 0
    for size in [*cuts, len(log)]:
        chunk = log[start : start + size]
        if not chunk:
            break
        await engine.apply(list(enumerate(chunk, start=start + 1)), start + len(chunk))
        start += len(chunk)
        assert await feed_of(dsn) == expected_feed(log[:start]), f"after {start} events"
    await pool.close()
    assert len(expected_feed(log)) == activity.KEEP  # the log makes more items than the feed keeps


async def test_a_batch_takes_the_same_few_round_trips_whatever_it_holds(
    another_database: Callable[[], Awaitable[str]],
) -> None:
    sent: list[str] = []

    async def count_queries(conn: asyncpg.Connection) -> None:
        await schema.require_synchronous_commit(conn)
        conn.add_query_logger(lambda record: sent.append(record.query))

    dsn = await another_database()
    await (await schema.open_pool(dsn)).close()  # makes the schema
    pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=1,
        server_settings={"search_path": schema.SCHEMA, "synchronous_commit": "on"},
        init=count_queries,
    )
    await schema.migrate(pool)
    engine = BatchEngine(pool, CONSUMER, plans=PLANS)
    rng = random.Random(5)
    returning = [f.ref() for _ in range(10)]
    first = [f.interview(ref, f.random_profile(rng)) for ref in returning]
    await engine.apply(list(enumerate(first, start=1)), len(first))
    batches = [
        [f.survey(f.random_profile(rng))],  # one new participant
        [f.survey(f.random_profile(rng)) for _ in range(40)],  # many
        # every kind of change: returning participants, a gathering, a withdrawal, scheduling
        [f.interview(ref, f.random_profile(rng)) for ref in returning[:5]]
        + [f.gathering(12, [f.random_profile(rng) for _ in range(4)]), f.withdrawn(returning[6])]
        + workload(rng, 30),
    ]
    seq = len(first)
    for batch in batches:
        sent.clear()
        await engine.apply(list(enumerate(batch, start=seq + 1)), seq + len(batch))
        seq += len(batch)
        regions = [q for q in sent if "FROM interview_regions" in q and q.lstrip().startswith("SELECT")]
        assert len(sent) - len(regions) <= ROUND_TRIPS, sent
        assert len(regions) <= 1, regions
    await pool.close()


async def summed_counts(dsn: str, log: list[Envelope], first_commit_fails: bool) -> dict[str, int]:
    """The counters a single writer (the rebuild) leaves after applying ``log`` as one batch,
    once more after the first try failed just before its commit if ``first_commit_fails``."""
    pool = await schema.open_pool(dsn)
    await schema.migrate(pool)
    engine = BatchEngine(pool, CONSUMER, plans=PLANS, single_writer=True)
    numbered = list(enumerate(log, start=1))
    if first_commit_fails:
        real = writes.write

        async def then_fail(*args: Any, **kwargs: Any) -> None:
            await real(*args, **kwargs)
            if "checkpoint" in kwargs:  # the batch's own writes made, then the transaction does not commit
                raise RuntimeError("the disk is full")

        writes.write = then_fail  # type: ignore[assignment]  # undone in finally, before anything else writes
        try:
            with pytest.raises(RuntimeError):
                await engine.apply(numbered, len(log))
        finally:
            writes.write = real  # type: ignore[assignment]  # the real function back
    await engine.apply(numbered, len(log))
    await engine.flush()
    rows = await pool.fetch("SELECT dimension || '/' || category AS k, participants FROM category_counts")
    totals = await pool.fetchrow("SELECT participants, engagements FROM totals")
    await pool.close()
    assert totals is not None
    return {r["k"]: r["participants"] for r in rows} | dict(totals)


async def test_a_rebuild_batch_that_failed_is_summed_once_when_applied_again(
    another_database: Callable[[], Awaitable[str]],
) -> None:
    """A single writer sums its count changes in memory: only a batch that committed adds to them."""
    log = workload(random.Random(3), 80)
    once = await summed_counts(await another_database(), log, first_commit_fails=False)
    retried = await summed_counts(await another_database(), log, first_commit_fails=True)
    assert once["participants"] > 0
    assert retried == once
