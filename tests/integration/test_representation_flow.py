"""Under-reached communities, status-change events and segments, against real servers."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from services.analytics.app import build_app
from shared.bus import STATUS_STREAM, attach_streams, make_broker, publish_event
from shared.profile import Profile
from shared.settings import Settings
from tests import factories as f
from tests.polling import eventually

pytestmark = pytest.mark.integration

PLAN = """
process_id = "test-outreach"
name = "Test outreach"
threshold = 0.8

[dimensions.region]
label = "Region"
multi_select = false
[dimensions.region.categories.northeast]
label = "Northeast"
target = { share = 0.5, kind = "goal", source = "test goal" }
[dimensions.region.categories.southwest]
label = "Southwest"
target = { share = 0.3, kind = "goal", source = "test goal" }
[dimensions.region.categories.central]
label = "Central"

[dimensions.lived_experience]
label = "Lived experience"
multi_select = false
[dimensions.lived_experience.categories.yes]
label = "People with lived experience"
target = { share = 0.4, kind = "goal", source = "test goal" }

[dimensions.mandated_group]
label = "Mandated stakeholder groups"
multi_select = true
derived = true
[dimensions.mandated_group.categories.police_probation]
label = "Police and probation officers"
when = { professional_roles = ["police", "probation_officer"] }
target = { min_count = 5, kind = "goal", source = "test goal" }
"""


def brute_force_needed(count: int, n: int, share: float, threshold: float = 0.8) -> int:
    """The fewest x with (count + x) / (n + x) >= threshold * share, by counting up."""
    x = 0
    while (count + x) * 1000 < threshold * share * 1000 * (n + x) - 1e-9:
        x += 1
    return x


async def status_events(js) -> list[dict]:
    info = await js.stream_info(STATUS_STREAM)
    return (
        [
            orjson.loads((await js.get_msg(STATUS_STREAM, seq)).data)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
        if info.state.messages
        else []
    )


def row(body: dict, dimension: str, category: str) -> dict:
    dim = next(d for d in body["dimensions"] if d["dimension"] == dimension)
    return next(c for c in dim["categories"] if c["category"] == category)


async def test_two_under_reached_communities_are_flagged_announced_and_one_recovers(
    make_settings: Callable[..., Settings], auth_headers, tmp_path: Path
) -> None:
    """Flags and needed match hand counts; status events are published; recovery is announced."""
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    settings = make_settings(plans=[plan], process_id="test-outreach")
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    js = await attach_streams(broker.connection, settings)

    def person(region: str, lived: str, roles: list[str] | None = None):
        return f.survey(
            Profile(region=region, lived_experience=lived, professional_roles=roles), process_id="test-outreach"
        )

    population = (
        [person("central", "yes") for _ in range(25)]
        + [person("central", "no", ["police"]) for _ in range(5)]
        + [person("central", "no") for _ in range(10)]
        + [person("northeast", "yes") for _ in range(6)]
        + [person("southwest", "no") for _ in range(4)]
    )
    for ev in population:
        await publish_event(broker, ev, settings)

    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:

            async def coverage() -> dict:
                return (await client.get("/coverage", headers=auth_headers("analyst"))).json()

            body = await eventually(coverage, lambda body: body["participants"] == 50, what="50 participants")
            northeast, southwest = row(body, "region", "northeast"), row(body, "region", "southwest")
            assert northeast["status"] == southwest["status"] == "under-reached"
            assert northeast["needed"] == brute_force_needed(6, 50, 0.5) == 24
            assert southwest["needed"] == brute_force_needed(4, 50, 0.3) == 11
            assert northeast["ratio"] == 0.24 and southwest["ratio"] == 0.27
            assert [(c["dimension"], c["category"]) for c in body["under_reached"]] == [
                ("region", "northeast"),
                ("region", "southwest"),
            ]
            assert row(body, "lived_experience", "yes")["status"] == "on-track"
            assert row(body, "mandated_group", "police_probation")["count"] == 5
            assert row(body, "region", "central")["status"] == "no-target"

            announced = await eventually(
                lambda: status_events(js), lambda found: len(found) >= 2, what="two status events"
            )
            assert sorted((e["type"], e["category"], e["needed"]) for e in announced) == [
                ("CommunityUnderReached", "northeast", 24),
                ("CommunityUnderReached", "southwest", 11),
            ]

            for _ in range(11):
                await publish_event(broker, person("southwest", "no"), settings)
            body = await eventually(coverage, lambda body: body["participants"] == 61, what="61 participants")
            assert row(body, "region", "southwest")["status"] == "on-track"

            async def reached():
                return [e for e in await status_events(js) if e["type"] == "CommunityReached"]

            recovered = await eventually(reached, what="a CommunityReached status event")
            # The eleven arrivals may be counted in one batch or several: on the way southwest may pass
            # through "watch" (one more announcement), but it ends on track, and northeast stays put.
            assert [(e["category"], e["status"]) for e in recovered] == [("southwest", "on-track")]
            assert recovered[0]["previous"] in ("under-reached", "watch")
            later = (await status_events(js))[2:]
            assert {e["category"] for e in later} == {"southwest"}
            assert len(later) == (1 if recovered[0]["previous"] == "under-reached" else 2)
    await broker.stop()


async def test_a_segment_matches_counts_made_from_the_events(make_settings, auth_headers) -> None:
    """Race/ethnicity among people with lived experience, as /coverage?segment= gives it,
    equals a count made directly from the published events."""
    settings = make_settings()
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    rng = random.Random(38)
    events = [f.survey(f.random_profile(rng)) for _ in range(400)]
    for ev in events:
        await publish_event(broker, ev, settings)
    lived = [e.payload.profile for e in events if e.payload.profile.lived_experience == "yes"]
    expected = Counter(c for p in lived if isinstance(p.race_ethnicity, list) for c in p.race_ethnicity)
    alone = Counter(
        p.race_ethnicity[0] for p in lived if isinstance(p.race_ethnicity, list) and len(p.race_ethnicity) == 1
    )
    answered = sum(1 for p in lived if isinstance(p.race_ethnicity, list))

    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:

            async def segment() -> dict:
                return (
                    await client.get(
                        "/coverage", params={"segment": "lived_experience:yes"}, headers=auth_headers("analyst")
                    )
                ).json()

            body = await eventually(
                segment,
                lambda body: body["as_of"]["behind"] == 0 and body["as_of"]["sequence"] == 400,
                what="the projection to reach 400",
            )
            bad = await client.get(
                "/coverage", params={"segment": "lived_experience:maybe"}, headers=auth_headers("analyst")
            )
    await broker.stop()
    assert body["participants"] == len(lived)
    race = next(d for d in body["dimensions"] if d["dimension"] == "race_ethnicity")
    assert race["answered"] == answered
    got = {c["category"]: c["count"] for c in race["categories"] if c["count"]}
    assert got == dict(expected)
    assert {c["category"]: c["alone"] for c in race["categories"] if c["alone"]} == dict(alone)
    for c in race["categories"]:
        if c["count"]:
            assert c["share"] == pytest.approx(round(100 * c["count"] / answered + 1e-9, 1))
    assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "segment"


async def test_engagements_over_time_fall_on_minnesota_days_and_monday_weeks_without_the_withdrawn(
    make_settings, auth_headers
) -> None:
    """Engagements and first participation land on Minnesota days and Monday weeks; withdrawal removes them."""
    from datetime import UTC, datetime

    settings = make_settings()
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    person = f.ref()
    at = [
        datetime(2018, 3, 6, 2, 0, tzinfo=UTC),  # Monday 5 March, 8 pm in Minnesota
        datetime(2018, 3, 14, 16, 0, tzinfo=UTC),
    ]  # Wednesday 14 March
    events = [
        f.interview(person).model_copy(update={"occurred_at": at[0]}),
        f.interview(person).model_copy(update={"occurred_at": at[1]}),
    ]
    events += [f.survey(region="central").model_copy(update={"occurred_at": at[1]}) for _ in range(6)]
    for ev in events:
        await publish_event(broker, ev, settings)
    withdrawn_later = f.ref()
    await publish_event(broker, f.interview(withdrawn_later).model_copy(update={"occurred_at": at[0]}), settings)
    last, _ = await publish_event(broker, f.withdrawn(withdrawn_later), settings)

    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:

            async def over_time(by: str, who: str = "analyst") -> dict:
                return (await client.get("/coverage/over-time", params={"by": by}, headers=auth_headers(who))).json()

            days = await eventually(
                lambda: over_time("day"),
                lambda body: body["as_of"]["sequence"] == last,
                what=f"the projection to reach {last}",
            )
            weeks = await over_time("week")
            coordinator = await over_time("week", "coordinator")
    await broker.stop()
    assert [(d["period"], d["engagements"], d["participants_reached"]) for d in days["periods"]] == [
        ("2018-03-05", {"interview_in_person": 1}, {"interview_in_person": 1}),
        ("2018-03-14", {"interview_in_person": 1, "survey": 6}, {"interview_in_person": 0, "survey": 6}),
    ]
    assert [(w["period"], w["total_engagements"]) for w in weeks["periods"]] == [("2018-03-05", 1), ("2018-03-12", 7)]
    assert days["timezone"] == "America/Chicago" and days["as_of"]["behind"] == 0
    assert days["as_of"]["projected_at"] is not None
    first_week = coordinator["periods"][0]
    # One engagement, rounded at random (keyed by who it is) to 0, shown "<5", or, one time in five, to 5.
    assert first_week["total_engagements"] in ("<5", 5) and first_week["engagements"]["interview_in_person"] in (
        "<5",
        5,
    )
    for week in coordinator["periods"]:
        for value in (*week["engagements"].values(), *week["participants_reached"].values()):
            assert value == "<5" or value % 5 == 0
