"""What /openapi.json promises about errors is what intake, survey and analytics really send, and /docs
needs nothing from outside the service.

Each error is provoked for real against real servers (a 503 by stopping the nats-server),
and its body is validated against the model whose schema the route's OpenAPI entry for that
status references.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from services.analytics.answers.models import CoverageAnswer, OverTimeAnswer
from services.analytics.app import build_app as build_analytics
from services.cli.embedded import EmbeddedNats
from services.intake.app import build_app as build_intake
from services.survey.app import build_app as build_survey
from shared.http import (
    ConflictAnswer,
    ForbiddenAnswer,
    InvalidAnswer,
    NotFoundAnswer,
    UnauthorizedAnswer,
    UnavailableAnswer,
)
from shared.settings import Settings

pytestmark = pytest.mark.integration

SOON = (datetime.now(UTC) + timedelta(days=3)).isoformat()
CANCEL = {"reason": "scheduling"}
BY_STATUS: dict[int, type[BaseModel]] = {
    401: UnauthorizedAnswer,
    403: ForbiddenAnswer,
    404: NotFoundAnswer,
    409: ConflictAnswer,
    422: InvalidAnswer,
    503: UnavailableAnswer,
}
BUILDERS: dict[str, Callable[[Settings], FastAPI]] = {
    "intake": build_intake,
    "survey": build_survey,
    "analytics": build_analytics,
}


@asynccontextmanager
async def running(app: FastAPI, name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}") as client:
            yield client


async def check_contract(client: httpx.AsyncClient, method: str, route: str, answer: httpx.Response) -> None:
    """``answer`` has a status the route documents, with a body valid for the documented model."""
    operation = (await client.get("/openapi.json")).json()["paths"][route][method]
    documented = operation["responses"].get(str(answer.status_code))
    assert documented is not None, f"{method.upper()} {route} does not document {answer.status_code}"
    model = BY_STATUS[answer.status_code]
    ref = documented["content"]["application/json"]["schema"]["$ref"]
    assert ref == f"#/components/schemas/{model.__name__}", (route, answer.status_code, ref)
    model.model_validate(answer.json())  # raises if the real body strays from the documented one


async def test_intake_errors_match_its_openapi(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    async with running(build_intake(make_settings()), "intake") as intake:
        ok = auth_headers("intake")
        schedule = {"format": "in_person", "scheduled_for": SOON}
        seen: set[int] = set()

        async def expect(status: int, method: str, route: str, path: str, **kw: Any) -> httpx.Response:
            answer = await intake.request(method.upper(), path, **kw)
            assert answer.status_code == status, answer.text
            await check_contract(intake, method, route, answer)
            seen.add(status)
            return answer

        await expect(401, "post", "/interviews", "/interviews", json=schedule)
        await expect(403, "post", "/interviews", "/interviews", json=schedule, headers=auth_headers("survey"))
        await expect(422, "post", "/interviews", "/interviews", json={"format": "carrier_pigeon"}, headers=ok)
        await expect(
            422, "post", "/interviews", "/interviews", json=schedule, headers={**ok, "Idempotency-Key": "x" * 201}
        )
        await expect(
            422,
            "post",
            "/gatherings",
            "/gatherings",
            headers=ok,
            json={"kind": "art_of_hosting", "attendee_count": 1, "profiles": [{}, {}]},
        )
        interview = (await intake.post("/interviews", json=schedule, headers=ok)).json()["interview_id"]
        cancel = "/interviews/{interview_id}/cancel"
        assert (await intake.post(f"/interviews/{interview}/cancel", json=CANCEL, headers=ok)).status_code == 200
        await expect(409, "post", cancel, f"/interviews/{interview}/cancel", json=CANCEL, headers=ok)
        await expect(404, "post", cancel, "/interviews/iv-000000000000/cancel", json=CANCEL, headers=ok)
        await expect(401, "delete", "/interviews/{interview_id}/contact", f"/interviews/{interview}/contact")
    assert seen == {401, 403, 404, 409, 422}


async def test_survey_errors_match_its_openapi(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    async with running(build_survey(make_settings()), "survey") as survey:
        ok = auth_headers("survey")

        async def expect(status: int, **kw: Any) -> httpx.Response:
            answer = await survey.post("/responses", **kw)
            assert answer.status_code == status, answer.text
            await check_contract(survey, "post", "/responses", answer)
            return answer

        await expect(401, json={"profile": {}})
        await expect(401, json={"profile": {}}, headers={"Authorization": "Bearer not-a-token-at-all"})
        await expect(403, json={"profile": {}}, headers=auth_headers("intake"))
        await expect(422, json={"profile": {"region": "atlantis"}}, headers=ok)
        keyed = {**ok, "Idempotency-Key": "form-0042"}
        assert (await survey.post("/responses", json={"profile": {}}, headers=keyed)).status_code == 201
        await expect(409, json={"profile": {"region": "central"}}, headers=keyed)


async def test_the_same_key_with_different_answers_is_refused_with_the_reason(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    async with running(build_survey(make_settings()), "survey") as survey:
        keyed = {**auth_headers("survey"), "Idempotency-Key": "form-0043"}
        first = await survey.post("/responses", json={"profile": {"region": "central"}}, headers=keyed)
        again = await survey.post("/responses", json={"profile": {"region": "central"}}, headers=keyed)
        other = await survey.post("/responses", json={"profile": {"region": "northwest"}}, headers=keyed)
    assert (first.status_code, again.status_code) == (201, 201) and again.json()["duplicate"] is True
    assert other.status_code == 409
    assert other.json() == {
        "error": "conflict",
        "reason": "Idempotency-Key: this key was already used for a different request; "
        "send a new key for a new request",
    }


@pytest.fixture
async def stoppable_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server of this test's own, so the test can stop it under a running service."""
    server = EmbeddedNats(tmp_path / "own-nats")
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("name", ["intake", "survey"])
async def test_a_log_that_does_not_answer_is_a_documented_503(
    name: str,
    stoppable_nats: EmbeddedNats,
    make_settings: Callable[..., Settings],
    auth_headers: Callable[[str], dict[str, str]],
) -> None:
    settings = make_settings(nats_url=stoppable_nats.url, publish_timeout_seconds=1.0)
    route, body = {
        "intake": ("/gatherings", {"kind": "art_of_hosting", "attendee_count": 3}),
        "survey": ("/responses", {"profile": {}}),
    }[name]
    async with running(BUILDERS[name](settings), name) as client:
        assert (await client.get("/health")).status_code == 200
        stoppable_nats.stop()
        answer = await client.post(route, json=body, headers=auth_headers(name))
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1"
        await check_contract(client, "post", route, answer)
        health = await client.get("/health")
        assert health.status_code == 503 and health.json()["checks"]["nats"] is False


URL = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


async def test_analytics_answers_and_errors_match_its_openapi(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    """The typed coverage answers are what /openapi.json documents, and so are its errors."""
    async with running(build_analytics(make_settings()), "analytics") as analytics:
        schemas = (await analytics.get("/openapi.json")).json()["components"]["schemas"]
        for route, model, query in (
            ("/coverage", CoverageAnswer, {}),
            ("/coverage", CoverageAnswer, {"segment": "lived_experience:yes"}),
            ("/coverage/over-time", OverTimeAnswer, {"by": "day"}),
        ):
            answer = await analytics.get(route, params=query, headers=auth_headers("coordinator"))
            assert answer.status_code == 200, answer.text
            operation = (await analytics.get("/openapi.json")).json()["paths"][route]["get"]
            ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{model.__name__}" and model.__name__ in schemas
            model.model_validate(answer.json())
        for status, query, who in (
            (401, {}, None),
            (403, {}, "intake"),
            (422, {"segment": "region:atlantis"}, "analyst"),
            (422, {"as_of": "yesterday"}, "analyst"),
            (422, {"as_of": "0001-01-01T00:00Z"}, "analyst"),  # it used to be a 500
            (422, {"process_id": "Not A Process"}, "coordinator"),
        ):
            answer = await analytics.get("/coverage", params=query, headers=auth_headers(who) if who else {})
            assert answer.status_code == status, answer.text
            await check_contract(analytics, "get", "/coverage", answer)


@pytest.mark.parametrize("name", ["intake", "survey", "analytics"])
async def test_docs_need_nothing_from_outside_the_service(name: str, make_settings: Callable[..., Settings]) -> None:
    app = BUILDERS[name](make_settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}") as client:
        page = await client.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert not re.search(r"(?i)\b(?:https?:)?//", page.text), "the page names a URL outside the service"
        assert "<script>" not in page.text.replace(" ", ""), "an inline script would break a strict CSP"
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assets = URL.findall(page.text)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
        for asset in assets:
            assert asset.startswith("/"), asset
            fetched = await client.get(asset)
            assert fetched.status_code == 200, asset
        starter = next(a for a in assets if a.endswith("docs.js"))
        script = (await client.get(starter)).text
        assert not re.search(r"https?://", script) and "validatorUrl: null" in script
        openapi = re.search(r'data-openapi-url="([^"]+)"', page.text)
        assert openapi and (await client.get(openapi.group(1))).status_code == 200
        assert (await client.get("/redoc")).status_code == 404  # FastAPI's CDN page is not there either


async def test_a_body_that_is_not_json_is_a_422_naming_the_body(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    """Not FastAPI's own 400: engage's error body, as for any other bad input (found by fuzzing)."""
    async with running(build_survey(make_settings()), "survey") as survey:
        headers = {**auth_headers("survey"), "content-type": "application/json"}
        answer = await survey.post("/responses", content=b"\xff", headers=headers)
        assert answer.status_code == 422
        assert InvalidAnswer.model_validate(answer.json()).problems[0].field == "body"
        assert (await survey.get("/no/such/route")).status_code == 404
