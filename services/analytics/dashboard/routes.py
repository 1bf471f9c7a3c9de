"""The coordinators' dashboard: sign-in, the page, its live event stream, a group's drill-down, its assets.

Signing in exchanges a token with the ``coverage:read`` scope for a session cookie
(see ``session``). The page, its stream and the drill-downs are for coordinators only:
every number in them is rounded as /coverage rounds it for coordinators (from a release,
to a multiple of k), whichever token signed in. Without a session the pages redirect to
sign-in and the data answers 401.

The stream (server-sent events) sends a ``snapshot`` at once, another within moments
of each projection commit (the feed is live; the numbers move only at a release), and an
``as_of`` heartbeat every few seconds in between, so the page can say how fresh it is.
Browsers reconnect to it by themselves.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import parse_qs, quote

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles

from services.analytics.answers import queries
from services.analytics.answers.coverage import View
from services.analytics.answers.models import Freshness
from services.analytics.answers.segments import BadSegment, Segment, parse_segment
from services.analytics.dashboard import group_page, session
from services.analytics.dashboard.limits import TooManyStreams
from services.analytics.dashboard.snapshot import drilldown, label_for, snapshot
from services.analytics.state import state_of
from services.analytics.store import reads, sessions
from shared.http import invalid
from shared.ids import PROCESS_ID_PATTERN
from shared.logging import get_logger
from shared.plan import Plan
from shared.profile import CATEGORIES

log = get_logger("engage.analytics.dashboard")
router = APIRouter(tags=["dashboard"], include_in_schema=False)
_HERE = resources.files("services.analytics.dashboard")
PROCESS = Query(None, pattern=PROCESS_ID_PATTERN, description="The process; default ENGAGE_PROCESS_ID.")
SEGMENT = Query(None, description="Only participants who meet every term, `dimension:category,...`.")
GROUP = Query(..., description="The group to drill into, one term: `dimension:category`.")
HEARTBEAT = 5.0  # seconds between freshness updates when nothing is committed
MIN_GAP = 0.25  # seconds between two snapshots to one page while the projection races ahead
FEED_LENGTH = 15
SECURITY_HEADERS = {
    # Nothing comes from anywhere but engage itself.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def static_files() -> StaticFiles:
    return StaticFiles(directory=str(_HERE.joinpath("static")))


def _template(name: str) -> Template:
    return Template(_HERE.joinpath("templates", name).read_text(encoding="utf-8"))


async def _signed_in(request: Request) -> session.Session | None:
    """The request's session: genuine, unexpired, its token still allowed, and not signed out."""
    found = session.read(request.app.state.tokens, request.cookies.get(session.COOKIE))
    if found is None or await sessions.signed_out(state_of(request).sources.pool, found.id):
        return None
    return found


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "unauthorized", "reason": "sign in at /dashboard/login"}, status_code=401, headers=SECURITY_HEADERS
    )


def _safe_next(target: str | None) -> str:
    """Only a path of this dashboard: a sign-in link must not send anyone elsewhere."""
    if (
        target
        and target.startswith("/dashboard")
        and not target.startswith("/dashboard/login")
        and "//" not in target
        and "\\" not in target
    ):
        return target
    return "/dashboard"


def _login_page(next_url: str, problem: str | None = None, status: int = 200) -> HTMLResponse:
    error = (
        f'<p class="problem" id="token-problem" role="alert"><strong>Token:</strong> {html.escape(problem)}</p>'
        if problem
        else ""
    )
    body = _template("login.html").substitute(
        next=html.escape(next_url),
        error=error,
        described='aria-describedby="token-problem" aria-invalid="true"' if problem else "",
    )
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/dashboard/login")
async def login_form(next: str | None = None) -> HTMLResponse:  # noqa: A002 - the query's name
    return _login_page(_safe_next(next))


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=5)
    presented = (form.get("token") or [""])[0].strip()
    next_url = _safe_next((form.get("next") or [""])[0] or None)
    if not presented:
        return _login_page(next_url, "is required: paste the coordinator token you were given", 422)
    throttle = state_of(request).sign_ins
    wait = throttle.wait(_client(request))
    if wait:
        log.warning("dashboard_sign_in_throttled", retry_in=wait)
        page = _login_page(next_url, f"too many refused tries from here: try again in {wait} s", 429)
        page.headers["Retry-After"] = str(wait)
        return page
    name = session.token_name(request.app.state.tokens, presented)
    if name is None:
        throttle.failed(_client(request))
        log.info("dashboard_sign_in_refused")
        return _login_page(next_url, "is not recognised, or may not open the dashboard", 401)
    log.info("dashboard_signed_in", token_name=name)
    response = RedirectResponse(next_url, status_code=303, headers=SECURITY_HEADERS)
    response.set_cookie(
        session.COOKIE,
        session.issue(request.app.state.tokens, name),
        max_age=session.LIFETIME,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/dashboard/logout")
async def logout(request: Request) -> RedirectResponse:
    """Sign out: the session ends on the server too, so a copy of its cookie stops working."""
    found = await _signed_in(request)
    if found is not None:
        await sessions.sign_out(state_of(request).sources.pool, found.id, datetime.fromtimestamp(found.expires, UTC))
        log.info("dashboard_signed_out", token_name=found.name)
    response = RedirectResponse("/dashboard/login", status_code=303, headers=SECURITY_HEADERS)
    response.delete_cookie(session.COOKIE, path="/")
    return response


def _choices(plans: Mapping[str, Plan], process: str, segment: str | None) -> tuple[str, str]:
    """<option>s for the process and segment pickers."""
    processes = "".join(
        f'<option value="{html.escape(pid)}"{" selected" if pid == process else ""}>{html.escape(p.name)}</option>'
        for pid, p in plans.items()
    )
    plan = plans.get(process)
    groups = ['<option value="">Everyone</option>']
    for key, dim in plan.dimensions.items() if plan else ():
        if dim.derived or key not in CATEGORIES:
            continue
        opts = "".join(
            f'<option value="{key}:{code}"{" selected" if segment == f"{key}:{code}" else ""}>'
            f"{html.escape(label_for(key, cat.label))}</option>"
            for code, cat in dim.categories.items()
            if code in CATEGORIES[key]
        )
        groups.append(f'<optgroup label="{html.escape(dim.label)}">{opts}</optgroup>')
    return processes, "".join(groups)


def _process(request: Request, process_id: str | None) -> str:
    src = state_of(request).sources
    process, plan = src.process(process_id)
    if plan is None:
        raise invalid("process_id", f"{process!r} has no plan here (one of: {', '.join(src.plans)})")
    return process


@router.get("/dashboard", response_class=HTMLResponse)
async def page(request: Request, process_id: str | None = PROCESS, segment: str | None = SEGMENT) -> Response:
    if await _signed_in(request) is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303)
    src = state_of(request).sources
    process = _process(request, process_id)
    _segment(src.plans.get(process), segment)  # a bad segment is a 422 now
    processes, segments = _choices(src.plans, process, segment)
    body = _template("dashboard.html").substitute(
        process_name=html.escape(src.plans[process].name),
        processes=processes,
        segments=segments,
        k=src.settings.small_cell_k,
        note=html.escape(
            f"Numbers are rounded to multiples of {src.settings.small_cell_k} and move once at least "
            f"{src.settings.every} participants have changed."
        ),
    )
    return HTMLResponse(body, headers=SECURITY_HEADERS)


def _segment(plan: Plan | None, segment: str | None) -> Segment | None:
    try:
        return parse_segment(plan, segment)
    except BadSegment as exc:
        raise invalid("segment", str(exc)) from None


def _view(request: Request) -> View:
    return state_of(request).sources.view(suppressed=True)  # always: this is the coordinators' page


async def build_snapshot(request: Request, process: str, segment: str | None) -> dict[str, Any]:
    """The page's numbers: the segment's (or the whole process's), on the whole process's grid of
    channels and weeks, with the whole process's days of outreach."""
    src = state_of(request).sources
    view = _view(request)
    seg = _segment(src.plans.get(process), segment)
    key = seg.key if seg else None
    whole = await queries.coverage_now(src, process, None, view)
    whole_weeks = await queries.over_time(src, process, "week", view)
    body = await queries.coverage_now(src, process, key, view) if seg else whole
    weeks = await queries.over_time(src, process, "week", view, key) if seg else whole_weeks
    daily = await queries.over_time(src, process, "day", view)
    feed = await reads.recent_activity(src.pool, process, FEED_LENGTH)
    return snapshot(
        body,
        weeks.periods,
        feed,
        [date.fromisoformat(p.period) for p in daily.periods],
        src.plans.get(process),
        tz=src.settings.tz,
        whole=whole,
        whole_periods=whole_weeks.periods,
    )


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z)


@router.get("/dashboard/snapshot")
async def get_snapshot(request: Request, process_id: str | None = PROCESS, segment: str | None = SEGMENT) -> Response:
    """The dashboard's numbers once, as the stream sends them."""
    if await _signed_in(request) is None:
        return _unauthorized()
    snap = await build_snapshot(request, _process(request, process_id), segment)
    return Response(_json(snap), media_type="application/json", headers=SECURITY_HEADERS)


@router.get("/dashboard/stream")
async def stream(request: Request, process_id: str | None = PROCESS, segment: str | None = SEGMENT) -> Response:
    """Server-sent events: ``snapshot`` now and after each commit, ``as_of`` heartbeats between."""
    signed_in = await _signed_in(request)
    if signed_in is None:
        return _unauthorized()
    process = _process(request, process_id)
    pulse = state_of(request).projector.pulse
    # The beat and the projection are read before the snapshot is built: a commit in between
    # then makes another one.
    seen = pulse.count
    projected = (await state_of(request).sources.current()).sequence
    first = await build_snapshot(request, process, segment)  # a bad segment is a 422 before streaming
    slots = state_of(request).streams
    try:
        slots.take(signed_in.id)
    except TooManyStreams as exc:
        log.warning("dashboard_stream_refused", open=slots.open())
        return JSONResponse(
            {"error": "too_many", "reason": exc.reason},
            status_code=429,
            headers={**SECURITY_HEADERS, "Retry-After": "5"},
        )

    async def events() -> AsyncIterator[bytes]:
        try:
            async for chunk in _events(request, process, segment, (seen, projected), first):
                yield chunk
        finally:
            slots.give_back(signed_in.id)

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    )


async def _release_now(request: Request, process: str) -> Freshness:
    """How fresh the coordinators' numbers are: the latest release (read forward from the log first)."""
    src = state_of(request).sources
    released, _ = await src.released(process, None, src.plans.get(process))
    return await src.freshness(released.counts.sequence, released.counts.projected_at)


async def _events(
    request: Request, process: str, segment: str | None, seen: tuple[int, int], first: dict[str, Any]
) -> AsyncIterator[bytes]:
    """The stream's events: the first snapshot, then a new one after each commit, heartbeats between.

    A snapshot carries the release its numbers come from and the live feed, so a heartbeat
    turns into a snapshot when either moved without a beat reaching us (a new release, or
    another projector's commit)."""
    src = state_of(request).sources
    pulse = state_of(request).projector.pulse
    (beat, projected), released = seen, first["as_of"]["sequence"]
    yield b"retry: 1000\n\n"  # reconnect a second after a drop (an analytics restart)
    yield b"event: snapshot\ndata: " + _json(first) + b"\n\n"
    while True:
        now = await pulse.wait_after(beat, HEARTBEAT)
        if await _signed_in(request) is None:
            yield b"event: signed-out\ndata: {}\n\n"
            return
        current = (await src.current()).sequence
        if now == beat:  # nothing committed for a while: say how fresh the numbers are
            fresh = await _release_now(request, process)
            if fresh.sequence == released and current == projected:
                yield b"event: as_of\ndata: " + _json(fresh.model_dump()) + b"\n\n"
                continue
        beat, projected = now, current
        snap = await build_snapshot(request, process, segment)
        released = snap["as_of"]["sequence"]
        yield b"event: snapshot\ndata: " + _json(snap) + b"\n\n"
        await asyncio.sleep(MIN_GAP)


# ---- a group's drill-down ----------------------------------------------------------------


def _group(plan: Plan | None, group: str) -> tuple[str, str]:
    """The group's one term, or a 422 naming ``group``."""
    try:
        parsed = parse_segment(plan, group)
    except BadSegment as exc:
        raise invalid("group", str(exc)) from None
    if parsed is None or len(parsed.terms) != 1:
        raise invalid("group", "is one term like gender:non_binary, not several")
    (term,) = parsed.terms
    return term.dimension, term.category


async def build_drilldown(request: Request, process: str, group: str, segment: str | None) -> dict[str, Any]:
    """A group's drill-down (within the page's segment, if any), from the coordinators' rounded answers."""
    src = state_of(request).sources
    view = _view(request)
    plan = src.plans.get(process)
    dimension, category = _group(plan, group)
    within = _segment(plan, segment)
    terms = f"{dimension}:{category}" + (f",{within.key}" if within else "")
    try:
        drilled = parse_segment(plan, terms)
    except BadSegment as exc:
        raise invalid("segment", f"with the group: {exc}") from None
    assert drilled is not None  # never None: it has the group's term
    whole = await queries.coverage_now(src, process, None, view)
    whole_weeks = await queries.over_time(src, process, "week", view)
    page_answer = await queries.coverage_now(src, process, within.key, view) if within else whole
    body = await queries.coverage_now(src, process, drilled.key, view)
    weeks = await queries.over_time(src, process, "week", view, drilled.key)
    return drilldown(
        body,
        weeks.periods,
        plan,
        dimension=dimension,
        category=category,
        card=page_answer.row(dimension, category),
        within=page_answer.segment,
        whole=whole,
        whole_weeks=whole_weeks.periods,
    )


@router.get("/dashboard/group", response_class=HTMLResponse)
async def group_view(
    request: Request, group: str = GROUP, process_id: str | None = PROCESS, segment: str | None = SEGMENT
) -> Response:
    """One group's drill-down: the channels and regions that reached it, and the weeks it was reached in."""
    if await _signed_in(request) is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/dashboard/login?next={quote(target)}", status_code=303)
    drill = await build_drilldown(request, _process(request, process_id), group, segment)
    return HTMLResponse(group_page.render(drill, _template("group.html")), headers=SECURITY_HEADERS)


@router.get("/dashboard/group/data")
async def group_data(
    request: Request, group: str = GROUP, process_id: str | None = PROCESS, segment: str | None = SEGMENT
) -> Response:
    """The drill-down's numbers, as JSON."""
    if await _signed_in(request) is None:
        return _unauthorized()
    drill = await build_drilldown(request, _process(request, process_id), group, segment)
    return Response(_json(drill), media_type="application/json", headers=SECURITY_HEADERS)
