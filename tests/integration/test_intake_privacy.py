"""Privacy is a feature: contact details given for scheduling never reach the event log
or a log line, and are gone once the interview is over."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import nats
import pytest
import structlog
from structlog.testing import capture_logs

from services.intake.app import build_app
from shared.logging import configure_logging
from shared.settings import Settings

pytestmark = pytest.mark.integration

NAME, PHONE, EMAIL = "Jane Q. Example", "+1 612 555 0142", "jane@example.org"
SECRETS = (NAME, PHONE, EMAIL, "6125550142", "612 555 0142", "Jane", "jane@")
SOON = (datetime.now(UTC) + timedelta(days=2)).isoformat()


@pytest.fixture
def json_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """JSON logs as in production, still seen by caplog; the previous setup comes back after."""
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    configure_logging("json", "debug")
    root.addHandler(caplog.handler)  # configure_logging replaces the root handlers
    caplog.set_level(logging.DEBUG)
    yield caplog
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.configure(**config)


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(make_settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://intake", headers=auth_headers("intake")
        ) as c:
            yield c


async def every_message(nats_url: str) -> list[bytes]:
    """The raw bytes of every message on every stream: subject, headers and data."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        out: list[bytes] = []
        for info in await js.streams_info():
            if not info.state.messages:
                continue
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(info.config.name, seq)
                out.append(msg.subject.encode() + repr(msg.headers).encode() + (msg.data or b""))
        return out
    finally:
        await nc.close()


async def schedule_and_complete(client: httpx.AsyncClient) -> str:
    contact = {"name": NAME, "phone": PHONE, "email": EMAIL}
    scheduled = await client.post("/interviews", json={"format": "phone", "scheduled_for": SOON, "contact": contact})
    assert scheduled.status_code == 201, scheduled.text
    assert not any(s in scheduled.text for s in SECRETS)
    iv = scheduled.json()["interview_id"]
    done = await client.post(
        f"/interviews/{iv}/complete", json={"participants": [{"profile": {"region": "twin_cities_east_metro"}}]}
    )
    assert done.status_code == 200, done.text
    return iv


async def contact_rows(database_url: str, interview_id: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM intake.contacts WHERE interview_id = $1", interview_id)
    finally:
        await conn.close()


async def test_contact_details_stay_out_of_the_log_and_logs(
    client: httpx.AsyncClient,
    nats_url: str,
    database_url: str,
    json_logging: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Pass 1: what our code hands to structlog, before any redaction could hide a mistake.
    with capture_logs() as entries:
        first = await schedule_and_complete(client)
    assert any(e["event"] == "event_recorded" for e in entries)
    assert not any(s in repr(entries) for s in SECRETS)

    # Pass 2: what is rendered as JSON lines and what the standard library saw.
    second = await schedule_and_complete(client)
    rendered = capsys.readouterr()
    seen = json_logging.text + rendered.out + rendered.err
    assert "event_recorded" in seen
    assert not any(s in seen for s in SECRETS)
    for record in json_logging.records:
        assert not any(s in repr(record.__dict__) for s in SECRETS)

    messages = await every_message(nats_url)
    assert len(messages) == 4
    for raw in messages:
        for secret in SECRETS:
            assert secret.encode() not in raw

    # The interview is over: its contact details are no longer needed, so they are gone.
    assert await contact_rows(database_url, first) == 0
    assert await contact_rows(database_url, second) == 0


async def test_contact_details_are_kept_only_while_needed(client: httpx.AsyncClient, database_url: str) -> None:
    contact = {"name": NAME, "phone": PHONE}
    iv = (
        await client.post("/interviews", json={"format": "in_person", "scheduled_for": SOON, "contact": contact})
    ).json()["interview_id"]
    assert await contact_rows(database_url, iv) == 1
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT name, phone, email FROM intake.contacts WHERE interview_id = $1", iv)
    finally:
        await conn.close()
    assert (row["name"], row["phone"], row["email"]) == (NAME, PHONE, None)
    assert (await client.post(f"/interviews/{iv}/cancel", json={"reason": "participant_request"})).status_code == 200
    assert await contact_rows(database_url, iv) == 0


async def test_a_refused_write_leaves_no_contact_behind(client: httpx.AsyncClient, database_url: str) -> None:
    body = {"format": "in_person", "scheduled_for": SOON, "contact": {"email": EMAIL}}
    # Not in the future beyond a minute: refused before anything is stored.
    late = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    refused = await client.post("/interviews", json={**body, "occurred_at": late})
    assert refused.status_code == 422
    assert EMAIL not in refused.text
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM intake.contacts") == 0
    finally:
        await conn.close()
