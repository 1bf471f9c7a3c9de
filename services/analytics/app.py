"""The analytics service: projector (bus -> Postgres) plus the coverage API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from services.analytics.alerts import delivery as alerts
from services.analytics.answers import queries
from services.analytics.answers.models import CategoryRow
from services.analytics.answers.queries import Sources
from services.analytics.answers.release import ReleaseBook
from services.analytics.answers.workers import Workers
from services.analytics.api import router, view_for
from services.analytics.dashboard import routes as dashboard
from services.analytics.engine.projector import Projector
from services.analytics.export.routes import export_router
from services.analytics.state import AnalyticsState, state_of
from services.analytics.store import reads, schema
from shared import heap, http
from shared.bus import (
    DEADLETTER_STREAM,
    STATUS_STREAM,
    attach_streams,
    close_nats,
    connect_nats,
    make_broker,
    stop_broker,
)
from shared.errors import ConfigError
from shared.logging import get_logger
from shared.plan import load_plans
from shared.settings import Settings

log = get_logger("engage.analytics")


async def _supervise(projector: Projector) -> None:
    """Run the projector; after an unexpected failure, start it again from the checkpoint."""
    delay = 0.5
    while True:
        try:
            await projector.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the projector must outlive any one failure
            log.error("projector_failed", error_type=type(exc).__name__, error=str(exc)[:300], retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


health = APIRouter(tags=["health"])


@health.get("/health/live")
async def live() -> JSONResponse:
    """Liveness: the process is up and answering (restart it only if this fails)."""
    return JSONResponse({"status": "alive"})


@health.get("/health/ready")
async def ready(request: Request) -> JSONResponse:
    """Readiness: NATS and PostgreSQL answer and the projection is counting; 503 with the reason otherwise.

    ``projection`` says what the projector is doing (``counting``, ``standby``, ``stalled``...),
    why it is not counting (naming the operator command where one resolves it), how many
    events on the log are not yet counted and how long the oldest of them has waited.
    """
    checks = getattr(request.app.state, "health_checks", {})
    results = {name: await fn() for name, fn in checks.items()}
    analytics = getattr(request.app.state, "analytics", None)
    projection: dict[str, object] = {"state": "starting", "reason": "the service is starting"}
    if isinstance(analytics, AnalyticsState):
        now = analytics.projector.readiness()
        projection = {
            "state": now.state,
            "reason": now.reason,
            "behind": now.behind,
            "oldest_waiting_seconds": now.oldest_waiting_seconds,
        }
    ok = bool(results) and all(results.values())
    return JSONResponse(
        {"status": "ready" if ok else "not_ready", "checks": results, "projection": projection},
        status_code=200 if ok else 503,
    )


def build_app(settings: Settings) -> FastAPI:
    if not settings.nats_url:
        raise ConfigError("ENGAGE_NATS_URL is not set: run `engage up`, or point it at a NATS server")
    if not settings.database_url:
        raise ConfigError("ENGAGE_DATABASE_URL is not set: run `engage up`, or point it at PostgreSQL")
    nats_url, database_url = settings.nats_url, settings.database_url
    plans = load_plans(settings.plans or None)  # validated now: a bad plan stops the start
    alerts.destinations(settings)  # and a bad alert setting

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        broker = make_broker(nats_url, settings, "analytics")
        await broker.connect()
        await attach_streams(broker.connection, settings, needs=(DEADLETTER_STREAM, STATUS_STREAM))
        pool = await schema.open_pool(database_url)
        applied = await schema.migrate(pool)
        if applied:
            log.info("migrations_applied", migrations=applied)
        if await pool.fetchval("SELECT EXISTS (SELECT 1 FROM as_of_needs_rebuild)"):
            log.warning(
                "as_of_needs_rebuild",
                reason="these read models were made before they kept what as-of answers need",
                fix="run `engage rebuild` once; live answers are unaffected",
            )
        projector = Projector(settings, broker.connection, pool, plans)
        releases = ReleaseBook(await reads.rounding_secret(pool), settings.every, settings.tz)
        releases_nc = await connect_nats(settings, "analytics", nats_url, max_reconnect_attempts=-1)
        as_of_workers = Workers(settings.as_of_concurrency, settings.log_format, settings.log_level)
        app.state.analytics = AnalyticsState(
            Sources(
                pool,
                broker.connection,
                settings,
                plans,
                releases,
                asyncio.Semaphore(settings.as_of_concurrency),
                releases_nc=releases_nc,
                as_of_workers=as_of_workers,
            ),
            projector,
        )
        src = app.state.analytics.sources

        async def as_coordinators_see(process: str, dimension: str, category: str) -> CategoryRow | None:
            return (await queries.coverage_now(src, process, None, src.view(suppressed=True))).row(dimension, category)

        alerting = alerts.start(settings, pool, as_coordinators_see)  # beside the projection, never in its way

        async def projection_counting() -> bool:
            return projector.readiness().ready

        # /health (shared) and /health/ready both answer not ready while the projection is not counting.
        app.state.health_checks = {
            **http.health_checks(nats=broker.connection, database=pool),
            "projection": projection_counting,
        }
        task = asyncio.create_task(_supervise(projector), name="projector")
        # Started once the projector counts or knows why not: a first /health then tells the truth.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await projector.settled.wait()
        # What start-up made lives as long as the process: never scanned by the collector again.
        heap.settle()
        try:
            yield
        finally:
            await projector.stop(task)  # bounded: shutting down must never hang
            await alerts.stop(alerting)
            await close_nats(releases_nc)
            await asyncio.to_thread(as_of_workers.close, wait=True)
            await stop_broker(broker)
            await pool.close()

    app = FastAPI(
        title="engage analytics",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Participation and representation counts projected from the event log.",
    )
    app.state.settings, app.state.plans = settings, plans
    http.install(app, settings)
    app.include_router(health)
    app.include_router(router)
    app.include_router(export_router(view_for, state_of))
    app.include_router(dashboard.router)
    app.mount("/dashboard/static", dashboard.static_files(), name="dashboard-static")
    return app
