"""``POST /sources/{name}/kobo|redcap|webhook``: submissions survey platforms push, each behind its own proof.

- **kobo**: KoboToolbox REST Services, JSON, HTTP basic auth. A submission is recorded once per
  ``_uuid`` (Kobo retries a failed delivery three times): its idempotency key is (source, ``_uuid``).
- **redcap**: REDCap's Data Entry Trigger, form-encoded and unsigned. It is authenticated by a
  shared secret in the trigger URL's ``secret`` query parameter (compared in constant time) *and*
  by its ``project_id`` being the source's project. Only a completed instrument (``…_complete``
  = 2) of the mapped instrument is recorded; the record itself is then fetched from REDCap's
  export API with the project's token, so what is stored never comes from the unsigned trigger.
- **webhook**: Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``),
  HMAC-SHA256 with the source's ``whsec_`` key, a replay window both ways, and the
  ``webhook-id`` as the idempotency key.

Every route records through the survey's own ``POST /responses`` (``record_survey_response``), so a
source's submission is stored exactly as a survey response is. Logs name the source, the
response id and how many problems a refusal had; never an address, a user agent, a body or a value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any
from urllib.parse import parse_qsl

import httpx
import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.survey.api import record_survey_response
from services.survey.models import RecordSurveyResponse
from services.survey.sources.config import Source, load_sources
from services.survey.sources.mapping import Kind, Refused, apply_mapping
from services.survey.state import SurveyDep, SurveyState
from shared.http import (
    InvalidAnswer,
    NotFoundAnswer,
    Problem,
    UnauthorizedError,
    UnavailableAnswer,
    WriteLimits,
    error_responses,
)
from shared.idempotency import Key
from shared.logging import get_logger
from shared.plan import load_plans
from shared.settings import Settings

log = get_logger("engage.survey.sources")
REDCAP_TIMEOUT_SECONDS = 10.0
COMPLETE = "2"  # REDCap's "Complete" status of an instrument


class SourceReceipt(BaseModel):
    """What happened to a pushed submission: recorded (once), or deliberately not recorded."""

    recorded: bool = Field(description="True when the submission is on the event log (now or before).")
    response_id: str | None = Field(None, description="Id of the recorded response, e.g. `sr-...`.")
    sequence: int | None = Field(None, description="Stream sequence at which the event log stored it.")
    duplicate: bool = Field(False, description="True when this delivery repeated one already recorded.")
    reason: str | None = Field(None, description="Why nothing was recorded (e.g. the instrument is not complete).")


SourceName = Annotated[str, Path(description="The source's name in ENGAGE_SOURCES_FILE.", max_length=63)]
Answer = SourceReceipt | JSONResponse


def _described(proof: str) -> dict[int | str, dict[str, Any]]:
    return error_responses(
        401,
        404,
        409,
        422,
        429,
        503,
        described={
            401: f"{proof} missing or wrong; nothing was stored.",
            404: "No source of this name and kind is configured.",
            409: "This submission's id was already recorded with different answers; nothing was changed.",
            422: "The submission holds a field the mapping file neither maps nor ignores, or a code it does not "
            "map: each problem names the field (never the value). Nothing was stored.",
            429: "This source sends faster than ENGAGE_WRITE_RATE; retry after `Retry-After` seconds.",
            503: "The event log (or, for REDCap, REDCap's API) did not answer; nothing was stored. Retry.",
        },
    )


def _json_body(description: str) -> dict[str, Any]:
    schema = {"type": "object", "additionalProperties": True, "description": description}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_FORM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "REDCap's trigger: project_id, record, instrument, <instrument>_complete, …",
                }
            }
        },
    }
}


def _refused(problems: list[tuple[str, str]], source: str) -> JSONResponse:
    log.info("source_submission_refused", source=source, problems=len(problems))
    body = InvalidAnswer(problems=[Problem(field=f, reason=r) for f, r in problems])
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


def _object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refused([("body", "is not valid JSON")]) from None
    if not isinstance(body, dict):
        raise Refused([("body", "must be a JSON object of the submission's fields")])
    return body


def _id(value: Any, field: str) -> str:
    if not isinstance(value, str | int) or isinstance(value, bool) or not 1 <= len(str(value)) <= 120:
        raise Refused([(field, "missing, or not an id of 1 to 120 characters")])
    if not str(value).isprintable():
        raise Refused([(field, "must be printable text")])
    return str(value)


def _unauthorized(reason: str) -> UnauthorizedError:
    return UnauthorizedError(401, reason)


def _basic(request: Request, source: Source) -> None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    try:
        user, _, password = base64.b64decode(encoded, validate=True).partition(b":")
    except (binascii.Error, ValueError):
        user = password = b""
    ok_user = hmac.compare_digest(user, source.username.encode())
    ok_password = hmac.compare_digest(password, source.secret)
    if scheme.lower() != "basic" or not (ok_user and ok_password):
        raise _unauthorized("HTTP basic auth with this source's username and password is required")


def verify_webhook(
    key: bytes, headers: Mapping[str, str], body: bytes, tolerance: int, now: float | None = None
) -> str:
    """The ``webhook-id`` of a Standard Webhooks request whose signature and timestamp hold; else 401."""
    msg_id, stamp, signatures = (headers.get(h, "") for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and stamp and signatures):
        raise _unauthorized("webhook-id, webhook-timestamp and webhook-signature are required")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise _unauthorized("webhook-timestamp: not a Unix time in seconds")
    if abs((time.time() if now is None else now) - int(stamp)) > tolerance:
        raise _unauthorized("webhook-timestamp: outside the replay window")
    signed = msg_id.encode("latin-1") + b"." + stamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    valid = False
    for signature in signatures.split():
        version, _, given = signature.partition(",")
        # every candidate is compared, in constant time, whatever came before it
        matches = hmac.compare_digest(expected, given.encode("latin-1"))
        valid = valid or (matches and version == "v1")
    if not valid:
        raise _unauthorized("webhook-signature: no valid v1 signature")
    if len(msg_id) > 120 or not msg_id.isprintable():
        raise Refused([("webhook-id", "must be 1 to 120 printable characters")])
    return msg_id


def sources_router(settings: Settings) -> APIRouter:
    """The source routes of the survey service, for the sources ``ENGAGE_SOURCES_FILE`` configures.

    The file, its mapping files and the secrets they name are read now: a problem stops the
    service at start (ConfigError), never at a submission.
    """
    sources = (
        load_sources(settings.sources_file, load_plans(settings.plans), settings.process_id)
        if settings.sources_file
        else {}
    )
    router = APIRouter(tags=["sources"])

    async def record(
        request: Request, survey: SurveyState, source: Source, key: str, fields: dict[str, Any]
    ) -> SourceReceipt:
        limits: WriteLimits = request.app.state.write_limits
        limits.take(f"source:{source.name}")  # per source: a platform has no token of its own
        profile, submitted = apply_mapping(source.mapping, fields, source.kind)
        given: dict[str, Any] = {"profile": profile, "submitted_at": submitted, "process_id": source.mapping.process_id}
        body = RecordSurveyResponse(**{k: v for k, v in given.items() if v is not None})
        client = f"source:{source.name}"
        receipt = await record_survey_response(body, survey, Key(client, key))
        log.info(
            "source_submission_recorded",
            source=source.name,
            kind=source.kind,
            response_id=receipt.response_id,
            duplicate=receipt.duplicate,
        )
        return SourceReceipt(
            recorded=True, response_id=receipt.response_id, sequence=receipt.sequence, duplicate=receipt.duplicate
        )

    async def answer(name: str, kind: Kind, handle: Callable[[Source], Awaitable[Answer]]) -> Answer:
        found = sources.get(name)
        if found is None or found.kind != kind:
            body = NotFoundAnswer(reason=f"no {kind} source of this name is configured")
            return JSONResponse(body.model_dump(mode="json"), status_code=404)
        try:
            return await handle(found)
        except Refused as exc:
            return _refused(exc.problems, name)

    @router.post(
        "/sources/{name}/kobo",
        response_model=SourceReceipt,
        summary="Record a KoboToolbox submission (REST Services)",
        responses=_described("HTTP basic auth"),
        openapi_extra=_json_body("A submission as Kobo's REST Services post it: flat `group/question` keys, `_uuid`."),
    )
    async def kobo(name: SourceName, request: Request, survey: SurveyDep) -> Answer:
        """Record one KoboToolbox submission, once per `_uuid` (a retried delivery is answered, not stored again).

        Fields the mapping file lists under `ignore`, and Kobo's own metadata (`_…`, `meta/…`,
        `formhub/…`), are dropped unread.
        """

        async def handle(source: Source) -> Answer:
            _basic(request, source)
            fields = _object(await request.body())
            uuid = _id(fields.get("_uuid"), "_uuid")
            return await record(request, survey, source, f"kobo:{uuid}", fields)

        return await answer(name, "kobo", handle)

    @router.post(
        "/sources/{name}/redcap",
        response_model=SourceReceipt,
        summary="REDCap Data Entry Trigger: record a completed instrument",
        responses=_described("The `secret` query parameter, or this source's `project_id`,"),
        openapi_extra=_FORM_BODY,
    )
    async def redcap(
        name: SourceName,
        request: Request,
        survey: SurveyDep,
        secret: Annotated[
            str | None, Query(description="The source's trigger secret, part of the trigger URL set in REDCap.")
        ] = None,
    ) -> Answer:
        """On REDCap's trigger for a completed instrument, fetch the record through REDCap's API and record it.

        A trigger for another instrument, or one not complete (`<instrument>_complete` other than 2),
        is answered 200 with `recorded: false` and nothing is stored.
        """

        async def handle(source: Source) -> Answer:
            if secret is None or not hmac.compare_digest(secret.encode(), source.secret):
                raise _unauthorized("secret: the trigger URL's secret is missing or wrong")
            raw = await request.body()
            form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            if not hmac.compare_digest(form.get("project_id", "").encode(), source.project_id.encode()):
                raise _unauthorized("project_id: not this source's REDCap project")
            record_id = _id(form.get("record"), "record")
            instrument = _id(form.get("instrument"), "instrument")
            if instrument != source.mapping.instrument:
                return SourceReceipt(recorded=False, reason="not the instrument this source records")
            if form.get(f"{instrument}_complete") != COMPLETE:
                return SourceReceipt(recorded=False, reason="the instrument is not complete")
            event, instance = form.get("redcap_event_name", ""), form.get("redcap_repeat_instance", "")
            rows = await _export(source, record_id, instrument)
            if isinstance(rows, JSONResponse):
                return rows
            row = _row(rows, event, instance)
            key = "\x1f".join(("redcap", source.project_id, record_id, event, instrument, instance))
            return await record(request, survey, source, key, row)

        return await answer(name, "redcap", handle)

    @router.post(
        "/sources/{name}/webhook",
        response_model=SourceReceipt,
        summary="Record a submission sent as a Standard Webhook",
        responses=_described("The webhook-id, webhook-timestamp and webhook-signature headers (valid, in time)"),
        openapi_extra=_json_body("The submission's fields as a flat JSON object; multi-select as a list of codes."),
    )
    async def webhook(name: SourceName, request: Request, survey: SurveyDep) -> Answer:
        """Record one submission signed as Standard Webhooks prescribe, once per `webhook-id`."""

        async def handle(source: Source) -> Answer:
            raw = await request.body()
            msg_id = verify_webhook(source.secret, request.headers, raw, source.tolerance_seconds)
            return await record(request, survey, source, f"webhook:{msg_id}", _object(raw))

        return await answer(name, "webhook", handle)

    return router


async def _export(source: Source, record_id: str, instrument: str) -> list[dict[str, Any]] | JSONResponse:
    """The record's rows as REDCap's export API gives them (flat JSON), or the 503 to answer."""
    form = {
        "token": source.api_token,
        "content": "record",
        "format": "json",
        "type": "flat",
        "records[0]": record_id,
        "forms[0]": instrument,
    }
    status: int | None = None
    rows: Any = None
    try:
        async with httpx.AsyncClient(timeout=REDCAP_TIMEOUT_SECONDS) as client:
            answer = await client.post(source.api_url, data=form)
        status = answer.status_code
        rows = answer.json() if status == 200 else None
    except (httpx.HTTPError, ValueError):
        rows = None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        log.warning("redcap_export_failed", source=source.name, status=status)
        body = UnavailableAnswer(reason="REDCap's API did not give the record; nothing was stored")
        return JSONResponse(body.model_dump(mode="json"), status_code=503, headers={"Retry-After": "60"})
    return rows


def _row(rows: list[dict[str, Any]], event: str, instance: str) -> dict[str, Any]:
    """The export's row for the trigger's event and repeat instance."""
    for row in rows:
        if event and str(row.get("redcap_event_name", "")) != event:
            continue
        if str(row.get("redcap_repeat_instance", "") or "") != instance:
            continue
        return row
    raise Refused([("record", "REDCap's export has no such record (for this event and instance)")])
