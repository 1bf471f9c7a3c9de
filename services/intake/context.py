"""What every intake route needs: the running service's state, typed, and a few small helpers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends

from shared.bus import ServiceState, Stored
from shared.events import Envelope
from shared.http import app_state
from shared.idempotency import derived_id, derived_uuid, idempotency_key
from shared.logging import get_logger

log = get_logger("engage.intake")


@dataclass(frozen=True)
class IntakeState(ServiceState):
    """The running service: settings, the event log, and intake's own database (contacts).

    Kept on ``app.state.intake``; routes get it through ``IntakeDep``.
    """

    pool: asyncpg.Pool


IntakeDep = Annotated[IntakeState, Depends(app_state("intake", IntakeState))]
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


def written(event: Envelope, stored: Stored, **ids: Any) -> None:
    """The one log line per write: ids and the sequence, never a profile or a contact."""
    log.info(
        "event_recorded",
        event_type=event.type,
        event_id=str(stored.event_id),
        sequence=stored.sequence,
        replayed=stored.replayed,
        **ids,
    )
