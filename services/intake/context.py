"""What every intake route needs: the running service's state, typed, and a few small helpers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from shared.bus import ServiceState, Stored
from shared.errors import ServerUnavailable
from shared.events import Envelope
from shared.http import app_state_dependency, require_scope
from shared.idempotency import Key, derived_id, derived_uuid, write_key
from shared.logging import get_logger

log = get_logger("engage.intake")


@dataclass(frozen=True)
class IntakeState(ServiceState):
    """The running service: settings, the event log, and intake's own database (contacts).

    Kept on ``app.state.intake``; routes get it through ``IntakeDep``.
    """

    pool: asyncpg.Pool


IntakeDep = Annotated[IntakeState, Depends(app_state_dependency("intake", IntakeState))]
# What asyncpg raises when PostgreSQL is down, restarting or unreachable, or the pool is closed.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # e.g. the pool is closing, the connection was lost
    asyncpg.exceptions.OperatorInterventionError,  # the server is shutting down or restarting
    asyncpg.exceptions.InsufficientResourcesError,  # e.g. too many connections
    # A connection the server dropped in the middle of an operation (PostgreSQL shutting down)
    # can leave asyncpg refusing the next one with "cannot switch to state …": the same outage.
    asyncpg.exceptions.InternalClientError,
)


class IntakeRoute(APIRoute):
    """intake's routes: PostgreSQL not answering is a 503 with Retry-After (a ServerUnavailable), never a 500.

    Whatever the write did in PostgreSQL is rolled back with its transaction; anything it may
    have stored on the log is what the answer's Idempotency-Key makes safe to retry.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except DATABASE_DOWN as exc:
                log.warning("database_unavailable", error_type=type(exc).__name__)
                raise ServerUnavailable(
                    "intake's database did not answer; retry with the same Idempotency-Key "
                    "(this answer's Idempotency-Key header): the write then happens once"
                ) from exc

        return handle


# One dependency for the scope check, so a route's key is scoped to the token it checked.
intake_writer = require_scope("intake:write")
KeyDep = Annotated[Key, Depends(write_key(intake_writer))]


def new_ref(key: Key, *scope: str) -> str:
    """A new opaque participant reference, fixed by the Idempotency-Key so a retry reissues it."""
    return derived_id(key, "p", "intake", *scope)


def envelope(
    payload: Any, *, process_id: str, key: Key, action: str, aggregate_id: str, occurred_at: datetime | None
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
