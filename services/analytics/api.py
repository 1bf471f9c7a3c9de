"""Analytics' HTTP surface: coverage against the plan, by segment, as of a moment, and over time.

Every answer says which stream sequence it reflects and how far behind the stream it is.
Tokens with the `analyst:read` scope see every number, live, and may ask as of a moment;
coordinators (`coverage:read`) see every count rounded to base k, from the latest release
(``answers.release``). The answers themselves are made in ``answers.queries``.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request

from services.analytics.answers import asof, queries
from services.analytics.answers.coverage import View
from services.analytics.answers.models import CoverageAnswer, OverTimeAnswer
from services.analytics.answers.segments import BadSegment
from services.analytics.state import state_of
from shared.http import UnauthorizedError, error_responses, invalid, require_scope
from shared.ids import PROCESS_ID_PATTERN

router = APIRouter(tags=["coverage"])
PROCESS = Query(None, pattern=PROCESS_ID_PATTERN, description="The process; default ENGAGE_PROCESS_ID.")
SEGMENT = Query(
    None,
    max_length=400,
    description="Only participants who meet every term, comma-separated (at most 4): `dimension:category` "
    "(e.g. `lived_experience:yes`), `dimension:declined`, `dimension:not_answered`, a derived group "
    "(`group:category`) or `channel:<channel>`; e.g. `channel:advisory,lived_experience:yes`.",
)


def view_for(request: Request, token: str) -> View:
    """Analysts see every number; everyone else sees small counts suppressed."""
    scopes = request.app.state.tokens[token].scopes
    analyst = "analyst:read" in scopes or "admin" in scopes
    return state_of(request).sources.view(suppressed=not analyst)


@router.get("/coverage", response_model=CoverageAnswer, responses=error_responses(401, 403, 422))
async def get_coverage(
    request: Request,
    process_id: str | None = PROCESS,
    segment: str | None = SEGMENT,
    as_of_time: str | None = Query(
        None,
        alias="as_of",
        description="The numbers as they stood at this moment "
        "(e.g. `2018-04-01T00:00Z`), from the read models' dated counters; withdrawals always apply. Analysts only "
        "(`analyst:read`): two moments one arrival apart would show that person's answers.",
    ),
    token: str = Depends(require_scope("coverage:read")),
) -> CoverageAnswer:
    """Who has been heard from: totals, engagements by channel, and per dimension each category's
    count, share (of those who answered), Wilson 95% interval, target, representation ratio,
    status and, for under-reached communities, how many more people it takes. Under-reached
    communities are listed first, in `under_reached`."""
    src, view = state_of(request).sources, view_for(request, token)
    try:
        if as_of_time is None:
            return await queries.coverage_now(src, process_id, segment, view)
        if view.suppressed:
            raise UnauthorizedError(403, "as_of needs the analyst:read scope")
        try:
            moment = asof.parse_moment(as_of_time)
        except ValueError as exc:
            raise invalid("as_of", str(exc)) from None
        return await queries.coverage_as_of(src, process_id, segment, view, moment)
    except BadSegment as exc:
        raise invalid("segment", str(exc)) from None


@router.get("/coverage/over-time", response_model=OverTimeAnswer, responses=error_responses(401, 403, 422))
async def get_over_time(
    request: Request,
    process_id: str | None = PROCESS,
    by: Literal["day", "week"] = Query("week", description="Group by local day or by week (from Monday)."),
    segment: str | None = SEGMENT,
    token: str = Depends(require_scope("coverage:read")),
) -> OverTimeAnswer:
    """Participation over time: per period and channel, engagements and participants first reached."""
    try:
        return await queries.over_time(state_of(request).sources, process_id, by, view_for(request, token), segment)
    except BadSegment as exc:
        raise invalid("segment", str(exc)) from None
