"""`engage rebuild` against real servers: the rebuilt read models equal the live ones, row for row."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from services.analytics.app import build_app
from services.analytics.engine import rebuild as rebuilding
from services.analytics.store import schema as store
from shared.bus import attach_streams, make_broker, publish_event
from shared.events import (
    AdvisoryFeedbackLogged,
    AdvisoryMemberJoined,
    Envelope,
    FeedbackTopic,
    GatheringHeld,
    GatheringKind,
    InterviewCompleted,
    InterviewFormat,
    InterviewScheduled,
)
from shared.settings import Settings
from tests import factories as f
from tests.polling import eventually

pytestmark = pytest.mark.integration

# Every read model, with the columns that say what was counted (not when a row was written).
TABLES = {
    "checkpoint": "consumer, stream_seq",
    "participants": "process_id, participant, profile, channels, days, first_channel, withdrawn, first_seen, last_seen",
    "category_counts": "process_id, dimension, category, participants",
    "engagement_counts": "process_id, channel, engagements",
    "totals": "process_id, participants, engagements, first_event, last_event",
    "daily_counts": "process_id, day, channel, engagements, participants",
    "activity": "process_id, sequence, kind, channel, region, topic, occurred_at, recorded_at",
    "interview_regions": "process_id, interview_id, region",
}
# A count that went up and back down leaves a zero row live, and none when one batch holds both.
NONZERO = {
    "category_counts": "participants <> 0",
    "engagement_counts": "engagements <> 0",
    "daily_counts": "engagements <> 0 OR participants <> 0",
}


async def dump(dsn: str) -> dict[str, list[tuple]]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": store.SCHEMA})
    try:
        out = {}
        for table, columns in TABLES.items():
            where = f"WHERE {NONZERO[table]}" if table in NONZERO else ""
            rows = await conn.fetch(f"SELECT {columns} FROM {table} {where} ORDER BY {columns}")
            out[table] = [tuple(r) for r in rows]
        return out
    finally:
        await conn.close()


def workload(rng: random.Random, n: int) -> list[Envelope]:
    """A random outreach: surveys, returning interviewees, small groups, gatherings, the advisory group."""
    people = [f.ref() for _ in range(60)]
    members = people[:8]
    events: list[Envelope] = [
        Envelope.wrap(
            AdvisoryMemberJoined(participant_ref=m, profile=f.random_profile(rng)),
            process_id="shfa-2018",
            source="intake",
        )
        for m in members
    ]
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            events.append(f.survey(f.random_profile(rng)))
        elif r < 0.8:
            iv = f.agg("iv")
            events.append(
                Envelope.wrap(
                    InterviewScheduled(
                        interview_id=iv,
                        format=InterviewFormat.phone,
                        scheduled_for=f.when(1),
                        region=rng.choice(f.REGIONS),
                    ),
                    process_id="shfa-2018",
                    source="intake",
                )
            )
            group = rng.sample(people, rng.choice([1, 1, 1, 3]))
            events.append(
                Envelope.wrap(
                    InterviewCompleted(
                        interview_id=iv,
                        format=InterviewFormat.small_group if len(group) > 1 else InterviewFormat.phone,
                        participants=[{"participant_ref": p, "profile": f.random_profile(rng)} for p in group],
                    ),
                    process_id="shfa-2018",
                    source="intake",
                    occurred_at=f.when(rng.uniform(0, 90)),
                )
            )
        elif r < 0.9:
            events.append(
                Envelope.wrap(
                    GatheringHeld(
                        gathering_id=f.agg("gh"),
                        kind=GatheringKind.art_of_hosting,
                        region=rng.choice(f.REGIONS),
                        attendee_count=rng.randint(3, 9),
                        profiles=[f.random_profile(rng) for _ in range(2)],
                    ),
                    process_id="shfa-2018",
                    source="intake",
                    occurred_at=f.when(rng.uniform(0, 90)),
                )
            )
        else:
            events.append(
                Envelope.wrap(
                    AdvisoryFeedbackLogged(
                        feedback_id=f.agg("fb"), topic=FeedbackTopic.outreach_gaps, member_refs=rng.sample(members, 2)
                    ),
                    process_id="shfa-2018",
                    source="intake",
                )
            )
        if rng.random() < 0.01:
            events.append(f.withdrawn(rng.choice(people)))
    return events


async def publish_some(settings: Settings, n: int = 5) -> None:
    """A few surveys on this test's log."""
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    for _ in range(n):
        await publish_event(broker, f.survey(region="central"), settings)
    await broker.stop()


async def test_a_rebuild_equals_the_live_read_models_and_is_swapped_in_while_the_service_answers(
    make_settings: Callable[..., Settings], database_url: str, auth_headers
) -> None:
    """Thousands of random events, duplicates and redeliveries, a withdrawal; rebuild; every table matches."""
    rng = random.Random(2018)
    settings = make_settings(batch_size=200)  # small live batches: the rebuild cuts the log differently
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    events = workload(rng, 2500)
    half = len(events) // 2

    async def publish(batch: list[Envelope]) -> None:
        for ev in batch:
            await publish_event(broker, ev, settings)
            if rng.random() < 0.05:  # a client retrying: the same event id is stored once
                await publish_event(broker, ev, settings)

    async def projected_to(client: httpx.AsyncClient, seq: int) -> dict:
        async def coverage() -> dict:
            return (await client.get("/coverage", headers=auth_headers("analyst"))).json()

        return await eventually(
            coverage, lambda body: body["as_of"]["sequence"] >= seq, what=f"the projection to reach {seq}", timeout=30
        )

    await publish(events[:half])
    # A projector that stops mid-stream leaves messages delivered and never acknowledged: the next
    # one is given them again (redeliveries) from its checkpoint.
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            await projected_to(client, 300)
    await publish(events[half:])
    js = broker.connection.jetstream()
    last = (await js.stream_info(settings.stream_name)).state.last_seq
    assert last == len(events)  # the retried publishes were stored once

    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            live_body = await projected_to(client, last)
            live = await dump(database_url)

            answered: list[int] = []
            stop = asyncio.Event()

            async def keep_asking() -> None:  # the live service keeps answering during the rebuild
                while not stop.is_set():
                    answered.append((await client.get("/coverage", headers=auth_headers("analyst"))).status_code)
                    await asyncio.sleep(0.01)

            asker = asyncio.create_task(keep_asking())
            result = await rebuilding.rebuild(settings)
            stop.set()
            await asker
            assert answered and set(answered) == {200}
            assert result.sequence == last and result.events == last and result.unreadable == 0
            rebuilt = await dump(database_url)
            for table in TABLES:
                assert rebuilt[table] == live[table], table
            assert live["participants"] and any(row[6] for row in live["participants"])  # a withdrawal is in

            # After the swap the live projector goes on from the rebuilt checkpoint.
            more = [f.survey(f.random_profile(rng)) for _ in range(20)]
            await publish(more)
            after = await projected_to(client, last + len(more))
            assert after["participants"] == live_body["participants"] + len(more)
    await broker.stop()


async def test_a_rebuild_goes_live_vacuumed_and_analyzed(make_settings, database_url: str) -> None:
    """The swapped-in tables come with their planner statistics and visibility maps made, so that
    autovacuum does not work through a whole rebuilt table while the live projector counts."""
    settings = make_settings()
    await publish_some(settings, 30)
    await rebuilding.rebuild(settings)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT relname, last_vacuum, last_analyze FROM pg_stat_user_tables "
            "WHERE schemaname = 'analytics' AND relname = ANY($1::text[])",
            list(rebuilding.TABLES),
        )
        assert {r["relname"] for r in rows} == set(rebuilding.TABLES)
        assert [r["relname"] for r in rows if r["last_vacuum"] is None or r["last_analyze"] is None] == []
        # Statistics the planner reads: a table never analyzed has reltuples -1.
        tuples = "SELECT reltuples FROM pg_class WHERE oid = 'analytics.participants'::regclass"
        assert await conn.fetchval(tuples) == 30
    finally:
        await conn.close()


async def test_a_rebuild_that_does_not_add_up_swaps_nothing(make_settings, database_url: str) -> None:
    """The checks catch a wrong table, and the live one stays."""
    settings = make_settings()
    await publish_some(settings)
    pool = await store.open_pool(database_url)
    await store.migrate(pool)
    original = rebuilding.check

    async def tampered(conn: asyncpg.Connection, schema: str) -> list[str]:
        await conn.execute(f'UPDATE "{schema}".totals SET participants = participants + 1')
        return await original(conn, schema)

    rebuilding.check = tampered
    try:
        with pytest.raises(rebuilding.RebuildCheckFailed, match="totals match the counted participants"):
            await rebuilding.rebuild(settings)
    finally:
        rebuilding.check = original
    assert await pool.fetchval("SELECT count(*) FROM totals") == 0  # the live (empty) tables were kept
    assert await pool.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'analytics\\_%'") == 0
    await pool.close()


def test_engage_rebuild_reports_what_it_did_and_names_what_is_missing(make_settings, tmp_path) -> None:
    """The command prints its rate and checks; without servers it says what to set, without a traceback."""
    settings = make_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    no_log = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "rebuild"],
        capture_output=True,
        text=True,
        env={**env, "ENGAGE_NATS_URL": settings.nats_url, "ENGAGE_DATABASE_URL": settings.database_url},
        timeout=120,
    )
    assert no_log.returncode == 2 and "not on that NATS server" in no_log.stderr, no_log.stderr
    asyncio.run(publish_some(settings))
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "rebuild"],
        capture_output=True,
        text=True,
        env={**env, "ENGAGE_NATS_URL": settings.nats_url, "ENGAGE_DATABASE_URL": settings.database_url},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "events/s" in done.stderr and "swapped in" in done.stderr and "✓ totals match" in done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "rebuild", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "ENGAGE_NATS_URL" in missing.stderr and "Traceback" not in missing.stderr
