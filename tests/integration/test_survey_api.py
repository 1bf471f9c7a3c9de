"""The survey service against a real nats-server: what it stores, what it refuses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import nats
import pytest
import structlog

from services.survey.app import build_app
from shared.errors import ConfigError
from shared.events import Envelope, SurveyCompleted
from shared.logging import configure_logging
from shared.settings import Settings
from shared.upcasting import decode_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def survey(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(make_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://survey") as client:
            yield client


async def stored_events(nats_url: str, subject: str = "engagement.>") -> list[tuple[str, Envelope]]:
    """Every event on the ENGAGEMENT stream matching ``subject``, read back with nats-py."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("ENGAGEMENT")
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            msg = await js.get_msg("ENGAGEMENT", seq)
            if subject == "engagement.>" or msg.subject == subject:
                out.append((msg.subject, decode_event(msg.data or b"")))
        return out
    finally:
        await nc.close()


def problem_fields(response: httpx.Response) -> list[str]:
    return [p["field"] for p in response.json()["problems"]]


PROFILE: dict[str, Any] = {
    "region": "northeast",
    "lived_experience": "yes",
    "race_ethnicity": ["indigenous", "multiracial"],
    "experience_terms": ["survivor_of_trafficking"],
}


async def test_a_response_publishes_one_survey_completed(
    survey: httpx.AsyncClient, auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    submitted = datetime(2018, 3, 1, 17, 30, tzinfo=UTC)
    r = await survey.post(
        "/responses", json={"profile": PROFILE, "submitted_at": submitted.isoformat()}, headers=auth_headers("survey")
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"response_id", "sequence", "duplicate"}
    assert body["response_id"].startswith("sr-") and body["duplicate"] is False

    events = await stored_events(nats_url)
    assert len(events) == 1
    subject, event = events[0]
    assert subject == f"engagement.shfa-2018.survey-response.{body['response_id']}"
    assert isinstance(event.payload, SurveyCompleted)
    assert event.payload.response_id == body["response_id"]
    assert event.payload.profile.race_ethnicity == ["indigenous", "multiracial"]
    assert event.source == "survey" and event.occurred_at == submitted
    assert body["sequence"] == 1


async def test_the_same_idempotency_key_stores_once(
    survey: httpx.AsyncClient, auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    headers = {**auth_headers("survey"), "Idempotency-Key": "form-2018-03-01-0042"}
    first = await survey.post("/responses", json={"profile": PROFILE}, headers=headers)
    again = await survey.post("/responses", json={"profile": PROFILE}, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["response_id"] == first.json()["response_id"]
    assert again.json()["sequence"] == first.json()["sequence"]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert len(await stored_events(nats_url)) == 1


async def test_the_same_key_with_different_answers_is_a_conflict(
    survey: httpx.AsyncClient, auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    headers = {**auth_headers("survey"), "Idempotency-Key": "k-1"}
    assert (await survey.post("/responses", json={"profile": PROFILE}, headers=headers)).status_code == 201
    r = await survey.post("/responses", json={"profile": {"region": "central"}}, headers=headers)
    assert r.status_code == 409
    assert len(await stored_events(nats_url)) == 1


async def test_without_a_key_each_response_is_new(
    survey: httpx.AsyncClient, auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    a = await survey.post("/responses", json={"profile": {}}, headers=auth_headers("survey"))
    b = await survey.post("/responses", json={"profile": {}}, headers=auth_headers("survey"))
    assert a.json()["response_id"] != b.json()["response_id"]
    assert len(await stored_events(nats_url)) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"profile": {"race_ethnicity": ["martian"]}}, "profile.race_ethnicity"),
        ({"profile": {}, "submitted_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, "submitted_at"),
        ({"profile": {}, "submitted_at": "2018-03-01T17:30:00"}, "submitted_at"),  # no time zone
        ({"profile": {}, "participant_ref": "p-0123456789"}, "participant_ref"),  # anonymous: refused
        ({"profile": {}, "notes": "call me on 612 555 0100"}, "notes"),  # no free text
        ({"profile": {"phone": "612 555 0100"}}, "profile.phone"),
        ({}, "profile"),
    ],
)
async def test_bad_input_is_422_naming_the_field_and_nothing_is_published(
    survey: httpx.AsyncClient,
    auth_headers: Callable[[str], dict[str, str]],
    nats_url: str,
    body: dict[str, Any],
    field: str,
) -> None:
    r = await survey.post("/responses", json=body, headers=auth_headers("survey"))
    assert r.status_code == 422, r.text
    assert any(f == field or f.startswith(field + ".") for f in problem_fields(r)), r.json()
    assert "Traceback" not in r.text and "612 555" not in r.text
    assert await stored_events(nats_url) == []


async def test_a_malformed_idempotency_key_is_422(
    survey: httpx.AsyncClient, auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    r = await survey.post(
        "/responses", json={"profile": {}}, headers={**auth_headers("survey"), "Idempotency-Key": "x" * 201}
    )
    assert r.status_code == 422
    assert problem_fields(r) == ["Idempotency-Key"]
    assert await stored_events(nats_url) == []


async def test_tokens_and_scopes(
    survey: httpx.AsyncClient, auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    assert (await survey.post("/responses", json={"profile": {}})).status_code == 401
    assert (
        await survey.post("/responses", json={"profile": {}}, headers={"Authorization": "Bearer not-a-token-at-all"})
    ).status_code == 401
    assert (await survey.post("/responses", json={"profile": {}}, headers=auth_headers("intake"))).status_code == 403
    assert await stored_events(nats_url) == []


async def test_declined_is_an_answer_for_multi_select(
    survey: httpx.AsyncClient, auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    profile = {"race_ethnicity": "declined", "gender": "declined", "experience_terms": "declined", "lgbq": "declined"}
    r = await survey.post("/responses", json={"profile": profile}, headers=auth_headers("survey"))
    assert r.status_code == 201, r.text
    [(_, event)] = await stored_events(nats_url)
    assert event.payload.profile.race_ethnicity == "declined"
    assert event.payload.profile.categories["gender"] == ("declined",)


async def test_another_process(
    survey: httpx.AsyncClient, auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    r = await survey.post("/responses", json={"profile": {}, "process_id": "wi-2027"}, headers=auth_headers("survey"))
    assert r.status_code == 201
    [(subject, event)] = await stored_events(nats_url)
    assert subject.startswith("engagement.wi-2027.survey-response.") and event.process_id == "wi-2027"


async def test_logs_carry_ids_never_the_profile(
    make_settings: Callable[..., Settings],
    auth_headers: Callable[[str], dict[str, str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    configure_logging(settings.log_format, settings.log_level)  # as `engage serve` does, onto the captured stderr
    try:
        app = build_app(settings)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey") as client:
                r = await client.post("/responses", json={"profile": PROFILE}, headers=auth_headers("survey"))
        err = capsys.readouterr().err
    finally:  # the captured stderr closes after this test: later tests must not log into it
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
    lines = [line for line in err.splitlines() if "survey_response_recorded" in line]
    assert len(lines) == 1 and r.json()["response_id"] in lines[0]
    assert "indigenous" not in err and "northeast" not in err and "survivor" not in err


async def test_health_reports_nats(survey: httpx.AsyncClient) -> None:
    r = await survey.get("/health")
    assert r.status_code == 200 and r.json()["checks"] == {"nats": True}


def test_nats_url_is_required(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="ENGAGE_NATS_URL"):
        build_app(make_settings(nats_url=None))
