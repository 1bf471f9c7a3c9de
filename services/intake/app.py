"""The intake service: a FastAPI app that writes to the event log through FastStream.

``build_app(settings)`` connects nothing until the app starts: its lifespan connects the
NATS broker, makes sure the streams exist, opens the database pool and migrates intake's
tables, then serves. ``engage serve intake`` runs it (and configures logging, once, for the process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI

from services.intake import contacts, replies
from services.intake.api import router
from services.intake.context import IntakeState
from shared.bus import connected_log
from shared.errors import ConfigError
from shared.http import health_checks, health_router, service_app
from shared.idempotency import IdempotencyKeys
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger("engage.intake")


def build_app(settings: Settings) -> FastAPI:
    """The intake app for ``settings``; raises ConfigError if a server URL is missing."""
    if settings.nats_url is None:
        raise ConfigError("ENGAGE_NATS_URL is not set: intake needs the NATS server holding the event log")
    if settings.database_url is None:
        raise ConfigError("ENGAGE_DATABASE_URL is not set: intake needs PostgreSQL for its contacts table")
    nats_url, database_url = settings.nats_url, settings.database_url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with connected_log(nats_url, settings, "intake") as event_log:
            pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
            try:
                await contacts.migrate(pool)
                await replies.migrate(pool)
                app.state.intake = IntakeState(settings=settings, log=event_log, pool=pool)
                app.state.health_checks = health_checks(nats=event_log.broker.connection, database=pool)
                log.info("intake_started", process_id=settings.process_id)
                yield
            finally:
                await pool.close()

    app = service_app(
        settings,
        title="engage intake",
        version="1",
        summary="Schedule and record interviews, gatherings and the advisory group's work.",
        description="Writes engagement events to the log. Participants are known by opaque "
        "references; contact details for scheduling stay in intake's own deletable table.",
        lifespan=lifespan,
    )
    app.include_router(health_router())  # /health/live, /health/ready: what the deploy's healthchecks ask
    app.include_router(router)
    app.add_middleware(IdempotencyKeys)  # every write has a key, and every answer to one names it
    return app
