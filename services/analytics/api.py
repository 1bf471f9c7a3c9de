"""Analytics' HTTP surface: ``GET /coverage``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from services.analytics import store
from services.analytics.coverage import coverage
from shared.http import require_scope

router = APIRouter()


@router.get("/coverage", tags=["coverage"])
async def get_coverage(
    request: Request,
    process_id: str | None = Query(None, pattern=r"^[a-z0-9][a-z0-9-]{1,39}$",
                                   description="The process; defaults to ENGAGE_PROCESS_ID."),
    token: str = Depends(require_scope("coverage:read")),
) -> dict[str, Any]:
    """Participation so far: totals, engagements by channel, and per dimension the count and
    share of each category (shares of those who answered).

    Tokens with the `analyst:read` scope see every count; others (coordinators) see
    counts from 1 to k-1 as "<k".
    """
    state = request.app.state
    settings = state.settings
    process = process_id or settings.process_id
    analyst = "analyst:read" in state.tokens[token].scopes or "admin" in state.tokens[token].scopes
    raw = await store.coverage_rows(state.pool, process, settings.consumer_name)
    body = coverage(raw, settings.small_cell_k, suppressed=not analyst)
    checkpoint = raw["sequence"]
    info = await state.js.stream_info(settings.stream_name)
    last = info.state.last_seq or 0
    return {
        "process_id": process,
        "as_of": {
            "sequence": checkpoint,
            "stream_sequence": last,
            "behind": max(last - checkpoint, 0),
            "at": datetime.now(UTC),
        },
        "suppression": {"k": settings.small_cell_k, "applied": not analyst},
        **body,
    }
