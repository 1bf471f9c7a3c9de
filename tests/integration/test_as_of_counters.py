"""As-of answers from counters, asked two ways: the counters the batch engine keeps, and a
replay of the very same log into memory (what as-of answers used to cost), for random logs
cut into random batches, at random moments, exact event times and UTC day boundaries.

The replay is the specification: an engagement counts if it happened by the moment, a
withdrawal applies whatever its time. Counters and replay must agree on every number of
the whole process and of its segments.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources

import asyncpg
import pytest

from services.analytics.answers import asof
from services.analytics.answers.segments import members, parse_segment
from services.analytics.answers.workers import Workers
from services.analytics.engine.batch import BatchEngine
from services.analytics.projection.counts import Counts, counts_of
from services.analytics.projection.fold import DEFAULT_TZ, RECORDS
from services.analytics.projection.memory import MemoryProjection
from services.analytics.store import reads, schema
from shared.events import Envelope
from shared.plan import shipped_plans
from tests import factories as f
from tests.integration.test_one_engine import what_was_counted
from tests.integration.test_rebuild import workload

pytestmark = pytest.mark.integration

PROCESS = "shfa-2018"
PLAN = shipped_plans()[PROCESS]
SEGMENTS = ["lived_experience:yes", "region:northeast", "channel:advisory", "mandated_group:victims_survivors"]
LOGS = 6  # random logs, each cut into batches its own way
MOMENTS = 12  # moments asked about per log


def replayed(log: list[tuple[int, Envelope]], moment: datetime, segment: str | None) -> Counts:
    """The counts as of ``moment`` by replaying the whole log into memory (the specification)."""
    kept = [(s, e) for s, e in log if e.occurred_at <= moment or e.payload.type == "ParticipantWithdrawn"]
    memory = MemoryProjection(DEFAULT_TZ)
    memory.feed(kept)
    times = [e.occurred_at for _, e in kept if e.occurred_at <= moment and e.payload.type not in RECORDS]
    states = [s for _, s in memory.participants(PROCESS)]
    if segment is not None:
        states = list(members(states, parse_segment(PLAN, segment), PLAN))
    counts = counts_of(states, PLAN, sequence=0)
    return Counts(
        sequence=0,
        participants=counts.participants,
        engagements=counts.engagements,
        channels=counts.channels,
        categories=counts.categories,
        profiled=counts.profiled,
        people_by_channel=counts.people_by_channel,
        first_event=min(times, default=None),
        last_event=max(times, default=None),
    )


def numbers(c: Counts) -> tuple[object, ...]:
    return what_was_counted(c)[1:]  # all but the sequence: a replay has none of its own


def moments(rng: random.Random, log: list[tuple[int, Envelope]]) -> list[datetime]:
    times = sorted(e.occurred_at for _, e in log)
    start, end = times[0] - timedelta(days=1), times[-1]
    # Exact times of engagements, interviews above all: people come back to them, so a moment
    # falls between one person's engagements, and on one of them.
    returning = [e.occurred_at for _, e in log if e.payload.type == "InterviewCompleted"] or times
    picks = [start, end, rng.choice(times), rng.choice(times) - timedelta(microseconds=1)]
    picks += [rng.choice(returning) for _ in range(3)]
    day = rng.choice(times).replace(hour=0, minute=0, second=0, microsecond=0)
    picks += [day, day - timedelta(microseconds=1)]  # either side of a UTC day's start
    while len(picks) < MOMENTS:
        picks.append(start + (end - start) * rng.random())
    return picks


async def fresh_pool(another_database: Callable[[], Awaitable[str]]) -> asyncpg.Pool:
    pool = await schema.open_pool(await another_database())
    await schema.migrate(pool)
    return pool


async def test_as_of_from_counters_equals_a_replay_of_the_log(
    another_database: Callable[[], Awaitable[str]],
) -> None:
    for seed in range(LOGS):
        rng = random.Random(seed)
        log = list(enumerate(workload(rng, rng.randint(80, 260)), start=1))
        pool = await fresh_pool(another_database)
        try:
            engine = BatchEngine(pool, "analytics", plans={PROCESS: PLAN})
            at = 0
            while at < len(log):  # batches cut at random, some of one event
                size = rng.choice([1, 2, 7, 30, 120])
                await engine.apply(log[at : at + size], log[min(at + size, len(log)) - 1][0])
                at += size
            for moment in moments(rng, log):
                whole = await asof.coverage_counts(pool, "analytics", PROCESS, moment, DEFAULT_TZ, PLAN, None)
                assert numbers(whole.counts) == numbers(replayed(log, moment, None)), (seed, moment)
                segment = rng.choice(SEGMENTS)
                part = await asof.coverage_counts(
                    pool, "analytics", PROCESS, moment, DEFAULT_TZ, PLAN, parse_segment(PLAN, segment)
                )
                assert numbers(part.counts) == numbers(replayed(log, moment, segment)), (seed, moment, segment)
            # Asked as of now, the answer is the live one, number for number.
            now = await asof.coverage_counts(pool, "analytics", PROCESS, datetime.now(UTC), DEFAULT_TZ, PLAN, None)
            assert numbers(now.counts) == numbers(await reads.counts(pool, PROCESS, "analytics", PLAN)), seed
        finally:
            await pool.close()


async def test_an_as_of_answer_from_a_worker_process_is_the_one_made_here(
    another_database: Callable[[], Awaitable[str]],
) -> None:
    """The service reads and folds as-of answers in worker processes with their own connection
    (``answers.workers``): the same questions, whole and by segment, give the same numbers as
    when read and folded in this process."""
    rng = random.Random(99)
    log = list(enumerate(workload(rng, 240), start=1))
    dsn = await another_database()
    pool = await schema.open_pool(dsn)
    workers = Workers(1)
    try:
        await schema.migrate(pool)
        engine = BatchEngine(pool, "analytics", plans={PROCESS: PLAN})
        for at in range(0, len(log), 40):
            await engine.apply(log[at : at + 40], log[min(at + 40, len(log)) - 1][0])
        for moment in moments(rng, log)[:6]:
            for segment in (None, parse_segment(PLAN, rng.choice(SEGMENTS))):
                here = await asof.coverage_counts(pool, "analytics", PROCESS, moment, DEFAULT_TZ, PLAN, segment)
                there = await asof.coverage_counts(
                    pool, "analytics", PROCESS, moment, DEFAULT_TZ, PLAN, segment, workers=workers, database_url=dsn
                )
                assert what_was_counted(there.counts) == what_was_counted(here.counts), (moment, segment)
                assert there.sequence == here.sequence == len(log)
    finally:
        workers.close(wait=True)
        await pool.close()


async def test_a_person_who_changed_their_answer_is_counted_as_they_answered_then(
    another_database: Callable[[], Awaitable[str]],
) -> None:
    """Region central in March, northeast in May: a view of April has them in central."""
    person = f.ref()
    march, may = datetime(2018, 3, 5, 15, tzinfo=UTC), datetime(2018, 5, 9, 15, tzinfo=UTC)
    log = [
        (1, Envelope.wrap(f.interview(person, region="central").payload, process_id=PROCESS, source="intake",
                          occurred_at=march)),
        (2, Envelope.wrap(f.interview(person, region="northeast").payload, process_id=PROCESS, source="intake",
                          occurred_at=may)),
    ]  # fmt: skip
    pool = await fresh_pool(another_database)
    try:
        await BatchEngine(pool, "analytics", plans={PROCESS: PLAN}).apply(log, 2)
        april = await asof.coverage_counts(
            pool, "analytics", PROCESS, datetime(2018, 4, 1, tzinfo=UTC), DEFAULT_TZ, PLAN, None
        )
        assert april.counts.categories.get(("region", "central")) == 1
        assert ("region", "northeast") not in april.counts.categories
        assert april.counts.engagements == 1 and april.counts.last_event == march
        june = await asof.coverage_counts(
            pool, "analytics", PROCESS, datetime(2018, 6, 1, tzinfo=UTC), DEFAULT_TZ, PLAN, None
        )
        assert june.counts.categories.get(("region", "northeast")) == 1 and june.counts.engagements == 2
    finally:
        await pool.close()


async def test_read_models_from_before_the_counters_say_to_rebuild(
    another_database: Callable[[], Awaitable[str]],
) -> None:
    """Upgrading read models that already hold participants: as-of refuses, naming the command."""
    dsn = await another_database()
    pool = await schema.open_pool(dsn)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE schema_migrations (name text PRIMARY KEY, applied_at timestamptz)")
        # Apply the migrations before the counters, count someone, then upgrade.
        for name in ("001_read_models.sql", "002_over_time_and_status.sql"):
            async with pool.acquire() as conn:
                sql = resources.files("services.analytics.store").joinpath("migrations", name).read_text()
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        await pool.execute(
            "INSERT INTO participants (process_id, participant, first_seen, last_seen) "
            "VALUES ($1, 'survey:x', now(), now())",
            PROCESS,
        )
        await schema.migrate(pool)
        with pytest.raises(reads.AsOfNeedsRebuild, match="engage rebuild"):
            await asof.coverage_counts(pool, "analytics", PROCESS, datetime.now(UTC), DEFAULT_TZ, PLAN, None)
    finally:
        await pool.close()
