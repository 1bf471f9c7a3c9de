"""HTTP surface of the survey service: ``POST /responses``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from faststream.nats import NatsBroker
from nats.js import JetStreamContext

from services.survey.models import RecordSurveyResponse, SurveyResponseRecorded
from shared.bus import last_event_on, publish_event
from shared.errors import ConflictError
from shared.events import Envelope, SurveyCompleted
from shared.http import require_scope
from shared.idempotency import derived_id, derived_uuid, idempotency_key
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger("engage.survey")
router = APIRouter(tags=["survey"])


@router.post(
    "/responses",
    status_code=201,
    response_model=SurveyResponseRecorded,
    summary="Record a completed anonymous survey response",
    responses={
        401: {"description": "No bearer token, or an unknown one."},
        403: {"description": "The token lacks the `survey:write` scope."},
        409: {"description": "The Idempotency-Key was already used for a different response."},
        422: {"description": "Bad input: each problem names the field and the reason."},
        503: {"description": "The event log did not confirm the write; nothing was stored. Retry."},
    },
)
async def record_response(
    body: RecordSurveyResponse,
    request: Request,
    _client: str = Depends(require_scope("survey:write")),
    key: str | None = Depends(idempotency_key),
) -> SurveyResponseRecorded:
    """Store one anonymous survey response as a `SurveyCompleted` event.

    Answers 201 only once JetStream has stored the event. Send an `Idempotency-Key`
    header to make retries safe: the same key gives the same `response_id` and the
    response is stored once (`duplicate: true` on the repeat).
    """
    settings: Settings = request.app.state.settings
    broker: NatsBroker = request.app.state.broker
    js: JetStreamContext = request.app.state.js

    response_id = derived_id(key, "sr", "survey")
    event = Envelope.wrap(
        SurveyCompleted(response_id=response_id, profile=body.profile),
        process_id=body.process_id or settings.process_id,
        source="survey",
        event_id=derived_uuid(key, "survey", "response"),
        occurred_at=body.submitted_at,
    )
    try:
        # A response is a new aggregate: create-only, so a second write to it is refused.
        sequence, duplicate = await publish_event(broker, event, settings, expected_last_subject_sequence=0)
    except ConflictError:
        # JetStream checks the expected sequence before it dedupes, so a retry of a
        # stored response lands here rather than as a duplicate PubAck.
        sequence = await _sequence_of_retry(js, settings, event)
        duplicate = True

    log.info("survey_response_recorded", response_id=response_id, event_id=str(event.event_id),
             sequence=sequence, duplicate=duplicate)
    return SurveyResponseRecorded(response_id=response_id, sequence=sequence, duplicate=duplicate)


async def _sequence_of_retry(js: JetStreamContext, settings: Settings, event: Envelope) -> int:
    """The stored sequence if ``event`` repeats what is already on its subject, else 409."""
    found = await last_event_on(js, settings, event.subject)
    if found is None:
        raise ConflictError("the response could not be stored; try again")
    stored, sequence = found
    if stored.event_id != event.event_id:
        raise ConflictError("this response id is already taken; try again with a new Idempotency-Key")
    if stored.payload != event.payload:
        # Same key, different answers: storing either silently would lose what someone said.
        raise ConflictError("this Idempotency-Key was already used for a different response")
    return sequence
