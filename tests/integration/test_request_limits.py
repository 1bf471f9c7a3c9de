"""Intake and survey refuse times outside the window and lists over their bounds: 422 naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from services.intake.app import build_app as intake_app
from services.survey.app import build_app as survey_app
from shared.events import MAX_PROFILES_PER_GATHERING
from shared.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.fault]

YEAR_ONE = "0001-01-01T00:00:00Z"


@pytest.fixture
async def client(make_settings: Callable[..., Settings]) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    settings = make_settings()
    apps: dict[str, FastAPI] = {"intake": intake_app(settings), "survey": survey_app(settings)}
    async with apps["intake"].router.lifespan_context(apps["intake"]):
        async with apps["survey"].router.lifespan_context(apps["survey"]):
            clients = {
                name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}")
                for name, app in apps.items()
            }
            yield lambda name: clients[name]
            for c in clients.values():
                await c.aclose()


def problems(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {p["field"]: p["reason"] for p in response.json()["problems"]}


async def test_a_survey_from_year_one_is_refused_naming_submitted_at(
    client: Callable[[str], httpx.AsyncClient], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    survey = client("survey")
    answer = await survey.post(
        "/responses", json={"profile": {}, "submitted_at": YEAR_ONE}, headers=auth_headers("survey")
    )
    assert problems(answer) == {"submitted_at": "Value error, must not be before 2000-01-01"}
    assert YEAR_ONE not in answer.text
    ok = await survey.post(
        "/responses", json={"profile": {}, "submitted_at": "2018-03-01T17:30:00Z"}, headers=auth_headers("survey")
    )
    assert ok.status_code == 201, ok.text


async def test_intake_times_lie_in_the_window(
    client: Callable[[str], httpx.AsyncClient], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    intake, headers = client("intake"), auth_headers("intake")
    gathering = {"kind": "art_of_hosting", "attendee_count": 3}
    assert problems(await intake.post("/gatherings", json={**gathering, "occurred_at": YEAR_ONE}, headers=headers)) == {
        "occurred_at": "Value error, must not be before 2000-01-01"
    }
    for when in (YEAR_ONE, (datetime.now(UTC) + timedelta(days=6 * 366)).isoformat()):
        answer = await intake.post("/interviews", json={"format": "phone", "scheduled_for": when}, headers=headers)
        assert list(problems(answer)) == ["scheduled_for"]
    in_a_year = (datetime.now(UTC) + timedelta(days=366)).isoformat()
    answer = await intake.post("/interviews", json={"format": "phone", "scheduled_for": in_a_year}, headers=headers)
    assert answer.status_code == 201, answer.text


async def test_lists_over_their_bounds_are_refused_naming_the_field(
    client: Callable[[str], httpx.AsyncClient], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    intake, headers = client("intake"), auth_headers("intake")
    too_many = {
        "kind": "art_of_hosting",
        "attendee_count": 5000,
        "profiles": [{"lived_experience": "yes"}] * (MAX_PROFILES_PER_GATHERING + 1),
    }
    assert list(problems(await intake.post("/gatherings", json=too_many, headers=headers))) == ["profiles"]

    nine = ["white", "black", "indigenous", "multiracial", "asian", "latinx", "immigrant", "other", "white"]
    member = {"profile": {"race_ethnicity": nine}}
    assert list(problems(await intake.post("/advisory/members", json=member, headers=headers))) == [
        "profile.race_ethnicity"
    ]
    huge = {"profile": {"gender": ["female"] * 20_000}}
    assert list(problems(await client("survey").post("/responses", json=huge, headers=auth_headers("survey")))) == [
        "profile.gender"
    ]
    twice = {"profile": {"gender": ["female", "female"]}}
    assert problems(await intake.post("/advisory/members", json=twice, headers=headers)) == {
        "profile": "Value error, gender lists a category more than once"
    }
    everything = {"profile": {"race_ethnicity": nine[:8]}}
    answer = await intake.post("/advisory/members", json=everything, headers=headers)
    assert answer.status_code == 201, answer.text
