"""What every intake route needs: the running service's handles and a few small helpers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request

from services.intake.publishing import Log
from shared.events import Envelope
from shared.idempotency import derived_id, derived_uuid, idempotency_key
from shared.settings import Settings


@dataclass(frozen=True)
class Intake:
    """The running service: settings, the event log, and intake's own database."""

    settings: Settings
    log: Log
    pool: asyncpg.Pool


def _intake(request: Request) -> Intake:
    return request.app.state.intake


IntakeDep = Annotated[Intake, Depends(_intake)]
KeyDep = Annotated[str | None, Depends(idempotency_key)]


def new_ref(key: str | None, *scope: str) -> str:
    """A new opaque participant reference, fixed by the Idempotency-Key so a retry reissues it."""
    return derived_id(key, "p", "intake", *scope)


def envelope(
    payload: Any, *, process_id: str, key: str | None, action: str, aggregate_id: str, occurred_at: datetime | None
) -> Envelope:
    """Wrap ``payload``; the event id comes from the key, so a retry rebuilds the same event id."""
    return Envelope.wrap(
        payload,
        process_id=process_id,
        source="intake",
        event_id=derived_uuid(key, "intake", action, aggregate_id),
        occurred_at=occurred_at,
    )




