"""The survey service's app: FastAPI for HTTP, a FastStream NATS broker for the event log.

No database: the event log is the only place a response is written. ``engage serve survey``
runs it and configures logging, once, for the process; building the app configures nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.survey.api import router
from services.survey.form import form_router
from services.survey.sources.routes import sources_router
from services.survey.state import SurveyState
from shared.bus import connected_log
from shared.errors import ConfigError
from shared.http import health_checks, health_router, service_app
from shared.idempotency import IdempotencyKeys
from shared.logging import get_logger
from shared.settings import Settings

log = get_logger("engage.survey")


def build_app(settings: Settings) -> FastAPI:
    """The survey service, ready for uvicorn; it connects to NATS when it starts."""
    if not settings.nats_url:
        raise ConfigError("ENGAGE_NATS_URL is not set: the survey service needs the NATS server(s) of the event log")
    nats_url = settings.nats_url

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with connected_log(nats_url, settings, "survey") as event_log:
            app.state.survey = SurveyState(settings=settings, log=event_log)
            app.state.health_checks = health_checks(nats=event_log.broker.connection)
            log.info("survey_started", stream=settings.stream_name)
            yield

    app = service_app(
        settings,
        title="engage survey",
        version="1",
        lifespan=lifespan,
        summary="Records completed anonymous survey responses on the engagement event log.",
    )
    app.include_router(health_router())  # /health/live, /health/ready: what the deploy's healthchecks ask
    app.include_router(router)
    app.include_router(form_router())  # the participants' form: /form, in the catalogs' languages
    app.include_router(sources_router(settings))  # POST /sources/{name}/kobo|redcap|webhook
    app.add_middleware(IdempotencyKeys)  # every write has a key, and every answer to one names it
    return app
