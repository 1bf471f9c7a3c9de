"""Interview routes: schedule, reschedule, cancel, no-show, complete, erase contact details.

Every write answers 2xx only after JetStream stored the event. Each change to an
interview is conditional on the interview's last event (its subject sequence), so two
coordinators acting at once cannot both win: the second gets 409 and reloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from services.intake import contacts
from services.intake.context import IntakeDep, IntakeRoute, KeyDep, envelope, intake_writer, log, new_ref, written
from services.intake.interviews import EVENT_TYPE, STATUS_AFTER, Action, is_final, refusal
from services.intake.records import router as records_router
from services.intake.replies import once
from services.intake.schemas import (
    CancelInterview,
    CompletedParticipant,
    CompleteInterview,
    InterviewAnswer,
    MarkNoShow,
    RescheduleInterview,
    ScheduleInterview,
)
from shared.bus import Stored
from shared.errors import ConflictError
from shared.events import (
    Attendee,
    InterviewCancelled,
    InterviewCompleted,
    InterviewFormat,
    InterviewNoShow,
    InterviewRescheduled,
    InterviewScheduled,
    subject_for,
)
from shared.http import error_responses, invalid
from shared.idempotency import Key, derived_id, fingerprint

if TYPE_CHECKING:
    from services.intake.contacts import Connection

router = APIRouter(tags=["interviews"], dependencies=[Depends(intake_writer)], route_class=IntakeRoute)
WRITE_ERRORS = error_responses(401, 403, 409, 422, 429, 503)
CHANGE_ERRORS = error_responses(401, 403, 404, 409, 422, 429, 503)  # a change names an interview that may not exist
InterviewId = Annotated[
    str, Path(pattern=r"^[0-9a-z][0-9a-z-]{5,63}$", description="The interview's id, e.g. `iv-3f9c…`.")
]


@router.post("/interviews", status_code=201, response_model=InterviewAnswer, responses=WRITE_ERRORS)
async def schedule_interview(body: ScheduleInterview, intake: IntakeDep, key: KeyDep) -> Any:
    """Schedule an interview. Issues the interview id and, unless the participant is already
    known, a new opaque participant reference. Contact details are kept only in intake's own
    table for scheduling, and are deleted when the interview ends."""
    request = fingerprint("POST /interviews", body)
    return await once(intake, key, request, 201, lambda conn: _schedule(conn, body, intake, key))


async def _schedule(conn: Connection, body: ScheduleInterview, intake: IntakeDep, key: Key) -> InterviewAnswer:
    interview_id = derived_id(key, "iv", "intake", "schedule")
    participant_ref = body.participant_ref or new_ref(key, "schedule", interview_id)
    process_id = body.process_id or intake.settings.process_id
    payload = InterviewScheduled(
        interview_id=interview_id,
        format=body.format,
        scheduled_for=body.scheduled_for,
        region=body.region,
        expected_participants=body.expected_participants,
    )
    event = envelope(
        payload,
        process_id=process_id,
        key=key,
        action="schedule",
        aggregate_id=interview_id,
        occurred_at=body.occurred_at,
    )
    contact = contacts.Contact(**body.contact.model_dump()) if body.contact else contacts.Contact()
    # One transaction around the publish (``once``'s): if the log refuses, no contact row is left behind.
    await contacts.remember_interview(
        conn,
        contacts.InterviewRow(
            interview_id=interview_id,
            process_id=process_id,
            format=body.format.value,
            participant_ref=participant_ref,
        ),
    )
    stored = await intake.log.create(event, exists=f"interview {interview_id} already exists")
    # A retry after the interview ended must not bring deleted contact details back.
    if not stored.replayed or not is_final((await intake.log.last(event.subject, ""))[0].type):
        await contacts.save_contact(conn, interview_id, participant_ref, contact)
    written(event, stored, interview_id=interview_id)
    return InterviewAnswer(
        interview_id=interview_id,
        participant_ref=participant_ref,
        status="scheduled",
        event_id=stored.event_id,
        sequence=stored.sequence,
    )


async def _act(
    conn: Connection, intake: IntakeDep, key: Key, interview_id: str, action: Action, body: Any, make_payload: Any
) -> tuple[Stored, Any]:
    """Apply ``action`` to an open interview: read its last event, check, publish after it."""
    row = await contacts.find_interview(conn, interview_id)
    process_id = body.process_id or (row.process_id if row else intake.settings.process_id)
    subject = subject_for(process_id, "interview", interview_id)
    last, seq = await intake.log.last(subject, f"interview {interview_id} was not found")
    payload = await make_payload(row, subject)
    event = envelope(
        payload,
        process_id=process_id,
        key=key,
        action=action.value,
        aggregate_id=interview_id,
        occurred_at=body.occurred_at,
    )
    mine = await intake.log.find(event)
    if mine is not None:
        stored = Stored(event.event_id, mine[1], True)  # this very request already succeeded
    else:
        reason = refusal(interview_id, last.type, action)
        if reason is not None:
            raise ConflictError(reason)
        stored = await intake.log.append(event, after=seq)
    if is_final(EVENT_TYPE[action]):
        # The interview is over: contact details for scheduling are no longer needed.
        await contacts.forget_interview_contact(conn, interview_id)
    written(event, stored, interview_id=interview_id)
    return stored, payload


async def _change(intake: IntakeDep, key: Key, interview_id: str, action: Action, body: Any, payload: Any) -> Any:
    """Apply an ``action`` whose event needs nothing from the interview's record, and answer (once per key)."""

    async def made(_row: Any, _subject: str) -> Any:
        return payload

    async def work(conn: Connection) -> InterviewAnswer:
        stored, _ = await _act(conn, intake, key, interview_id, action, body, made)
        return _answer(interview_id, action, stored)

    request = fingerprint(f"POST /interviews/{{interview_id}}/{action.value}", body, interview_id=interview_id)
    return await once(intake, key, request, 200, work)


@router.post("/interviews/{interview_id}/reschedule", response_model=InterviewAnswer, responses=CHANGE_ERRORS)
async def reschedule_interview(
    interview_id: InterviewId, body: RescheduleInterview, intake: IntakeDep, key: KeyDep
) -> Any:
    """Move an open (scheduled or rescheduled) interview to a new time."""
    return await _change(
        intake,
        key,
        interview_id,
        Action.reschedule,
        body,
        InterviewRescheduled(interview_id=interview_id, scheduled_for=body.scheduled_for),
    )


@router.post("/interviews/{interview_id}/cancel", response_model=InterviewAnswer, responses=CHANGE_ERRORS)
async def cancel_interview(interview_id: InterviewId, body: CancelInterview, intake: IntakeDep, key: KeyDep) -> Any:
    """Cancel an open interview; its contact details are deleted."""
    return await _change(
        intake,
        key,
        interview_id,
        Action.cancel,
        body,
        InterviewCancelled(interview_id=interview_id, reason=body.reason),
    )


@router.post("/interviews/{interview_id}/no-show", response_model=InterviewAnswer, responses=CHANGE_ERRORS)
async def mark_no_show(
    interview_id: InterviewId, intake: IntakeDep, key: KeyDep, body: MarkNoShow | None = None
) -> Any:
    """Record that nobody came to an open interview; its contact details are deleted."""
    return await _change(
        intake, key, interview_id, Action.no_show, body or MarkNoShow(), InterviewNoShow(interview_id=interview_id)
    )


@router.post("/interviews/{interview_id}/complete", response_model=InterviewAnswer, responses=CHANGE_ERRORS)
async def complete_interview(interview_id: InterviewId, body: CompleteInterview, intake: IntakeDep, key: KeyDep) -> Any:
    """Record that an open interview took place, with each participant's self-identified
    profile. In a one-on-one, leave out `participant_ref` for the person it was scheduled
    with. Contact details for the interview are deleted."""

    async def payload(row: contacts.InterviewRow | None, subject: str) -> InterviewCompleted:
        if row is not None:
            fmt, scheduled_ref = InterviewFormat(row.format), row.participant_ref
        else:
            # intake's table lost the row (e.g. a fresh database). Intake may read only the newest event
            # of its subjects: it carries the format unless the interview was rescheduled since, and
            # then a small group (which takes any number of participants) is assumed.
            newest = await intake.log.newest(subject)
            created = newest[0].payload if newest is not None else None
            fmt, scheduled_ref = getattr(created, "format", InterviewFormat.small_group), None
        attendees = _attendees(body.participants, fmt, scheduled_ref, key, interview_id)
        return InterviewCompleted(interview_id=interview_id, format=fmt, participants=attendees)

    async def work(conn: Connection) -> InterviewAnswer:
        stored, done = await _act(conn, intake, key, interview_id, Action.complete, body, payload)
        return _answer(interview_id, Action.complete, stored, [a.participant_ref for a in done.participants])

    request = fingerprint("POST /interviews/{interview_id}/complete", body, interview_id=interview_id)
    return await once(intake, key, request, 200, work)


@router.delete(
    "/interviews/{interview_id}/contact",
    status_code=204,
    response_class=Response,
    responses=error_responses(401, 403, 422, 429, 503),
)
async def erase_contact(interview_id: InterviewId, intake: IntakeDep, _key: KeyDep) -> Response:
    """Erase the contact details kept for an interview, on request. Answers 204 whether or
    not any were kept, so the answer reveals nothing."""
    removed = await contacts.forget_interview_contact(intake.pool, interview_id)
    log.info("contact_erased", interview_id=interview_id, rows=removed)
    return Response(status_code=204)


def _attendees(
    given: list[CompletedParticipant],
    fmt: InterviewFormat,
    scheduled_ref: str | None,
    key: Key,
    interview_id: str,
) -> list[Attendee]:
    """Resolve each participant's reference: the first one without a reference is the person
    the interview was scheduled with (unless they are listed by reference); others are new."""
    if fmt is not InterviewFormat.small_group and len(given) != 1:
        raise invalid("participants", "a one-on-one interview has exactly one participant", "body")
    listed = {p.participant_ref for p in given if p.participant_ref}
    scheduled_free = scheduled_ref is not None and scheduled_ref not in listed
    out: list[Attendee] = []
    for i, person in enumerate(given):
        ref = person.participant_ref
        if ref is None and scheduled_free:
            ref, scheduled_free = scheduled_ref, False
        if ref is None:
            ref = new_ref(key, "complete", interview_id, str(i))
        out.append(Attendee(participant_ref=ref, profile=person.profile))
    if len({a.participant_ref for a in out}) != len(out):
        raise invalid("participants", "a participant is listed twice", "body")
    return out


def _answer(interview_id: str, action: Action, stored: Stored, refs: list[str] | None = None) -> InterviewAnswer:
    return InterviewAnswer(
        interview_id=interview_id,
        status=STATUS_AFTER[action],
        participant_refs=refs,
        event_id=stored.event_id,
        sequence=stored.sequence,
    )


router.include_router(records_router)
