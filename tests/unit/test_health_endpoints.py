"""``/health/live`` and ``/health/ready`` of the intake and survey services (the shared health router).

The deploy's healthchecks (compose, and anything probing the units) ask ``/health/ready``:
ready only while every server the service needs answers (NATS; for intake PostgreSQL too)
and never before the service has started. ``/health/live`` is the process answering at all.
``/health`` keeps answering as it always has. The apps are built for real and asked over
ASGI, without their lifespan: each test sets ``app.state.health_checks`` itself.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI

from services.intake.app import build_app as intake_app
from services.survey.app import build_app as survey_app
from shared.http import HealthCheck
from shared.settings import Settings

SETTINGS = Settings(nats_url="tls://nats-1:4222", database_url="postgresql://engage_intake@postgres:5432/engage")
APPS: dict[str, Callable[[Settings], FastAPI]] = {"intake": intake_app, "survey": survey_app}
NEEDS = {"intake": ["nats", "database"], "survey": ["nats"]}


def answering(value: bool) -> HealthCheck:
    async def check() -> bool:
        return value

    return check


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path)


@pytest.mark.parametrize("service", sorted(APPS))
async def test_ready_once_every_server_answers(service: str) -> None:
    app = APPS[service](SETTINGS)
    app.state.health_checks = {name: answering(True) for name in NEEDS[service]}
    r = await get(app, "/health/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "checks": dict.fromkeys(NEEDS[service], True)}


@pytest.mark.parametrize(("service", "down"), [("intake", "nats"), ("intake", "database"), ("survey", "nats")])
async def test_not_ready_while_a_server_does_not_answer(service: str, down: str) -> None:
    app = APPS[service](SETTINGS)
    app.state.health_checks = {name: answering(name != down) for name in NEEDS[service]}
    r = await get(app, "/health/ready")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready" and r.json()["checks"][down] is False
    assert (await get(app, "/health/live")).status_code == 200  # the process itself is fine: no restart


@pytest.mark.parametrize("service", sorted(APPS))
async def test_not_ready_before_it_has_started(service: str) -> None:
    """No checks yet (the lifespan has not connected anything): starting is not ready."""
    app = APPS[service](SETTINGS)
    r = await get(app, "/health/ready")
    assert r.status_code == 503 and r.json() == {"status": "not_ready", "checks": {}}
    live = await get(app, "/health/live")
    assert live.status_code == 200 and live.json() == {"status": "alive"}


@pytest.mark.parametrize("service", sorted(APPS))
async def test_health_answers_as_before(service: str) -> None:
    app = APPS[service](SETTINGS)
    assert (await get(app, "/health")).json() == {"status": "ok", "checks": {}}
    app.state.health_checks = {name: answering(name != "nats") for name in NEEDS[service]}
    r = await get(app, "/health")
    assert r.status_code == 503 and r.json()["status"] == "degraded"


@pytest.mark.parametrize("service", sorted(APPS))
async def test_the_probes_are_documented_and_need_no_token(service: str) -> None:
    app = APPS[service](SETTINGS)
    paths = app.openapi()["paths"]
    for path in ("/health", "/health/live", "/health/ready"):
        assert "get" in paths[path], path
        assert "security" not in paths[path]["get"], f"{path} must answer a probe without a token"
