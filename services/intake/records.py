"""Routes for what is recorded in one go: gatherings, the advisory group, withdrawals."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from services.intake import contacts
from services.intake.context import (
    IntakeDep,
    IntakeRoute,
    IntakeState,
    KeyDep,
    envelope,
    intake_writer,
    new_ref,
    written,
)
from services.intake.replies import once
from services.intake.schemas import (
    AddAdvisoryMember,
    AdvisoryMemberAnswer,
    Command,
    FeedbackAnswer,
    GatheringAnswer,
    LogAdvisoryFeedback,
    RecordGathering,
    WithdrawalAnswer,
    WithdrawParticipant,
)
from shared.bus import Stored
from shared.events import AdvisoryFeedbackLogged, AdvisoryMemberJoined, GatheringHeld, ParticipantWithdrawn, Payload
from shared.http import error_responses, invalid
from shared.idempotency import Key, derived_id, fingerprint

router = APIRouter(dependencies=[Depends(intake_writer)], route_class=IntakeRoute)
CREATE_ERRORS = error_responses(401, 403, 409, 422, 429, 503)
Ref = Annotated[str, Path(pattern=r"^p-[0-9a-z]{10,32}$", description="The participant's opaque reference.")]


async def _record(
    intake: IntakeState,
    body: Command,
    key: Key,
    payload: Payload,
    *,
    action: str,
    aggregate_id: str,
    exists: str,
    **ids: str,
) -> Stored:
    """Record a new aggregate's one event (``exists``: the 409's reason if it is already there), and log it."""
    event = envelope(
        payload,
        process_id=body.process_id or intake.settings.process_id,
        key=key,
        action=action,
        aggregate_id=aggregate_id,
        occurred_at=body.occurred_at,
    )
    stored = await intake.log.create(event, exists=exists)
    written(event, stored, **ids)
    return stored


@router.post(
    "/gatherings", status_code=201, response_model=GatheringAnswer, responses=CREATE_ERRORS, tags=["gatherings"]
)
async def record_gathering(body: RecordGathering, intake: IntakeDep, key: KeyDep) -> Any:
    """Record an Art-of-Hosting event or small-group meeting that was held, with the
    self-identified profiles of the attendees who chose to give one."""
    if len(body.profiles) > body.attendee_count:
        raise invalid("profiles", "more profiles than attendees", "body")
    gathering_id = derived_id(key, "gt", "intake", "gathering")
    payload = GatheringHeld(
        gathering_id=gathering_id,
        kind=body.kind,
        region=body.region,
        attendee_count=body.attendee_count,
        profiles=body.profiles,
    )

    async def work(_conn: Any) -> GatheringAnswer:
        stored = await _record(
            intake,
            body,
            key,
            payload,
            action="gathering",
            aggregate_id=gathering_id,
            exists=f"gathering {gathering_id} is already recorded",
            gathering_id=gathering_id,
        )
        return GatheringAnswer(gathering_id=gathering_id, event_id=stored.event_id, sequence=stored.sequence)

    return await once(intake, key, fingerprint("POST /gatherings", body), 201, work)


@router.post(
    "/advisory/members",
    status_code=201,
    response_model=AdvisoryMemberAnswer,
    responses=CREATE_ERRORS,
    tags=["advisory"],
)
async def add_advisory_member(body: AddAdvisoryMember, intake: IntakeDep, key: KeyDep) -> Any:
    """Record that someone joined the advisory group. Someone intake already knows keeps
    their reference; anyone else is issued a new one."""
    ref = body.participant_ref or new_ref(key, "advisory-member")
    payload = AdvisoryMemberJoined(participant_ref=ref, profile=body.profile)

    async def work(_conn: Any) -> AdvisoryMemberAnswer:
        stored = await _record(
            intake,
            body,
            key,
            payload,
            action="advisory-member",
            aggregate_id=ref,
            exists=f"participant {ref} is already an advisory member",
        )
        return AdvisoryMemberAnswer(participant_ref=ref, event_id=stored.event_id, sequence=stored.sequence)

    return await once(intake, key, fingerprint("POST /advisory/members", body), 201, work)


@router.post(
    "/advisory/feedback", status_code=201, response_model=FeedbackAnswer, responses=CREATE_ERRORS, tags=["advisory"]
)
async def log_advisory_feedback(body: LogAdvisoryFeedback, intake: IntakeDep, key: KeyDep) -> Any:
    """Record that the advisory group gave feedback on a topic (a category, not its content)."""
    feedback_id = derived_id(key, "fb", "intake", "feedback")
    payload = AdvisoryFeedbackLogged(feedback_id=feedback_id, topic=body.topic, member_refs=body.member_refs)

    async def work(_conn: Any) -> FeedbackAnswer:
        stored = await _record(
            intake,
            body,
            key,
            payload,
            action="feedback",
            aggregate_id=feedback_id,
            exists=f"feedback {feedback_id} is already logged",
            feedback_id=feedback_id,
        )
        return FeedbackAnswer(feedback_id=feedback_id, event_id=stored.event_id, sequence=stored.sequence)

    return await once(intake, key, fingerprint("POST /advisory/feedback", body), 201, work)


@router.post(
    "/participants/{participant_ref}/withdraw",
    status_code=202,
    response_model=WithdrawalAnswer,
    responses=error_responses(401, 403, 409, 422, 429, 503),
    tags=["participants"],
)
async def withdraw_participant(
    participant_ref: Ref, intake: IntakeDep, key: KeyDep, body: WithdrawParticipant | None = None
) -> Any:
    """Withdraw a participant at their request: they leave every count, live and on replay
    (analytics applies it, hence 202), and any contact details intake kept for them are
    deleted now. Withdrawing twice is harmless."""
    body = body or WithdrawParticipant()
    # Their contact details go first: the person's wish is honoured even if the log is down
    # (the request then fails with 503 and is retried; deleting again is harmless).
    await contacts.forget_participant_contacts(intake.pool, participant_ref)
    payload = ParticipantWithdrawn(participant_ref=participant_ref)
    event = envelope(
        payload,
        process_id=body.process_id or intake.settings.process_id,
        key=key,
        action="withdraw",
        aggregate_id=participant_ref,
        occurred_at=body.occurred_at,
    )

    async def work(_conn: Any) -> WithdrawalAnswer:
        # A withdrawal is a fact that may be stated twice, so it is not conditional on the
        # subject's sequence; a retried request is stored once (its event id is looked for first).
        stored = await intake.log.publish(event)
        written(event, stored)
        return WithdrawalAnswer(participant_ref=participant_ref, event_id=stored.event_id, sequence=stored.sequence)

    request = fingerprint("POST /participants/{participant_ref}/withdraw", body, participant_ref=participant_ref)
    return await once(intake, key, request, 202, work)
