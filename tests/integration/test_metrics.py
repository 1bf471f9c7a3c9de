"""Each service measures itself at /metrics, for a scraper's token only, and says nothing about anyone."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.analytics.app import build_app as build_analytics
from services.intake.app import build_app as build_intake
from services.survey.app import build_app as build_survey
from shared.settings import Settings

pytestmark = pytest.mark.integration
BUILDERS = {"intake": build_intake, "survey": build_survey, "analytics": build_analytics}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


@pytest.mark.parametrize("name", list(BUILDERS))
async def test_metrics_count_answers_by_route_template_for_the_monitoring_token_only(
    name: str, make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    app = BUILDERS[name](make_settings())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}") as client:
            assert (await client.get("/metrics")).status_code == 401
            assert (await client.get("/metrics", headers=auth_headers("coordinator"))).status_code == 403
            before = samples(
                (await client.get("/metrics", headers=auth_headers("monitoring"))).text, "engage_http_requests_total"
            )
            await client.get("/health")
            await client.get("/no/such/route/p-secret12345")
            after = await client.get("/metrics", headers=auth_headers("monitoring"))
            assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
            counted = samples(after.text, "engage_http_requests_total")
            health = (("method", "GET"), ("route", "/health"), ("status", "200"))
            assert counted[health] == before.get(health, 0) + 1
            assert counted[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] >= 1
            assert "p-secret12345" not in after.text  # a path never becomes a label


async def test_a_stored_write_is_counted_and_timed_by_event_type(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    app = build_survey(make_settings())
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey") as client:
            scrape = lambda: client.get("/metrics", headers=auth_headers("monitoring"))  # noqa: E731 - read twice
            stored = (("event_type", "SurveyCompleted"), ("outcome", "stored"))
            before = samples((await scrape()).text, "engage_writes_total").get(stored, 0)
            written = await client.post("/responses", json={"profile": {}}, headers=auth_headers("survey"))
            assert written.status_code == 201
            after = (await scrape()).text
            assert samples(after, "engage_writes_total")[stored] == before + 1
            assert samples(after, "engage_write_seconds_count")[(("event_type", "SurveyCompleted"),)] >= 1
