"""What runs beside the live projector never holds it: a slow status judgement, an as-of answer.

- A judgement runs beside the counting: batches keep committing while one is under way, and
  what moved meanwhile is judged by the next one.
- As-of answers are folded in worker processes of their own, at a lower priority; a worker
  that dies is replaced, and the next question is answered.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Mapping, Set
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import asyncpg
import pytest

from services.analytics.answers import workers as workers_module
from services.analytics.answers.workers import Workers
from services.analytics.engine import projector as projector_module
from services.analytics.engine.projector import Projector
from services.analytics.store import reads, schema
from shared.bus import attach_streams, make_broker, publish_event
from shared.plan import shipped_plans
from shared.settings import Settings
from tests import factories as f
from tests.polling import eventually

pytestmark = pytest.mark.integration
PROCESS = "shfa-2018"


@pytest.fixture
async def pool(make_settings: Any) -> AsyncIterator[tuple[Settings, asyncpg.Pool]]:
    settings = make_settings(batch_size=10)
    pool = await schema.open_pool(settings.database_url or "")
    await schema.migrate(pool)
    yield settings, pool
    await pool.close()


async def test_a_slow_judgement_never_holds_the_count(
    pool: tuple[Settings, asyncpg.Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first judgement hangs until released: meanwhile every batch after it commits. Once
    released, the next judgement is given what the batches moved meanwhile."""
    settings, db = pool
    calls: list[Mapping[str, Set[str]] | None] = []
    release = asyncio.Event()

    async def slow_judge(js: object, pool: object, plans: object, settings: object, touched: Any = None) -> list[Any]:
        calls.append(touched)
        if len(calls) == 1:
            await release.wait()
        return []

    monkeypatch.setattr(projector_module, "judge_and_announce", slow_judge)
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    projector = Projector(settings, broker.connection, db, {PROCESS: shipped_plans()[PROCESS]})
    projector.JUDGE_EVERY = 0.0  # a judgement after every batch, if one is not under way
    running = asyncio.create_task(projector.run())
    try:
        await publish_event(broker, f.survey(region="central"), settings)
        await eventually(lambda: asyncio.sleep(0, len(calls)), what="the first judgement to start")
        last = 0
        for _ in range(40):
            last, _ = await publish_event(broker, f.survey(region="northeast"), settings)
        await eventually(
            lambda: reads.checkpoint(db, settings.consumer_name),
            lambda seq: seq >= last,
            what=f"every batch counted ({last}) while the judgement hangs",
        )
        assert len(calls) == 1 and not release.is_set()  # the first judgement is still under way
        release.set()
        await eventually(lambda: asyncio.sleep(0, len(calls)), lambda n: n >= 2, what="the next judgement")
        moved = calls[1]
        assert moved is not None and "region" in moved.get(PROCESS, set()), moved
    finally:
        release.set()
        assert await projector.stop(running)
        await broker.stop()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def test_as_of_folding_runs_in_a_worker_process_below_the_service() -> None:
    workers = Workers(1)
    try:
        pid = await workers.run(os.getpid)
        assert pid != os.getpid()
        if hasattr(os, "SCHED_IDLE"):  # Linux: preempted by any normal task that wakes
            assert await workers.run(os.sched_getscheduler, 0) == os.SCHED_IDLE
            assert os.sched_getscheduler(0) != os.SCHED_IDLE
        else:
            assert await workers.run(os.nice, 0) == min(os.nice(0) + workers_module.NICE, 19)
    finally:
        workers.close(wait=True)


async def test_a_worker_that_dies_is_replaced_and_the_next_question_answered() -> None:
    workers = Workers(1)
    try:
        first = await workers.run(os.getpid)
        with pytest.raises(BrokenProcessPool):
            await workers.run(_die)  # asked twice: killed both times
        again = await workers.run(os.getpid)
        assert again != first
        assert await workers.run(sum, [1, 2, 3]) == 6
    finally:
        workers.close(wait=True)
