"""A write's answer is the truth: with NATS stopped or PostgreSQL unreachable, intake and survey
answer 503 with Retry-After and the request's Idempotency-Key, and clients that retry with that
key until they succeed end with every write stored once: no double counts, no losses."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from fastapi import FastAPI

from services.cli.embedded import EmbeddedNats, free_port
from services.intake.app import build_app as build_intake
from services.survey.app import build_app as build_survey
from shared.settings import Settings
from shared.upcasting import decode_event

pytestmark = [pytest.mark.integration, pytest.mark.fault]

WRITES = {
    "survey": (build_survey, "/responses", {"profile": {}}, "response_id"),
    "intake": (build_intake, "/gatherings", {"kind": "art_of_hosting", "attendee_count": 3}, "gathering_id"),
}


@asynccontextmanager
async def running(app: FastAPI, name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}") as client:
            yield client


@pytest.fixture
async def own_nats(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    """A nats-server of this test's own, which the test stops and starts again (same port, same data)."""
    server = EmbeddedNats(tmp_path / "own-nats")
    server.start()
    yield server
    server.stop()


async def stored_ids(url: str, field: str) -> list[str]:
    """The aggregate id (``field``) of every event on the log, in order, repeats included."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("ENGAGEMENT")
        ids = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            event = decode_event((await js.get_msg("ENGAGEMENT", seq)).data or b"")
            ids.append(getattr(event.payload, field))
        return ids
    finally:
        await nc.close()


@pytest.mark.parametrize("name", ["survey", "intake"])
async def test_clients_that_follow_the_advice_through_an_outage_are_stored_once(
    name: str,
    own_nats: EmbeddedNats,
    make_settings: Callable[..., Settings],
    auth_headers: Callable[[str], dict[str, str]],
) -> None:
    build, route, body, field = WRITES[name]
    settings = make_settings(nats_url=own_nats.url, publish_timeout_seconds=0.5)
    refusals: list[httpx.Response] = []

    async def client_following_the_advice(c: httpx.AsyncClient) -> str:
        """Sends without a key; on a 503, waits Retry-After and retries with the answer's key, until stored."""
        headers = auth_headers(name)
        for _ in range(200):
            answer = await c.post(route, json=body, headers=headers)
            if answer.status_code in (201, 202):
                return str(answer.json()[field])
            assert answer.status_code == 503, answer.text
            refusals.append(answer)
            key = answer.headers.get("Idempotency-Key")
            headers = {**auth_headers(name), **({"Idempotency-Key": key} if key else {})}
            await asyncio.sleep(min(float(answer.headers["Retry-After"]), 0.2))
        raise AssertionError("never stored")

    async with running(build(settings), name) as c:
        acknowledged = [await client_following_the_advice(c)]  # NATS up
        own_nats.stop()
        clients = [asyncio.create_task(client_following_the_advice(c)) for _ in range(4)]
        await asyncio.sleep(2.0)  # every client has been refused at least once by now
        assert not any(t.done() for t in clients)
        own_nats.start()
        acknowledged += await asyncio.wait_for(asyncio.gather(*clients), timeout=30)
        await asyncio.sleep(1.0)  # anything a reconnect could still flush has had time to land

    stored = await stored_ids(own_nats.url, field)
    assert len(set(acknowledged)) == len(acknowledged) == 5
    assert sorted(stored) == sorted(acknowledged)  # zero double counts, zero losses
    assert len(refusals) >= 4
    for refusal in refusals:
        assert refusal.headers["Retry-After"] and refusal.headers["Idempotency-Key"].startswith("srv-")
        assert "Idempotency-Key" in refusal.json()["reason"]


async def test_intake_answers_503_with_retry_after_when_postgresql_is_unreachable(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> None:
    app = build_intake(make_settings())
    async with running(app, "intake") as intake:
        ok = {**auth_headers("intake"), "Idempotency-Key": "before-the-outage"}
        scheduled = await intake.post(
            "/interviews", json={"format": "phone", "scheduled_for": "2030-01-01T10:00Z"}, headers=ok
        )
        assert scheduled.status_code == 201, scheduled.text
        iv, ref = scheduled.json()["interview_id"], scheduled.json()["participant_ref"]
        # intake's PostgreSQL goes away: every new connection is refused (a port nobody listens on).
        dead = await asyncpg.create_pool(f"postgresql://engage@127.0.0.1:{free_port()}/engage", min_size=0)
        app.state.intake = dataclasses.replace(app.state.intake, pool=dead)
        writes: list[tuple[str, dict[str, Any] | None]] = [
            ("/interviews", {"format": "phone", "scheduled_for": "2030-01-01T10:00Z"}),
            (f"/interviews/{iv}/reschedule", {"scheduled_for": "2030-01-02T10:00Z"}),
            (f"/interviews/{iv}/cancel", {"reason": "scheduling"}),
            ("/gatherings", {"kind": "art_of_hosting", "attendee_count": 3}),
            ("/advisory/members", {"profile": {}}),
            ("/advisory/feedback", {"topic": "outreach_gaps", "member_refs": [ref]}),
            (f"/participants/{ref}/withdraw", {}),
        ]
        for path, body in writes:
            answer = await intake.post(path, json=body, headers=auth_headers("intake"))
            assert answer.status_code == 503, (path, answer.text)
            assert answer.headers["Retry-After"] == "1"
            assert answer.headers["Idempotency-Key"].startswith("srv-")
            assert answer.json()["error"] == "unavailable" and "Idempotency-Key" in answer.json()["reason"]
        erased = await intake.delete(f"/interviews/{iv}/contact", headers=auth_headers("intake"))
        assert erased.status_code == 503 and erased.headers["Retry-After"] == "1"
        await dead.close()
