"""Coordinators' releases against the real servers: the same numbers from a second instance and
after a restart, a withdrawal that waits for the next cut, and the same people asked two ways."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from services.analytics.app import build_app
from shared.events import Envelope
from shared.profile import Profile
from tests import factories as f
from tests.integration.test_analytics_projection import broker, publish_all
from tests.polling import eventually

pytestmark = pytest.mark.integration
__all__ = ["broker"]  # the fixture, shared with the projection tests

REGIONS = ["northeast", "central", "west_central", "southeast", "declined"]


def people(rng: random.Random, n: int) -> list[tuple[str, Envelope]]:
    out = []
    for _ in range(n):
        who = f.ref()
        profile = Profile.model_validate(
            {
                "region": rng.choice(REGIONS),
                "lived_experience": rng.choice(["yes", "no", "declined"]),
                "gender": rng.choice([["female"], ["male"], ["non_binary"], "declined"]),
            }
        )
        out.append((who, f.interview(who, profile)))
    return out


async def coordinator_view(app: Any, headers: dict[str, str], segment: str | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
        params = {"segment": segment} if segment else {}
        r = await client.get("/coverage", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def numbers(body: dict[str, Any]) -> dict[str, Any]:
    """What a coordinator is told, without the clocks."""
    return {k: v for k, v in body.items() if k not in ("as_of", "first_event", "last_event")}


async def test_a_second_instance_and_a_restart_show_the_same_release(make_settings, broker, auth_headers) -> None:
    settings = make_settings()
    rng = random.Random(5)
    last = await publish_all(broker, settings, [ev for _, ev in people(rng, 23)])
    coordinator = auth_headers("coordinator")
    first, second = build_app(settings), build_app(settings)
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        one = await coordinator_view(first, coordinator)
        two = await coordinator_view(second, coordinator)
        seg_one = await coordinator_view(first, coordinator, "lived_experience:yes")
    assert one["suppression"]["release"] == two["suppression"]["release"] < last  # 20 released, 3 waiting
    assert one["suppression"]["release_number"] == 4
    assert numbers(one) == numbers(two)
    restarted = build_app(settings)
    async with restarted.router.lifespan_context(restarted):
        again = await coordinator_view(restarted, coordinator)
        seg_again = await coordinator_view(restarted, coordinator, "lived_experience:yes")
    assert numbers(again) == numbers(one) and numbers(seg_again) == numbers(seg_one)


async def test_the_same_people_read_the_same_through_any_view(make_settings, broker, auth_headers) -> None:
    settings = make_settings()
    await publish_all(broker, settings, [ev for _, ev in people(random.Random(8), 60)])
    app = build_app(settings)
    coordinator = auth_headers("coordinator")
    async with app.router.lifespan_context(app):
        whole = await coordinator_view(app, coordinator)
        lived = await coordinator_view(app, coordinator, "lived_experience:yes")
        both = await coordinator_view(app, coordinator, "region:northeast,lived_experience:yes")
        flipped = await coordinator_view(app, coordinator, "lived_experience:yes,region:northeast")
        northeast = await coordinator_view(app, coordinator, "region:northeast")
    row = {
        c["category"]: c["count"] for d in lived["dimensions"] if d["dimension"] == "region" for c in d["categories"]
    }
    other = {
        c["category"]: c["count"]
        for d in northeast["dimensions"]
        if d["dimension"] == "lived_experience"
        for c in d["categories"]
    }
    assert row["northeast"] == other["yes"] == both["participants"] == flipped["participants"]
    assert numbers(both) == numbers(flipped) and both["segment"]["key"] == "lived_experience:yes,region:northeast"
    region_of_whole = {
        c["category"]: c["count"] for d in whole["dimensions"] if d["dimension"] == "region" for c in d["categories"]
    }
    assert region_of_whole["northeast"] == northeast["participants"]


async def test_a_withdrawal_leaves_coordinator_views_at_the_next_cut(make_settings, broker, auth_headers) -> None:
    """Analysts lose the person at once; coordinators when k participants have changed, so the
    difference of two coordinator views is never that one person."""
    settings = make_settings()
    rng = random.Random(11)
    crowd = people(rng, 10)
    last = await publish_all(broker, settings, [ev for _, ev in crowd])
    app = build_app(settings)
    coordinator, analyst = auth_headers("coordinator"), auth_headers("analyst")
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:

            async def analyst_view() -> dict[str, Any]:
                body: dict[str, Any] = (await client.get("/coverage", headers=analyst)).json()
                return body

            await eventually(analyst_view, lambda b: b["as_of"]["sequence"] >= last, what="the projection")
            before = await coordinator_view(app, coordinator)
            gone = await publish_all(broker, settings, [f.withdrawn(crowd[0][0])])
            after_analyst = await eventually(analyst_view, lambda b: b["as_of"]["sequence"] >= gone, what="it")
            held = await coordinator_view(app, coordinator)
            assert after_analyst["participants"] == 9
            assert numbers(held) == numbers(before)  # nothing moves for one change

            more = await publish_all(broker, settings, [ev for _, ev in people(rng, 4)])
            moved = await coordinator_view(app, coordinator)
    assert moved["suppression"]["release"] == more
    assert moved["suppression"]["release_number"] == before["suppression"]["release_number"] + 1
    assert moved["participants"] in (10, 15)  # 13 people, rounded


async def test_a_bad_segment_is_a_422_naming_it(make_settings, broker, auth_headers) -> None:
    settings = make_settings()
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            for segment, reason in [
                ("region:atlantis", "not a region category"),
                ("planet:mars", "not a question, group or channel"),
                ("channel:carrier_pigeon", "not a channel"),
                ("region", "not a term"),
                (",", "is empty"),
                ("region:central,region:northeast,lgbq:yes,gender:male,age_band:declined", "at most 4"),
            ]:
                r = await client.get("/coverage", params={"segment": segment}, headers=auth_headers("coordinator"))
                assert r.status_code == 422, segment
                problem = r.json()["problems"][0]
                assert problem["field"] == "segment" and reason in problem["reason"], problem
