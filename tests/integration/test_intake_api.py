"""The intake service against a real nats-server and PostgreSQL: what it stores on the
log, what it refuses, and how retries and races come out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import nats
import pytest

from services.intake.app import build_app
from shared.errors import ConfigError
from shared.events import Envelope
from shared.settings import Settings
from shared.upcasting import decode_event

pytestmark = pytest.mark.integration

SOON = (datetime.now(UTC) + timedelta(days=3)).isoformat()


@dataclass
class Intake:
    client: httpx.AsyncClient
    headers: dict[str, str]
    settings: Settings

    async def post(self, path: str, body: dict[str, Any] | None = None, key: str | None = None) -> httpx.Response:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return await self.client.post(path, json=body, headers=headers)

    async def schedule(self, **fields: Any) -> dict[str, Any]:
        response = await self.post("/interviews", {"format": "in_person", "scheduled_for": SOON, **fields})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
async def intake(
    make_settings: Callable[..., Settings], auth_headers: Callable[[str], dict[str, str]]
) -> AsyncIterator[Intake]:
    settings = make_settings()
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            yield Intake(client, auth_headers("intake"), settings)


async def stored(nats_url: str) -> list[tuple[str, dict[str, str], Envelope]]:
    """Every message on the ENGAGEMENT stream: subject, headers, decoded event."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info("ENGAGEMENT")
        out = []
        if info.state.messages:
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg("ENGAGEMENT", seq)
                out.append((msg.subject, dict(msg.headers or {}), decode_event(msg.data or b"")))
        return out
    finally:
        await nc.close()


def fields_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [p["field"] for p in response.json()["problems"]]


async def test_schedule_then_complete_publishes_the_events(intake: Intake, nats_url: str) -> None:
    scheduled = await intake.schedule(region="northeast")
    iv, ref = scheduled["interview_id"], scheduled["participant_ref"]
    assert iv.startswith("iv-") and ref.startswith("p-") and scheduled["status"] == "scheduled"

    done = await intake.post(
        f"/interviews/{iv}/complete",
        {"participants": [{"profile": {"region": "northeast", "lived_experience": "yes"}}]},
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed"
    assert done.json()["participant_refs"] == [ref]  # defaults to the person it was scheduled with

    events = await stored(nats_url)
    assert [e.type for _, _, e in events] == ["InterviewScheduled", "InterviewCompleted"]
    assert {s for s, _, _ in events} == {f"engagement.shfa-2018.interview.{iv}"}
    (_, h1, first), (_, h2, second) = events
    assert h1["Nats-Msg-Id"] == str(first.event_id) == scheduled["event_id"]
    assert h2["Nats-Msg-Id"] == str(second.event_id) == done.json()["event_id"]
    assert first.source == second.source == "intake"
    assert first.payload.region == "northeast"
    assert second.payload.participants[0].participant_ref == ref
    assert second.payload.participants[0].profile.lived_experience == "yes"
    assert done.json()["sequence"] == 2


async def test_reschedule_then_no_show(intake: Intake, nats_url: str) -> None:
    iv = (await intake.schedule(format="phone"))["interview_id"]
    later = (datetime.now(UTC) + timedelta(days=9)).isoformat()
    assert (await intake.post(f"/interviews/{iv}/reschedule", {"scheduled_for": later})).status_code == 200
    gone = await intake.post(f"/interviews/{iv}/no-show")
    assert gone.status_code == 200 and gone.json()["status"] == "no_show"
    again = await intake.post(f"/interviews/{iv}/reschedule", {"scheduled_for": later})
    assert again.status_code == 409
    assert again.json()["reason"] == f"interview {iv} was a no-show; a no-show interview cannot be rescheduled"
    assert [e.type for _, _, e in await stored(nats_url)] == [
        "InterviewScheduled",
        "InterviewRescheduled",
        "InterviewNoShow",
    ]


async def test_completing_a_cancelled_interview_is_a_conflict(intake: Intake, nats_url: str) -> None:
    iv = (await intake.schedule())["interview_id"]
    cancelled = await intake.post(f"/interviews/{iv}/cancel", {"reason": "safety"})
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    refused = await intake.post(f"/interviews/{iv}/complete", {"participants": [{}]})
    assert refused.status_code == 409
    assert refused.json() == {
        "error": "conflict",
        "reason": f"interview {iv} was cancelled; a cancelled interview cannot be completed",
    }
    assert len(await stored(nats_url)) == 2


async def test_unknown_interview_is_not_found(intake: Intake) -> None:
    response = await intake.post("/interviews/iv-00000000000000000000/cancel", {"reason": "other"})
    assert response.status_code == 404
    assert response.json()["reason"] == "interview iv-00000000000000000000 was not found"


async def test_two_concurrent_completes_only_one_wins(intake: Intake, nats_url: str) -> None:
    iv = (await intake.schedule(format="small_group", expected_participants=3))["interview_id"]
    body = {"participants": [{"profile": {"region": "central"}}, {}]}
    first, second = await asyncio.gather(
        intake.post(f"/interviews/{iv}/complete", body), intake.post(f"/interviews/{iv}/complete", body)
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    assert [e.type for _, _, e in await stored(nats_url)] == ["InterviewScheduled", "InterviewCompleted"]


async def test_a_retry_with_the_same_key_is_a_no_op(intake: Intake, nats_url: str) -> None:
    body = {"format": "in_person", "scheduled_for": SOON, "contact": {"phone": "555 0100 200"}}
    one = await intake.post("/interviews", body, key="schedule-42")
    two = await intake.post("/interviews", body, key="schedule-42")
    assert one.status_code == two.status_code == 201
    assert one.json() == two.json()
    count = len(await stored(nats_url))
    assert count == 1

    iv = one.json()["interview_id"]
    complete = {"participants": [{"profile": {"region": "southwest"}}]}
    done = [await intake.post(f"/interviews/{iv}/complete", complete, key="done-42") for _ in range(3)]
    assert {r.status_code for r in done} == {200}
    assert done[0].json() == done[1].json() == done[2].json()
    # A retry of the scheduling after the interview ended answers the same and stays a no-op.
    late = await intake.post("/interviews", body, key="schedule-42")
    assert late.status_code == 201 and late.json() == one.json()

    gatherings = [
        await intake.post("/gatherings", {"kind": "art_of_hosting", "attendee_count": 12}, key="g-1") for _ in range(2)
    ]
    assert gatherings[0].json() == gatherings[1].json()
    assert [e.type for _, _, e in await stored(nats_url)] == [
        "InterviewScheduled",
        "InterviewCompleted",
        "GatheringHeld",
    ]


async def test_concurrent_retries_of_one_request_store_it_once(intake: Intake, nats_url: str) -> None:
    body = {"format": "phone", "scheduled_for": SOON}
    answers = await asyncio.gather(*(intake.post("/interviews", body, key="same-time") for _ in range(4)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["interview_id"] for r in answers}) == 1
    assert len(await stored(nats_url)) == 1


async def test_bad_input_names_the_field_and_never_echoes_it(intake: Intake) -> None:
    bad_region = await intake.post("/advisory/members", {"profile": {"region": "atlantis-xyz"}})
    assert fields_of(bad_region) == ["profile.region"]
    assert "'west_central'" in bad_region.json()["problems"][0]["reason"]
    assert "atlantis-xyz" not in bad_region.text

    unknown = await intake.post("/interviews", {"format": "phone", "scheduled_for": SOON, "notes": "call Jane"})
    assert fields_of(unknown) == ["notes"]
    assert "call Jane" not in unknown.text and "Traceback" not in unknown.text

    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert fields_of(
        await intake.post("/gatherings", {"kind": "art_of_hosting", "attendee_count": 3, "occurred_at": future})
    ) == ["occurred_at"]
    assert fields_of(await intake.post("/interviews", {"format": "phone", "scheduled_for": "2026-05-01T10:00"})) == [
        "scheduled_for"
    ]
    iv = (await intake.schedule())["interview_id"]
    two = await intake.post(f"/interviews/{iv}/complete", {"participants": [{}, {}]})
    assert fields_of(two) == ["participants"]
    assert fields_of(await intake.post("/participants/Jane%20Doe/withdraw")) == ["participant_ref"]
    assert fields_of(
        await intake.post("/gatherings", {"kind": "art_of_hosting", "attendee_count": 1, "profiles": [{}, {}]})
    ) == ["profiles"]
    bad_key = await intake.client.post(
        "/gatherings",
        json={"kind": "art_of_hosting", "attendee_count": 1},
        headers={**intake.headers, "Idempotency-Key": "x" * 201},
    )
    assert fields_of(bad_key) == ["Idempotency-Key"]


async def test_tokens_and_scopes(intake: Intake, auth_headers: Callable[[str], dict[str, str]]) -> None:
    body = {"format": "phone", "scheduled_for": SOON}
    assert (await intake.client.post("/interviews", json=body)).status_code == 401
    assert (await intake.client.post("/interviews", json=body, headers=auth_headers("survey"))).status_code == 403
    wrong = {"Authorization": "Bearer not-a-token-at-all-0000"}
    assert (await intake.client.post("/gatherings", json={}, headers=wrong)).status_code == 401
    health = await intake.client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "checks": {"nats": True, "database": True}}


async def test_gathering_advisory_and_withdrawal(intake: Intake, nats_url: str, database_url: str) -> None:
    held = await intake.post(
        "/gatherings",
        {
            "kind": "small_group_meeting",
            "region": "southeast",
            "attendee_count": 8,
            "profiles": [{"age_band": "25-34"}],
            "occurred_at": "2018-03-01T18:00:00-06:00",
        },
    )
    assert held.status_code == 201, held.text
    member = await intake.post("/advisory/members", {"profile": {"lived_experience": "declined"}})
    assert member.status_code == 201
    ref = member.json()["participant_ref"]
    again = await intake.post("/advisory/members", {"participant_ref": ref})
    assert again.status_code == 409
    feedback = await intake.post("/advisory/feedback", {"topic": "protocols", "member_refs": [ref]})
    assert feedback.status_code == 201

    scheduled = await intake.schedule(participant_ref=ref, contact={"name": "A. Member"})
    withdrawn = await intake.post(f"/participants/{ref}/withdraw")
    assert withdrawn.status_code == 202 and withdrawn.json()["status"] == "withdrawn"
    conn = await asyncpg.connect(database_url)
    try:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM intake.contacts WHERE interview_id = $1", scheduled["interview_id"]
            )
            == 0
        )
    finally:
        await conn.close()

    events = await stored(nats_url)
    assert [e.type for _, _, e in events] == [
        "GatheringHeld",
        "AdvisoryMemberJoined",
        "AdvisoryFeedbackLogged",
        "InterviewScheduled",
        "ParticipantWithdrawn",
    ]
    assert events[0][2].occurred_at == datetime(2018, 3, 2, 0, tzinfo=UTC)
    assert events[-1][0] == f"engagement.shfa-2018.participant.{ref}"


async def test_contact_details_can_be_erased_on_request(intake: Intake, database_url: str) -> None:
    iv = (await intake.schedule(contact={"email": "someone@example.net"}))["interview_id"]
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM intake.contacts WHERE interview_id = $1", iv) == 1
        erased = await intake.client.delete(f"/interviews/{iv}/contact", headers=intake.headers)
        assert erased.status_code == 204
        assert await conn.fetchval("SELECT count(*) FROM intake.contacts WHERE interview_id = $1", iv) == 0
    finally:
        await conn.close()
    assert (await intake.client.delete(f"/interviews/{iv}/contact", headers=intake.headers)).status_code == 204


def test_missing_server_urls_are_a_config_error(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="ENGAGE_NATS_URL"):
        build_app(make_settings(nats_url=None))
    with pytest.raises(ConfigError, match="ENGAGE_DATABASE_URL"):
        build_app(make_settings(database_url=None))
