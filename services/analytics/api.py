"""Analytics' HTTP surface: coverage against the plan, by segment, and over time.

Every answer says which stream sequence it reflects and how far behind the stream it is.
Tokens with the `analyst:read` scope see every number; coordinators (`coverage:read`)
see small counts suppressed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from services.analytics import asof, store
from services.analytics.coverage import View, coverage
from services.analytics.segments import segment_counts
from services.analytics.status import derived_rules
from services.analytics.timeline import timeline
from shared.http import invalid, require_scope
from shared.plan import Plan
from shared.profile import CATEGORIES

router = APIRouter(tags=["coverage"])
PROCESS = Query(None, pattern=r"^[a-z0-9][a-z0-9-]{1,39}$", description="The process; default ENGAGE_PROCESS_ID.")


def _view(request: Request, token: str) -> View:
    scopes = request.app.state.tokens[token].scopes
    analyst = "analyst:read" in scopes or "admin" in scopes
    return View(request.app.state.settings.small_cell_k, suppressed=not analyst)


async def as_of(state: Any, sequence: int, projected_at: datetime | None) -> dict[str, Any]:
    """Which stream sequence an answer reflects, the stream's last, and how far behind that is."""
    info = await state.js.stream_info(state.settings.stream_name)
    last = info.state.last_seq or 0
    return {"sequence": sequence, "stream_sequence": last, "behind": max(last - sequence, 0),
            "projected_at": projected_at, "answered_at": datetime.now(UTC)}


def parse_segment(plan: Plan | None, segment: str | None) -> tuple[str, str] | None:
    if segment is None:
        return None
    dimension, _, category = segment.partition(":")
    if plan is not None and dimension in plan.dimensions and plan.dimensions[dimension].derived:
        raise invalid("segment", f"{dimension!r} is derived; segment by one of the answered questions")
    if dimension not in CATEGORIES:
        raise invalid("segment", f"{dimension!r} is not a dimension (one of: {', '.join(CATEGORIES)})")
    if category not in CATEGORIES[dimension]:
        raise invalid("segment", f"{category!r} is not a {dimension} category "
                                 f"(one of: {', '.join(CATEGORIES[dimension])})")
    return dimension, category


@router.get("/coverage")
async def get_coverage(
    request: Request,
    process_id: str | None = PROCESS,
    segment: str | None = Query(None, description="Only participants in one category of another dimension, "
                                "as `dimension:category`, e.g. `lived_experience:yes`."),
    as_of_time: str | None = Query(None, alias="as_of", description="The numbers as they stood at this moment "
                                   "(e.g. `2018-04-01T00:00Z`), replayed from the log; withdrawals always apply."),
    token: str = Depends(require_scope("coverage:read")),
) -> dict[str, Any]:
    """Who has been heard from: totals, engagements by channel, and per dimension each category's
    count, share (of those who answered), Wilson 95% interval, target, representation ratio,
    status and, for under-reached communities, how many more people it takes. Under-reached
    communities are listed first, in `under_reached`."""
    if as_of_time is not None:
        try:
            moment = asof.parse_moment(as_of_time)
        except ValueError as exc:
            raise invalid("as_of", str(exc)) from None
        return await coverage_as_of(request.app.state, process_id, segment, _view(request, token), moment)
    return await coverage_answer(request.app.state, process_id, segment, _view(request, token))


async def coverage_as_of(state: Any, process_id: str | None, segment: str | None, view: View,
                         moment: datetime) -> dict[str, Any]:
    """The same answer as it stood at ``moment``, replayed from the log (see ``asof``)."""
    settings = state.settings
    process = process_id or settings.process_id
    plan: Plan | None = state.plans.get(process)
    seg = parse_segment(plan, segment)
    result = await asof.coverage_counts(state.projector.nc, settings.stream_name, process, moment, settings.tz,
                                        plan, seg)
    return _answer(process, plan, seg, asof.as_of_block(result), result.counts, view)


def _answer(process: str, plan: Plan | None, seg: tuple[str, str] | None, as_of_block: dict[str, Any],
            counts: Any, view: View) -> dict[str, Any]:
    """The coverage answer's shape, whether read from the read models or replayed as of a moment."""
    return {
        "process_id": process,
        "plan": {"name": plan.name, "threshold": plan.threshold} if plan else None,
        "segment": {"dimension": seg[0], "category": seg[1],
                    "label": plan.label_of(*seg) if plan else seg[1]} if seg else None,
        "as_of": as_of_block,
        "suppression": {"k": view.k, "applied": view.suppressed},
        **coverage(counts, plan, view),
    }


async def coverage_answer(state: Any, process_id: str | None, segment: str | None, view: View) -> dict[str, Any]:
    """The coverage answer for a process (default ENGAGE_PROCESS_ID) and an optional segment."""
    settings = state.settings
    process = process_id or settings.process_id
    plan: Plan | None = state.plans.get(process)
    seg = parse_segment(plan, segment)
    if seg is None:
        counts = await store.counts(state.pool, process, settings.consumer_name, derived_rules(plan))
    else:
        counts = await segment_counts(state.pool, process, settings.consumer_name, *seg, plan)
    return _answer(process, plan, seg, await as_of(state, counts.sequence, counts.projected_at), counts, view)


@router.get("/coverage/over-time")
async def get_over_time(
    request: Request,
    process_id: str | None = PROCESS,
    by: Literal["day", "week"] = Query("week", description="Group by local day or by week (from Monday)."),
    token: str = Depends(require_scope("coverage:read")),
) -> dict[str, Any]:
    """Participation over time: per period and channel, engagements and participants first reached."""
    state = request.app.state
    settings = state.settings
    process = process_id or settings.process_id
    sequence, projected_at, rows = await store.daily(state.pool, process, settings.consumer_name)
    view = _view(request, token)
    return {
        "process_id": process,
        "by": by,
        "timezone": settings.timezone,
        "as_of": await as_of(state, sequence, projected_at),
        "suppression": {"k": view.k, "applied": view.suppressed},
        "periods": timeline(rows, by, view.k, view.suppressed),
    }
