"""Idempotency keys as payment APIs taught clients to expect them: the same key replays the
original answer whatever happened since, the same key with another body is refused naming the
key, keys are per token, and after the dedupe window a retry stores no second event."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import nats
import pytest
from fastapi import FastAPI

from services.intake.app import build_app as build_intake
from services.survey.app import build_app as build_survey
from shared.settings import Settings, TokenSpec
from tests.conftest import TOKENS

pytestmark = [pytest.mark.integration, pytest.mark.fault]
SOON = "2030-01-01T10:00:00Z"
SECOND_INTAKE = TokenSpec(token="test-intake-two-" + "j" * 20, scopes=["intake:write"])


@asynccontextmanager
async def running(app: FastAPI, name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}") as client:
            yield client


async def event_ids(url: str) -> list[tuple[str, str]]:
    """(type, Nats-Msg-Id) of every message on the log, repeats included."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("ENGAGEMENT")
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            headers = (await js.get_msg("ENGAGEMENT", seq)).headers or {}
            out.append((headers["Engage-Type"], headers["Nats-Msg-Id"]))
        return out
    finally:
        await nc.close()


async def test_a_reschedule_retried_after_completion_gets_its_original_answer(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    async with running(build_intake(make_settings()), "intake") as intake:
        ok = auth_headers("intake")
        iv = (await intake.post("/interviews", json={"format": "phone", "scheduled_for": SOON}, headers=ok)).json()
        moved = {"scheduled_for": "2030-01-02T10:00:00Z"}
        keyed = {**ok, "Idempotency-Key": "move-1"}
        first = await intake.post(f"/interviews/{iv['interview_id']}/reschedule", json=moved, headers=keyed)
        assert first.status_code == 200, first.text
        done = await intake.post(
            f"/interviews/{iv['interview_id']}/complete", json={"participants": [{"profile": {}}]}, headers=ok
        )
        assert done.status_code == 200, done.text
        again = await intake.post(f"/interviews/{iv['interview_id']}/reschedule", json=moved, headers=keyed)
    assert (again.status_code, again.json()) == (200, first.json())
    assert again.headers["Idempotency-Key"] == "move-1" and again.headers["Idempotent-Replayed"] == "true"
    assert [t for t, _ in await event_ids(nats_url)] == [
        "InterviewScheduled",
        "InterviewRescheduled",
        "InterviewCompleted",
    ]


@pytest.mark.parametrize(
    ("name", "route", "body", "other"),
    [
        (
            "intake",
            "/gatherings",
            {"kind": "art_of_hosting", "attendee_count": 12},
            {"kind": "art_of_hosting", "attendee_count": 13},
        ),
        (
            "survey",
            "/responses",
            {"profile": {"region": "central"}},
            {"profile": {"region": "central"}, "process_id": "other-2019"},
        ),
    ],
)
async def test_the_same_key_with_a_different_body_is_refused_naming_the_key(
    name: str,
    route: str,
    body: dict[str, object],
    other: dict[str, object],
    make_settings: Callable[..., Settings],
    auth_headers: Callable[[str], dict[str, str]],
    nats_url: str,
) -> None:
    build = {"intake": build_intake, "survey": build_survey}[name]
    async with running(build(make_settings()), name) as client:
        keyed = {**auth_headers(name), "Idempotency-Key": "same-key"}
        first = await client.post(route, json=body, headers=keyed)
        refused = await client.post(route, json=other, headers=keyed)
        again = await client.post(route, json=body, headers=keyed)
    assert first.status_code == 201, first.text
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"] == "conflict" and refused.json()["reason"].startswith("Idempotency-Key:")
    assert again.status_code == 201 and again.json()["sequence"] == first.json()["sequence"]
    assert len(await event_ids(nats_url)) == 1


async def test_the_same_key_from_two_tokens_is_two_writes(
    make_settings: Callable[..., Settings], nats_url: str
) -> None:
    settings = make_settings(tokens={**TOKENS, "intake-two": SECOND_INTAKE})
    gathering = {"kind": "art_of_hosting", "attendee_count": 5}
    async with running(build_intake(settings), "intake") as intake:
        answers = [
            await intake.post(
                "/gatherings",
                json=gathering,
                headers={"Authorization": f"Bearer {token.token}", "Idempotency-Key": "shared-key"},
            )
            for token in (TOKENS["intake"], SECOND_INTAKE)
        ]
    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json()["gathering_id"] != answers[1].json()["gathering_id"]
    assert len({msg_id for _, msg_id in await event_ids(nats_url)}) == 2


async def test_after_the_dedupe_window_a_retry_stores_no_second_event(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]], nats_url: str
) -> None:
    async with running(build_intake(make_settings(dedupe_window_seconds=1)), "intake") as intake:
        ok = auth_headers("intake")
        iv = (await intake.post("/interviews", json={"format": "phone", "scheduled_for": SOON}, headers=ok)).json()
        withdraw = f"/participants/{iv['participant_ref']}/withdraw"
        reschedule = f"/interviews/{iv['interview_id']}/reschedule"
        moved = {"scheduled_for": "2030-01-02T10:00:00Z"}
        first = [
            await intake.post(withdraw, json={}, headers={**ok, "Idempotency-Key": "withdraw-1"}),
            await intake.post(reschedule, json=moved, headers={**ok, "Idempotency-Key": "move-1"}),
        ]
        await asyncio.sleep(2.5)  # past the stream's dedupe window and intake's record of the keys
        late = [
            await intake.post(withdraw, json={}, headers={**ok, "Idempotency-Key": "withdraw-1"}),
            await intake.post(reschedule, json=moved, headers={**ok, "Idempotency-Key": "move-1"}),
        ]
    assert [a.status_code for a in first] == [a.status_code for a in late] == [202, 200]
    assert [a.json()["event_id"] for a in late] == [a.json()["event_id"] for a in first]
    stored = await event_ids(nats_url)
    assert max(Counter(msg_id for _, msg_id in stored).values()) == 1, stored
    assert [t for t, _ in stored] == ["InterviewScheduled", "ParticipantWithdrawn", "InterviewRescheduled"]
