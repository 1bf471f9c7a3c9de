"""HTTP surface of the survey service: ``POST /responses``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from services.survey.models import RecordSurveyResponse, SurveyResponseRecorded
from services.survey.state import SurveyDep, SurveyState
from shared.events import Envelope, SurveyCompleted
from shared.http import error_responses, require_scope
from shared.idempotency import Key, conflicting_key, derived_id, derived_uuid, fingerprint, write_key
from shared.logging import get_logger

log = get_logger("engage.survey")
router = APIRouter(tags=["survey"])
survey_writer = require_scope("survey:write")


@router.post(
    "/responses",
    status_code=201,
    response_model=SurveyResponseRecorded,
    summary="Record a completed anonymous survey response",
    responses=error_responses(
        401,
        403,
        409,
        422,
        429,
        503,
        described={
            401: "No bearer token, or an unknown one.",
            403: "The token lacks the `survey:write` scope.",
            409: "The Idempotency-Key was already used (by this token) for a different response.",
            422: "Bad input: each problem names the field and the reason.",
            503: "The event log did not confirm the write. Retry with the answer's `Idempotency-Key` header: "
            "the response is then stored once.",
        },
    ),
)
async def record_response(
    body: RecordSurveyResponse,
    survey: SurveyDep,
    key: Key = Depends(write_key(survey_writer)),  # checks the token's scope and rate too: the key is per token
) -> Response:
    """Store one anonymous survey response as a `SurveyCompleted` event.

    Answers 201 only once JetStream has stored the event. Every answer carries the
    request's `Idempotency-Key` header (the client's, or one the service chose): a retry
    with it gives the same `response_id` and the response is stored once (`duplicate: true`
    on the repeat), whenever it comes. Keys are per token; the same key with a different
    body is a 409.

    The response event itself is the idempotency record (the survey has no database): its
    id derives from the token and the key, and it carries the request's fingerprint.
    """
    receipt = await record_survey_response(body, survey, key)
    # Serialized here, once: FastAPI would validate the receipt again against the response model.
    return Response(receipt.__pydantic_serializer__.to_json(receipt), 201, media_type="application/json")


async def record_survey_response(body: RecordSurveyResponse, survey: SurveyState, key: Key) -> SurveyResponseRecorded:
    """Store ``body`` as a `SurveyCompleted` event under ``key``: what every way in to the survey runs."""
    response_id = derived_id(key, "sr", "survey")
    event = Envelope.wrap(
        SurveyCompleted(response_id=response_id, profile=body.profile),
        process_id=body.process_id or survey.settings.process_id,
        source="survey",
        event_id=derived_uuid(key, "survey", "response"),
        occurred_at=body.submitted_at,
    )
    # A response is a new aggregate: create-only, so a second write to it is refused. A retry
    # of a stored response is answered from it; the same key with different answers is a 409.
    stored = await survey.log.create(
        event,
        exists="this response id is already taken; try again with a new Idempotency-Key",
        differs=conflicting_key(key),
        request=fingerprint("POST /responses", body),
    )
    log.info(
        "survey_response_recorded",
        response_id=response_id,
        event_id=str(event.event_id),
        sequence=stored.sequence,
        duplicate=stored.replayed,
    )
    return SurveyResponseRecorded(response_id=response_id, sequence=stored.sequence, duplicate=stored.replayed)
