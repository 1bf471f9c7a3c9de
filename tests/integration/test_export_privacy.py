"""Privacy is a feature, exports included: contact details given for scheduling, intake's references
and the tokens reach neither an export's files, nor the log (the export's record included), nor a log line."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import nats
import pytest
from structlog.testing import capture_logs

from services.analytics.app import build_app as build_analytics
from services.analytics.export.run import unpack
from services.analytics.reading.replay import events
from services.intake.app import build_app as build_intake
from shared.events import InterviewCompleted
from shared.settings import Settings
from tests.conftest import TOKENS
from tests.integration import test_intake_privacy as intake_privacy
from tests.integration.test_intake_privacy import SECRETS, every_message, schedule_and_complete
from tests.polling import eventually

pytestmark = pytest.mark.integration

json_logging = intake_privacy.json_logging  # JSON logs as in production, seen by caplog
TOKEN_SECRETS = tuple(spec.token for spec in TOKENS.values())


async def participant_refs(nats_url: str, stream: str) -> list[str]:
    """Intake's references of the participants on the log: what an export must never carry."""
    nc = await nats.connect(nats_url)
    try:
        return [
            a.participant_ref
            async for _, ev in events(nc, stream)
            if isinstance(ev.payload, InterviewCompleted)
            for a in ev.payload.participants
        ]
    finally:
        await nc.close()


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who].token}"}


async def test_exports_carry_no_contact_detail_reference_or_token_and_neither_do_the_log_or_logs(
    make_settings: Callable[..., Settings],
    nats_url: str,
    json_logging: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings()
    intake_app, analytics_app = build_intake(settings), build_analytics(settings)
    async with intake_app.router.lifespan_context(intake_app), analytics_app.router.lifespan_context(analytics_app):
        intake = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=intake_app), base_url="http://intake", headers=bearer("intake")
        )
        analytics = httpx.AsyncClient(transport=httpx.ASGITransport(app=analytics_app), base_url="http://analytics")
        async with intake, analytics:
            interviews = [await schedule_and_complete(intake) for _ in range(2)]
            await eventually(
                lambda: analytics.get("/coverage", headers=bearer("analyst")),
                lambda r: r.json()["participants"] == 2,
                what="the projection to count both participants",
            )

            async def export() -> tuple[httpx.Response, ...]:
                micro = await analytics.post(
                    "/exports", json={"formats": ["csv", "parquet"]}, headers=bearer("analyst")
                )
                aggregate = await analytics.post(
                    "/exports", json={"tables": ["coverage", "totals"]}, headers=bearer("coordinator")
                )
                refused = await analytics.post("/exports", json={}, headers=bearer("coordinator"))
                return micro, aggregate, refused

            # Pass 1: what our code hands to structlog, before any redaction could hide a mistake.
            with capture_logs() as entries:
                micro, aggregate, refused = await export()
            # Pass 2: what is rendered as JSON lines and what the standard library saw.
            again = await export()
    assert [a.status_code for a in (micro, aggregate, refused, *again)] == [200, 200, 403] * 2
    exported = [e for e in entries if e["event"] == "data_exported"]
    assert [e["requested_by"] for e in exported] == ["analyst", "coordinator"]
    refs = await participant_refs(nats_url, settings.stream_name)
    assert len(refs) == 2

    forbidden = (*SECRETS, *TOKEN_SECRETS, *refs)
    for answer in (micro, aggregate, *again[:2]):
        for name, data in unpack(answer.content).items():
            for secret in (*forbidden, *interviews):  # nor anything that leads back to the log
                assert secret.encode() not in data, f"{name} carries something it must not"
    assert not any(s in repr(entries) for s in forbidden)
    rendered = capsys.readouterr()
    seen = json_logging.text + rendered.out + rendered.err
    assert "data_exported" in seen
    assert not any(s in seen for s in forbidden)
    for record in json_logging.records:
        assert not any(s in repr(record.__dict__) for s in forbidden)

    messages = await every_message(nats_url)
    assert sum(b".export." in raw for raw in messages) == 4  # every export is recorded, no refused one
    for raw in messages:
        for secret in (*SECRETS, *TOKEN_SECRETS):
            assert secret.encode() not in raw
