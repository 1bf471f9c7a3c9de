"""What every HTTP surface shares: bearer-token scopes, error mapping, health checks.

Errors are mapped here once: bad input is 422 naming each field and the reason (the
rejected value is never echoed back: it could be someone's phone number), a state
conflict is 409, an event log that did not confirm is 503, and anything unexpected is a
plain 500 with a request id, never a stack trace. A body over ``MAX_BODY_BYTES`` is 413,
refused before it is read.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Literal, Protocol, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from nats.aio.client import Client as NatsClient
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics
from shared.errors import ConflictError, EventTooLarge, NotFoundError, PublishError
from shared.idempotency import BadIdempotencyKey
from shared.logging import get_logger
from shared.settings import Settings, TokenSpec

log = get_logger("engage.http")
_bearer = HTTPBearer(auto_error=False)

HealthCheck = Callable[[], Awaitable[bool]]
_State = TypeVar("_State")
HEALTH_TIMEOUT_SECONDS = 2.0


class Fetches(Protocol):
    """A database handle ``health_checks`` can probe: an asyncpg pool or connection."""

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any: ...


class ErrorAnswer(BaseModel):
    """What every error body has in common: a fixed ``error`` code; nothing else rides along."""

    # Serialization-mode schemas (the ones OpenAPI shows for answers) list ``error`` as required:
    # it is always sent, though the models give it as a default.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class Problem(ErrorAnswer):
    """One field of the request that was refused, and why (the value itself is never echoed back)."""

    field: str = Field(description="Where the problem is, as the client sent it, e.g. `profile.region`.")
    reason: str = Field(description="Why the value was refused.")


class InvalidAnswer(ErrorAnswer):
    """422: the request was refused as it is; each problem names a field and the reason."""

    error: Literal["invalid"] = "invalid"
    problems: list[Problem]


class RefusalAnswer(ErrorAnswer):
    """An error code and a reason a person can read; each status below fixes its own code."""

    error: str
    reason: str


class UnauthorizedAnswer(RefusalAnswer):
    """401: no bearer token, or one this service does not know."""

    error: Literal["unauthorized"] = "unauthorized"


class ForbiddenAnswer(RefusalAnswer):
    """403: the token is known but lacks the scope this endpoint needs."""

    error: Literal["forbidden"] = "forbidden"


class NotFoundAnswer(RefusalAnswer):
    """404: the record does not exist."""

    error: Literal["not_found"] = "not_found"


class TooManyAnswer(RefusalAnswer):
    """429: this token writes faster than it may; wait for `Retry-After` seconds."""

    error: Literal["too_many"] = "too_many"


class TooLargeAnswer(RefusalAnswer):
    """413: the request's body is larger than any request engage takes; it was not read."""

    error: Literal["too_large"] = "too_large"


class ConflictAnswer(RefusalAnswer):
    """409: the record's state does not allow this, or someone else changed it at the same moment."""

    error: Literal["conflict"] = "conflict"


class UnavailableAnswer(RefusalAnswer):
    """503: the event log did not confirm the write; nothing was stored, retry with the same key."""

    error: Literal["unavailable"] = "unavailable"


class InternalAnswer(RefusalAnswer):
    """500: something went wrong on our side; the request id finds it in the service's log."""

    error: Literal["internal"] = "internal"
    request_id: str


ERROR_ANSWERS: dict[int, type[ErrorAnswer]] = {
    401: UnauthorizedAnswer,
    403: ForbiddenAnswer,
    404: NotFoundAnswer,
    409: ConflictAnswer,
    413: TooLargeAnswer,
    422: InvalidAnswer,
    429: TooManyAnswer,
    500: InternalAnswer,
    503: UnavailableAnswer,
}


def error_responses(*statuses: int, described: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that can answer ``statuses``, each with engage's own body.

    A route passes the statuses it can really answer; 413 and 500 (which any route can) are
    always added. Listing 422 here also keeps FastAPI from documenting its own validation body,
    which engage never sends. ``described`` replaces the generic description of a status
    with what it means on this route.
    """
    wanted = {*statuses, 413, 500}
    unknown = wanted - ERROR_ANSWERS.keys() | (described or {}).keys() - wanted
    if unknown:
        raise ValueError(f"no error answer for status {sorted(unknown)} here; known: {sorted(ERROR_ANSWERS)}")
    return {
        status: {
            "model": ERROR_ANSWERS[status],
            "description": (described or {}).get(status) or _first_line(ERROR_ANSWERS[status]),
        }
        for status in sorted(wanted)
    }


def _first_line(model: type[BaseModel]) -> str:
    # "422: the request was refused ..." -> "The request was refused ..."
    line = (model.__doc__ or "").strip().splitlines()[0].split(": ", 1)[-1]
    return line[:1].upper() + line[1:]


def _answer(body: ErrorAnswer, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    """Send an error through its model, so the body and the documented schema cannot drift apart."""
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


# The largest request body engage reads (the largest request the contract allows is well under it).
MAX_BODY_BYTES = 256 * 1024
_TOO_LARGE = f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB"


class BodyTooLarge(HTTPException):
    """A body that passed the cap while it was being read (one sent without a Content-Length).

    An HTTPException, so that FastAPI lets it through as it is rather than as a 400.
    """

    def __init__(self) -> None:
        super().__init__(413, _TOO_LARGE)


class HttpMetrics:
    """Count every answer and time it, by route template (``/interviews/{interview_id}``, never the id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(template, method, str(status)).inc()
            metrics.HTTP_SECONDS.labels(template, method).observe(time.perf_counter() - started)


class BodyCap:
    """Refuse a request body over ``limit`` bytes with 413, never reading it whole.

    A Content-Length over the cap is refused before the app sees the request; a body sent
    in chunks is counted as it arrives and refused once it passes the cap.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await _answer(TooLargeAnswer(reason=_TOO_LARGE), 413, {"Connection": "close"})(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge
            return message

        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge:
            if started:
                raise
            await _answer(TooLargeAnswer(reason=_TOO_LARGE), 413, {"Connection": "close"})(scope, receive, send)


class UnauthorizedError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason


def field_path(loc: tuple[Any, ...]) -> str:
    """``("body", "profile", "region", "str-enum[Region]")`` -> ``profile.region``.

    Drops where the value came from and pydantic's union-member tags (they carry brackets;
    field names never do), so the path is the one the client sent.
    """
    parts = [
        str(p) for p in loc if p not in ("body", "query", "path", "header") and not (isinstance(p, str) and "[" in p)
    ]
    return ".".join(parts) or "body"


def problems_of(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One problem per field, in order; a union's reasons are joined with "or"."""
    merged: dict[str, list[str]] = {}
    for err in errors:
        reasons = merged.setdefault(field_path(tuple(err["loc"])), [])
        if err["msg"] not in reasons:
            reasons.append(err["msg"])
    return [{"field": field, "reason": " or ".join(reasons)} for field, reasons in merged.items()]


def invalid(field: str, reason: str, where: str = "query") -> RequestValidationError:
    """A 422 naming one field, for rules that need more than the request's schema to check."""
    return RequestValidationError([{"loc": (where, *field.split(".")), "msg": reason, "type": "value_error"}])


class TooManyRequests(Exception):
    """A token wrote faster than its rate: 429, and when to try again."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"this token writes faster than it may; try again in {math.ceil(wait)} s")
        self.wait = wait


@dataclass
class WriteLimits:
    """A token bucket per token: ``burst`` writes at once, then ``rate`` a second."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # token -> (tokens left, when)

    def take(self, token: str) -> None:
        """Spend one write of ``token``'s, or raise TooManyRequests saying how long to wait."""
        now = self.clock()
        left, then = self._buckets.get(token, (float(self.burst), now))
        left = min(float(self.burst), left + (now - then) * self.rate)
        if left < 1:
            self._buckets[token] = (left, now)
            raise TooManyRequests((1 - left) / self.rate)
        self._buckets[token] = (left - 1, now)


def require_scope(scope: str) -> Callable[..., Any]:
    """A dependency admitting requests whose bearer token carries ``scope`` (or ``admin``).

    A write scope also spends one of the token's writes (``WriteLimits``): 429 beyond its rate.
    """

    async def check(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
        tokens: dict[str, TokenSpec] = request.app.state.tokens
        if creds is None or creds.scheme.lower() != "bearer":
            raise UnauthorizedError(401, "a bearer token is required")
        for name, spec in tokens.items():
            if hmac.compare_digest(spec.token.encode(), creds.credentials.encode()):
                if scope in spec.scopes or "admin" in spec.scopes:
                    if scope.endswith(":write"):
                        limits: WriteLimits = request.app.state.write_limits
                        limits.take(name)
                    return name
                raise UnauthorizedError(403, f"this token lacks the scope {scope!r}")
        raise UnauthorizedError(401, "unknown token")

    return check


def app_state(name: str, kind: type[_State]) -> Callable[[Request], _State]:
    """A dependency handing a route ``app.state.<name>``, typed; it is there only while the app is started."""

    def state(request: Request) -> _State:
        value = getattr(request.app.state, name, None)
        if not isinstance(value, kind):
            raise RuntimeError(f"{name} is not started: its lifespan has not set app.state.{name}")
        return value

    return state


def app_state_dependency(name: str, kind: type[_State]) -> Callable[[Request], Awaitable[_State]]:
    """``app_state`` as a route dependency: a coroutine, so FastAPI runs it on the event loop.

    FastAPI runs a plain function dependency in a worker thread, a thread hop on every request.
    """
    state = app_state(name, kind)

    async def dependency(request: Request) -> _State:
        return state(request)

    return dependency


def health_checks(
    nats: NatsClient | None = None, database: Fetches | None = None, *, timeout: float = HEALTH_TIMEOUT_SECONDS
) -> dict[str, HealthCheck]:
    """The checks for ``app.state.health_checks``: "nats" and/or "database", for what is given.

    NATS is healthy when the client is connected and the server answers a PING; the database
    when ``SELECT 1`` answers 1. Each check gives up after ``timeout`` seconds and never
    raises: ``/health`` must say "degraded" (503), never fail with a 500 or hang a probe.
    """
    checks: dict[str, HealthCheck] = {}
    if nats is not None:
        client = nats

        async def nats_ok() -> bool:
            if not client.is_connected:
                return False
            await client.flush(timeout=max(1, round(timeout)))
            return True

        checks["nats"] = _never_raises(nats_ok, timeout)
    if database is not None:
        db = database

        async def database_ok() -> bool:
            return bool(await db.fetchval("SELECT 1") == 1)

        checks["database"] = _never_raises(database_ok, timeout)
    return checks


async def _run_checks(request: Request) -> dict[str, bool]:
    checks: dict[str, HealthCheck] = getattr(request.app.state, "health_checks", {})
    return {name: await fn() for name, fn in checks.items()}


def health_router() -> APIRouter:
    """``GET /health/live`` and ``GET /health/ready`` for a service, from ``app.state.health_checks``.

    Live is the process answering at all: an orchestrator restarts the service only when it
    fails. Ready is every check passing (NATS, and PostgreSQL where the service has one): a
    proxy or ``depends_on`` sends traffic only then. Before the lifespan has set any checks
    the service is still starting, so it is not ready. ``/health`` stays as it was.
    """
    router = APIRouter(tags=["health"])

    @router.get("/health/live")
    async def live() -> JSONResponse:
        """Liveness: the process is up and answering (restart it only if this fails)."""
        return JSONResponse({"status": "alive"})

    @router.get(
        "/health/ready",
        responses={503: {"description": "Not ready: starting, or a check failed (its name is false in `checks`)."}},
    )
    async def ready(request: Request) -> JSONResponse:
        """Readiness: 200 once every server this service needs answers; 503 naming the one that does not."""
        results = await _run_checks(request)
        ok = bool(results) and all(results.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": results}, status_code=200 if ok else 503
        )

    return router


def _never_raises(probe: HealthCheck, timeout: float) -> HealthCheck:
    async def check() -> bool:
        try:
            async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancellation on 3.11
                return bool(await probe())
        except Exception:  # noqa: BLE001 - any failure of a probe is "not healthy", never a 500
            return False

    return check


def _invalid_body(problems: list[dict[str, str]]) -> InvalidAnswer:
    return InvalidAnswer(problems=[Problem(**p) for p in problems])


DOCS_ASSETS = "/docs/assets"
# Swagger UI's own files, as the fastapi-offline package ships them: engage serves them itself.
_SWAGGER_UI = files("fastapi_offline") / "static"
_DOCS_JS = """\
"use strict";
// Starts Swagger UI on the page's own OpenAPI document. A file, not an inline script, so the
// page works under a Content-Security-Policy of 'self'; no validator badge (it would call out).
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""
DOCS_POLICY = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


def install_docs(app: FastAPI) -> None:
    """Serve the OpenAPI document at ``/docs`` with Swagger UI from the service itself.

    FastAPI's own pages load Swagger UI and ReDoc from a CDN, which fails offline (a laptop
    at an outreach event) and under a strict Content-Security-Policy. Apps are built with
    ``docs_url=None, redoc_url=None``; should an app still have FastAPI's pages, they are
    taken out here so ``/docs`` is always this one.
    """
    cdn_pages = {app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url if app.docs_url else None} - {None}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in cdn_pages]
    app.docs_url = app.redoc_url = None
    openapi_url = app.openapi_url or "/openapi.json"
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(app.title)}: API</title>
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{DOCS_ASSETS}/favicon.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{html.escape(openapi_url)}"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="{DOCS_ASSETS}/docs.js"></script>
</body>
</html>
"""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": DOCS_POLICY})

    @app.get(f"{DOCS_ASSETS}/docs.js", include_in_schema=False)
    async def docs_js() -> Response:
        return Response(_DOCS_JS, media_type="text/javascript")

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(_SWAGGER_UI)), name="docs-assets")


def service_app(
    settings: Settings,
    *,
    title: str,
    version: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    summary: str | None = None,
    description: str = "",
) -> FastAPI:
    """A service's FastAPI app, ``install``ed: its own ``/docs`` (no CDN pages), error bodies and ``/health``.

    The caller includes its routers.
    """
    app = FastAPI(
        title=title,
        version=version,
        summary=summary,
        description=description,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install(app, settings)
    return app


def install(app: FastAPI, settings: Settings) -> None:
    """Attach tokens, the body cap, error handlers, ``GET /health`` and ``GET /docs`` to a service's app."""
    app.state.tokens = settings.all_tokens()
    app.state.write_limits = WriteLimits(settings.write_rate, settings.write_burst)
    app.add_middleware(BodyCap)
    app.add_middleware(HttpMetrics)  # outermost: a 413 from the body cap is counted too
    install_docs(app)

    @app.get(
        "/metrics",
        tags=["health"],
        responses={
            200: {
                "description": "Prometheus's text format.",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            },
            **error_responses(401, 403),
        },
    )
    async def metrics_text(_token: str = Depends(require_scope("metrics:read"))) -> Response:
        """What the service measures about itself, in Prometheus's text format (no participant data)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(UnauthorizedError)
    async def _unauthorized(_r: Request, exc: UnauthorizedError) -> JSONResponse:
        if exc.status == 401:
            return _answer(UnauthorizedAnswer(reason=exc.reason), 401, {"WWW-Authenticate": "Bearer"})
        return _answer(ForbiddenAnswer(reason=exc.reason), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer(_invalid_body(problems_of(list(exc.errors()))), 422)

    @app.exception_handler(ValidationError)
    async def _invalid_model(_r: Request, exc: ValidationError) -> JSONResponse:
        return _answer(_invalid_body(problems_of([dict(e) for e in exc.errors()])), 422)

    @app.exception_handler(BadIdempotencyKey)
    async def _bad_key(_r: Request, exc: BadIdempotencyKey) -> JSONResponse:
        field, _, reason = str(exc).partition(": ")
        return _answer(_invalid_body([{"field": field, "reason": reason}]), 422)

    @app.exception_handler(HTTPException)
    async def _http(_r: Request, exc: HTTPException) -> Response:
        # The one HTTPException a route meets before engage's code: a body that is not JSON (400).
        if exc.status_code == 400:
            return _answer(_invalid_body([{"field": "body", "reason": "is not valid JSON"}]), 422)
        return await http_exception_handler(_r, exc)  # anything else as FastAPI answers it (404, 405)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_r: Request, exc: BodyTooLarge) -> JSONResponse:
        return _answer(TooLargeAnswer(reason=exc.detail), 413, {"Connection": "close"})

    @app.exception_handler(EventTooLarge)
    async def _event_too_large(_r: Request, exc: EventTooLarge) -> JSONResponse:
        return _answer(TooLargeAnswer(reason=str(exc)), 413)

    @app.exception_handler(TooManyRequests)
    async def _too_many(_r: Request, exc: TooManyRequests) -> JSONResponse:
        return _answer(TooManyAnswer(reason=str(exc)), 429, {"Retry-After": str(math.ceil(exc.wait))})

    @app.exception_handler(ConflictError)
    async def _conflict(_r: Request, exc: ConflictError) -> JSONResponse:
        return _answer(ConflictAnswer(reason=str(exc)), 409)

    @app.exception_handler(NotFoundError)
    async def _not_found(_r: Request, exc: NotFoundError) -> JSONResponse:
        return _answer(NotFoundAnswer(reason=str(exc)), 404)

    @app.exception_handler(PublishError)
    async def _unavailable(_r: Request, exc: PublishError) -> JSONResponse:
        log.warning("publish_failed", reason=str(exc))
        return _answer(UnavailableAnswer(reason=str(exc)), 503, {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(_r: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        log.error("unexpected_error", request_id=request_id, error_type=type(exc).__name__, error=str(exc)[:300])
        return _answer(InternalAnswer(reason="something went wrong on our side", request_id=request_id), 500)

    @app.get(
        "/health",
        tags=["health"],
        responses={503: {"description": "Not ready: a check failed (its name is false in `checks`)."}},
    )
    async def health(request: Request) -> JSONResponse:
        """Liveness and readiness: 200 once the service is connected to what it needs."""
        checks = getattr(request.app.state, "health_checks", {})
        results = {name: await fn() for name, fn in checks.items()}
        ok = all(results.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "checks": results}, status_code=200 if ok else 503)
