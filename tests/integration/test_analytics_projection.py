"""The projector against a real nats-server and PostgreSQL."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from faststream.nats import NatsBroker

from services.analytics.app import build_app
from services.analytics.engine.batch import BatchEngine
from services.analytics.store import reads, schema
from shared.bus import DEADLETTER_STREAM, ensure_streams, make_broker, publish_event
from shared.events import Envelope
from shared.profile import Profile
from shared.settings import Settings
from tests import factories as f
from tests.polling import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def broker(make_settings: Callable[..., Settings]) -> AsyncIterator[NatsBroker]:
    settings = make_settings()
    b = make_broker(settings.nats_url, settings, "admin")
    await b.connect()
    await ensure_streams(b.connection.jetstream(), settings)
    yield b
    await b.stop()


async def publish_all(broker: NatsBroker, settings: Settings, events: list[Envelope]) -> int:
    seq = 0
    for ev in events:
        seq, _ = await publish_event(broker, ev, settings)
    return seq


async def coverage(client: httpx.AsyncClient, headers: dict[str, str], until_seq: int) -> dict:
    """GET /coverage once the projection has reached ``until_seq``."""

    async def body() -> dict:
        return (await client.get("/coverage", headers=headers)).json()

    return await eventually(
        body, lambda b: b["as_of"]["sequence"] >= until_seq, what=f"the projection to reach {until_seq}", interval=0.02
    )


def dim(body: dict, key: str) -> dict:
    return next(d for d in body["dimensions"] if d["dimension"] == key)


def region_counts(body: dict) -> dict[str, int]:
    """Regions with anyone in them."""
    return {c["category"]: c["count"] for c in dim(body, "region")["categories"] if c["count"] != 0}


async def test_events_on_the_log_become_coverage_counts(make_settings, broker, auth_headers) -> None:
    """Surveys, an interview and a gathering are counted as participants per category."""
    settings = make_settings()
    events = [
        *[f.survey(region="northeast", race_ethnicity=["white", "indigenous"]) for _ in range(6)],
        *[f.survey(region="central", race_ethnicity=["black"]) for _ in range(5)],
        f.survey(region="declined"),
        f.interview(region="northeast", lived_experience="yes"),
        f.gathering(7, [Profile(region="central")] * 5),
    ]
    last = await publish_all(broker, settings, events)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            body = await coverage(client, auth_headers("analyst"), last)
    assert body["participants"] == 6 + 5 + 1 + 1 + 7
    assert body["engagements_by_channel"] == {"survey": 12, "interview_in_person": 1, "art_of_hosting": 7}
    region = dim(body, "region")
    assert region_counts(body) == {"northeast": 7, "central": 10}
    assert region["answered"] == 17 and region["declined"] == 1 and region["not_answered"] == 2
    race = {c["category"]: (c["count"], c["share"]) for c in dim(body, "race_ethnicity")["categories"] if c["count"]}
    assert race == {"white": (6, 54.5), "indigenous": (6, 54.5), "black": (5, 45.5)}


async def test_a_malformed_message_is_parked_and_its_neighbours_counted(make_settings, broker, auth_headers) -> None:
    """Bad bytes on the stream go to the dead-letter stream with a reason; the rest count."""
    settings = make_settings()
    js = broker.connection.jetstream()
    await publish_all(broker, settings, [f.survey(region="northeast") for _ in range(3)])
    await js.publish("engagement.shfa-2018.survey-response.sr-broken01", b'{"type": "SurveyCompleted", "oops": 1}')
    await js.publish("engagement.shfa-2018.survey-response.sr-broken02", b"not json at all")
    last = await publish_all(broker, settings, [f.survey(region="northeast") for _ in range(2)])
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            body = await coverage(client, auth_headers("analyst"), last)
    assert body["participants"] == 5
    info = await js.stream_info(DEADLETTER_STREAM)
    assert info.state.messages == 2
    parked = [await js.get_msg(DEADLETTER_STREAM, seq) for seq in (1, 2)]
    assert parked[0].subject == "deadletter.engagement.shfa-2018.survey-response.sr-broken01"
    assert "event_id: Field required" in parked[0].headers["Engage-Reason"]
    assert parked[0].headers["Engage-Original-Sequence"] == "4"
    assert "not JSON" in parked[1].headers["Engage-Reason"]


async def test_a_redelivered_batch_changes_no_count(make_settings, database_url) -> None:
    """Applying the same stream sequences twice (a lost ack) counts them once."""
    pool = await schema.open_pool(database_url)
    await schema.migrate(pool)
    engine = BatchEngine(pool, "analytics")
    events = [(i + 1, f.survey(region="southwest")) for i in range(4)]
    assert await engine.apply(events, 4) == 4
    assert await engine.apply(events, 4) == 0
    assert await engine.apply(events[2:], 4) == 0
    counted = await reads.counts(pool, "shfa-2018", "analytics", None)
    await pool.close()
    assert counted.participants == 4 and counted.sequence == 4
    assert counted.categories[("region", "southwest")] == 4


async def test_a_withdrawn_participant_counts_nowhere(make_settings, broker, auth_headers) -> None:
    """After ParticipantWithdrawn the person leaves every count, engagements included."""
    settings = make_settings()
    person = f.ref()
    await publish_all(broker, settings, [f.interview(person, region="northwest"), f.survey(region="northwest")])
    last = await publish_all(broker, settings, [f.withdrawn(person), f.interview(person, region="northwest")])
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            body = await coverage(client, auth_headers("analyst"), last)
    assert body["participants"] == 1
    assert body["engagements_by_channel"] == {"survey": 1}
    assert region_counts(body) == {"northwest": 1}


async def test_coordinators_see_rounded_releases_that_move_every_k_participants(
    make_settings, broker, auth_headers
) -> None:
    """A coordinator's counts are multiples of k (0 reads "<k") within k-1 of the truth, from the
    release cut at the 5th and 10th participant; one more arrival moves the analyst's numbers, not
    the coordinator's, until k participants have changed."""
    settings = make_settings()
    last = await publish_all(
        broker,
        settings,
        [f.survey(region="northeast") for _ in range(8)] + [f.survey(region="southeast") for _ in range(2)],
    )
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            coord = await coverage(client, auth_headers("coordinator"), last)
            analyst = await coverage(client, auth_headers("analyst"), last)
            denied = await client.get("/coverage", headers=auth_headers("survey"))
            anonymous = await client.get("/coverage")
            assert coord["suppression"] == {
                "k": 5,
                "applied": True,
                "method": "rounded",
                "release": last,
                "release_number": 2,
                "release_every": 5,
            }
            assert region_counts(analyst) == {"northeast": 8, "southeast": 2}
            for region, true in (("northeast", 8), ("southeast", 2)):
                shown = next(c["count"] for c in dim(coord, "region")["categories"] if c["category"] == region)
                value = 0 if shown == "<5" else shown
                assert value in (5 * (true // 5), 5 * (true // 5 + 1)), (region, shown)
            assert coord["participants"] == 10 and analyst["participants"] == 10  # multiples stay put

            one_more = await publish_all(broker, settings, [f.survey(region="central")])
            analyst_after = await coverage(client, auth_headers("analyst"), one_more)
            held = (await client.get("/coverage", headers=auth_headers("coordinator"))).json()
            assert analyst_after["participants"] == 11
            assert held["suppression"]["release"] == last and held["participants"] == coord["participants"]
            assert held["dimensions"] == coord["dimensions"]  # nothing of the newcomer shows

            four_more = await publish_all(broker, settings, [f.survey(region="central") for _ in range(4)])
            moved = await coverage(client, auth_headers("coordinator"), four_more)
            assert moved["suppression"]["release"] == four_more and moved["participants"] == 15
            assert moved["suppression"]["release_number"] == 3
    assert denied.status_code == 403 and anonymous.status_code == 401


async def test_the_live_projection_equals_a_fresh_count(make_settings, broker, auth_headers) -> None:
    """A random workload, projected live in small batches, matches counts made by hand."""
    settings = make_settings(batch_size=7)
    rng = random.Random(20180301)
    events = [f.survey(f.random_profile(rng)) for _ in range(300)]
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        last = await publish_all(broker, settings, events)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            body = await coverage(client, auth_headers("analyst"), last)
    expected = Counter(
        str(e.payload.profile.region) for e in events if e.payload.profile.region not in (None, "declined")
    )
    assert region_counts(body) == dict(expected)
    assert body["participants"] == 300
