"""The participants' survey form against a real nats-server: what it records, what it refuses, kindly."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlencode

import httpx
import pytest
import structlog

from services.survey.app import build_app
from shared.events import SurveyCompleted
from shared.logging import configure_logging
from shared.settings import Settings
from tests.integration.test_survey_api import stored_events

pytestmark = pytest.mark.integration
USER_AGENT = "Mozilla/5.0 (SurveyFormTestPhone 7.1) Unique-Agent-8c1f"
ANSWERS = [
    ("region", "northeast"),
    ("lived_experience", "yes"),
    ("race_ethnicity", "indigenous"),
    ("race_ethnicity", "multiracial"),
    ("gender", "declined"),
    ("experience_terms", "own_term_prostitute"),
]


@pytest.fixture
def form_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def setting(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"ENGAGE_SURVEY_FORM_{name.upper()}", value)

    setting(min_seconds="0")
    return setting


@pytest.fixture
async def survey(
    make_settings: Callable[..., Settings], form_env: Callable[..., None]
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(make_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 52345))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://survey", headers={"User-Agent": USER_AGENT}
        ) as client:
            yield client


async def token_of(client: httpx.AsyncClient, lang: str = "en") -> str:
    page = await client.get(f"/form?lang={lang}")
    assert "set-cookie" not in page.headers
    found = re.search(r'name="token" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


async def send(client: httpx.AsyncClient, fields: list[tuple[str, str]]) -> httpx.Response:
    """POST the form as a browser does: urlencoded, a repeated name for each box ticked."""
    return await client.post(
        "/form", content=urlencode(fields), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


async def responses(nats_url: str) -> list[SurveyCompleted]:
    return [e.payload for _, e in await stored_events(nats_url) if isinstance(e.payload, SurveyCompleted)]


async def test_a_sent_form_records_one_response_once(survey: httpx.AsyncClient, nats_url: str) -> None:
    token = await token_of(survey, "es")
    body = [("token", token), ("lang", "es"), *ANSWERS]
    first = await send(survey, body)
    again = await send(survey, body)  # the same form sent twice
    for r in (first, again):
        assert r.status_code == 200
        assert "set-cookie" not in r.headers and r.headers["cache-control"] == "no-store"
        assert '<html lang="es">' in r.text and "Gracias" in r.text and "Salir del sitio" in r.text
    stored = await responses(nats_url)
    assert len(stored) == 1
    profile = stored[0].profile
    assert profile.categories == {
        "region": ("northeast",),
        "lived_experience": ("yes",),
        "race_ethnicity": ("indigenous", "multiracial"),
        "gender": ("declined",),
        "experience_terms": ("own_term_prostitute",),
    }
    # the same form sent back with other answers: the first ones stand, nothing new is stored
    changed = await send(survey, [("token", token), ("lang", "es"), ("region", "central")])
    assert changed.status_code == 200 and "Guardamos sus primeras respuestas" in changed.text
    assert len(await responses(nats_url)) == 1


async def test_a_too_fast_form_is_refused_kindly_keeping_the_answers(
    make_settings: Callable[..., Settings], form_env: Callable[..., None], nats_url: str
) -> None:
    form_env(min_seconds="2")
    app = build_app(make_settings())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey") as client:
            token = await token_of(client)
            r = await send(client, [("token", token), *ANSWERS])
            assert r.status_code == 422 and "set-cookie" not in r.headers
            assert "quicker than we expected" in r.text and 'role="alert"' in r.text
            assert 'value="northeast" checked' in r.text and 'value="multiracial" checked' in r.text
            fresh = re.search(r'name="token" value="([^"]+)"', r.text)
            assert fresh and fresh.group(1) != token
            assert await responses(nats_url) == []
            await asyncio.sleep(2.1)  # a person reading the message, then sending again
            again = await send(client, [("token", fresh.group(1)), *ANSWERS])
            assert again.status_code == 200 and "Thank you" in again.text
    assert len(await responses(nats_url)) == 1


async def test_a_stale_or_forged_form_is_refused_kindly(
    make_settings: Callable[..., Settings], form_env: Callable[..., None], nats_url: str
) -> None:
    form_env(max_age_seconds="0.3")
    app = build_app(make_settings())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey") as client:
            token = await token_of(client)
            await asyncio.sleep(0.4)
            stale = await send(client, [("token", token), *ANSWERS])
            forged = await send(client, [("token", "1.abc.def"), ("region", "central")])
    assert stale.status_code == 422 and "open for a long time" in stale.text
    assert 'value="northeast" checked' in stale.text
    assert forged.status_code == 422 and "could not read this form" in forged.text
    assert 'value="central" checked' in forged.text
    assert await responses(nats_url) == []


async def test_bad_input_names_the_field_and_keeps_what_was_accepted(survey: httpx.AsyncClient, nats_url: str) -> None:
    token = await token_of(survey)
    r = await send(
        survey,
        [
            ("token", token),
            ("region", "northeast"),
            ("gender", "female"),
            ("gender", "martian"),
            ("age_band", "18-24"),
            ("age_band", "65+"),
        ],
    )
    assert r.status_code == 422 and "set-cookie" not in r.headers
    assert '<a href="#gender-0">What is your gender?: Please choose one of the answers listed.</a>' in r.text
    assert '<a href="#age_band-0">How old are you?: Please choose only one answer.</a>' in r.text
    assert 'aria-describedby="gender-hint gender-error"' in r.text
    assert 'value="northeast" checked' in r.text and 'value="female" checked' in r.text
    assert "martian" not in r.text  # the refused value is never echoed back
    unknown = await send(survey, [("token", token), ("phone_number", "x")])
    assert unknown.status_code == 422 and "phone_number: This form does not ask this question." in unknown.text
    both = await send(survey, [("token", token), ("gender", "declined"), ("gender", "male")])
    assert both.status_code == 422 and "not both" in both.text
    huge = await survey.post(
        "/form", content=b"region=" + b"x" * 100_000, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert huge.status_code == 413 and "larger than expected" in huge.text and "Exit site" in huge.text
    assert await responses(nats_url) == []
    # then the person sends it right: it is recorded
    ok = await send(survey, [("token", token), ("region", "northeast"), ("gender", "female")])
    assert ok.status_code == 200
    assert len(await responses(nats_url)) == 1


async def test_no_address_or_user_agent_reaches_the_logs(
    make_settings: Callable[..., Settings], form_env: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings()
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    configure_logging("json", "debug")  # everything, onto the captured stderr
    try:
        app = build_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("10.98.76.54", 40404))
            headers = {"User-Agent": USER_AGENT, "X-Forwarded-For": "10.11.12.13"}
            async with httpx.AsyncClient(transport=transport, base_url="http://survey", headers=headers) as client:
                token = await token_of(client)
                sent = await send(client, [("token", token), *ANSWERS])
                await send(client, [("token", "bad"), ("region", "nowhere")])
        err = capsys.readouterr().err
    finally:  # the captured stderr closes after this test: later tests must not log into it
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
    assert sent.status_code == 200
    assert "survey_response_recorded" in err and "survey_form_refused" in err  # the logs were captured
    for secret in ("10.98.76.54", "10.11.12.13", "Unique-Agent", "SurveyFormTestPhone", "northeast", token):
        assert secret not in err, secret
