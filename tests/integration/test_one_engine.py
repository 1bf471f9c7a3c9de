"""The live projector, a rebuild and the in-memory projection count a random log the same way.

All three share the pure fold; the live projector and the rebuild also share the batch
engine (one checkpoint writer). The read models' counts are the SQL twin of the one count
builder over participant states, so here they are held equal for the whole process and for
segments of it; and an unreadable event costs each of them the same one event.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest

from services.analytics.answers.segments import members, narrowing, parse_segment
from services.analytics.engine import rebuild as rebuilding
from services.analytics.engine.projector import Projector
from services.analytics.projection.counts import Counts, counts_of
from services.analytics.projection.memory import MemoryProjection
from services.analytics.reading.replay import Window, events
from services.analytics.store import reads, schema
from shared.bus import attach_streams, make_broker, publish_event
from shared.plan import shipped_plans
from shared.settings import Settings
from tests import factories as f
from tests.integration.test_rebuild import workload
from tests.projecting import project_until

pytestmark = pytest.mark.integration

PROCESS = "shfa-2018"
PLAN = shipped_plans()[PROCESS]
SEGMENTS = [
    "lived_experience:yes",
    "region:northeast",
    "race_ethnicity:white",
    "gender:declined",
    "region:not_answered",
    "channel:advisory",
    "lived_experience:yes,region:central",
    "mandated_group:victims_survivors,channel:survey",
]


def what_was_counted(c: Counts) -> tuple[object, ...]:
    return (
        c.sequence,
        c.participants,
        c.profiled,
        c.engagements,
        c.channels,
        c.people_by_channel,
        c.categories,
        c.first_event,
        c.last_event,
    )


async def test_live_rebuilt_and_in_memory_counts_are_equal_for_a_random_log(
    make_settings: Callable[..., Settings], another_database: Callable[[], Awaitable[str]]
) -> None:
    rng = random.Random(9)
    settings = make_settings(batch_size=97)  # live batches cut the log differently from the rebuild's
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    js = await attach_streams(broker.connection, settings)
    log = workload(rng, 900)
    for i, event in enumerate(log):
        await publish_event(broker, event, settings)
        if i == 400:  # an event nobody can read, mid-log: each reader leaves out exactly this one
            await js.publish("engagement.shfa-2018.survey-response.sr-unreadable1", b'{"type": "SurveyCompleted"}')
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    assert last == len(log) + 1

    # Live: the projector, as analytics runs it.
    pool = await schema.open_pool(settings.database_url or "")
    await schema.migrate(pool)
    projector = Projector(settings, broker.connection, pool, {PROCESS: PLAN})
    await project_until(projector, last, timeout=60)
    assert projector.progress.parked == 1
    live = await reads.counts(pool, PROCESS, settings.consumer_name, PLAN)

    # Rebuilt: the whole log into another database's fresh tables.
    rebuilt_settings = settings.model_copy(update={"database_url": await another_database()})
    result = await rebuilding.rebuild(rebuilt_settings)
    assert (result.sequence, result.unreadable) == (last, 1)
    rebuilt_pool = await schema.open_pool(rebuilt_settings.database_url or "")
    rebuilt = await reads.counts(rebuilt_pool, PROCESS, settings.consumer_name, PLAN)

    # In memory: the same replay that as-of views and exports use.
    memory = MemoryProjection(settings.tz)
    skipped: list[int] = []
    memory.feed(
        [
            pair
            async for pair in events(
                broker.connection,
                settings.stream_name,
                Window(to_seq=last),
                lambda seq, _subject, _reason: skipped.append(seq),
            )
        ]
    )
    assert skipped == [402]
    in_memory = memory.counts(PROCESS, PLAN)

    assert live.participants > 100 and any(d == "mandated_group" for d, _ in live.categories)
    assert what_was_counted(live) == what_was_counted(rebuilt) == what_was_counted(in_memory)

    # Segments: participants' rows read by SQL, and the in-memory states, through the one count builder.
    everyone = [state for _, state in memory.participants(PROCESS)]
    for text in SEGMENTS:
        segment = parse_segment(PLAN, text)
        assert segment is not None
        term = narrowing(segment, PLAN)
        sequence, _, stored = await reads.states_in(
            pool, PROCESS, settings.consumer_name, (term.dimension, term.category) if term else None
        )
        from_sql = counts_of(members(stored, segment, PLAN), PLAN, sequence=sequence)
        from_memory = counts_of(members(everyone, segment, PLAN), PLAN, sequence=memory.sequence)
        assert from_sql.participants > 0, segment
        assert what_was_counted(from_sql) == what_was_counted(from_memory), segment

    # A withdrawal after all that leaves every view alike again.
    withdrawn = next(key for key, s in memory.participants(PROCESS) if key.startswith("ref:"))
    await publish_event(broker, f.withdrawn(withdrawn.removeprefix("ref:")), settings)
    await project_until(projector, last + 1, timeout=30)
    memory.feed([pair async for pair in events(broker.connection, settings.stream_name, Window(from_seq=last + 1))])
    after = await reads.counts(pool, PROCESS, settings.consumer_name, PLAN)
    assert after.participants == live.participants - 1
    assert what_was_counted(after) == what_was_counted(memory.counts(PROCESS, PLAN))

    await rebuilt_pool.close()
    await pool.close()
    await broker.stop()
