"""An alert's words: the group, its status, its ratio, how many more are needed, and a link.

Alerts reach coordinators, so their numbers are the coordinators' numbers: the ratio is the
one the coordinators' rounded answer shows (worked out of counts rounded to base k, none for a
"<k"), and "needed" is rounded up to a multiple of k ("about 10 more"), so no alert carries a
count from 1 to k-1. Never a participant reference, never an answer.
"""

from __future__ import annotations

import math
from urllib.parse import urlencode

from services.analytics.answers.models import CategoryRow
from shared.status_events import CommunityStatusChanged, Status

WORDS = {
    Status.UNDER_REACHED: "is under-reached",
    Status.WATCH: "is on watch (below the threshold, not yet significant)",
    Status.ON_TRACK: "is reached (on track)",
}


def shown_needed(needed: int | None, k: int) -> int | None:
    """``needed`` rounded up to a multiple of k: never a number from 1 to k-1."""
    if not needed:
        return None
    return k * math.ceil(needed / k)


def group_link(public_url: str, event: CommunityStatusChanged) -> str:
    """The group's drill-down on the coordinators' dashboard."""
    query = urlencode({"group": f"{event.dimension}:{event.category}", "process_id": event.process_id}, safe=":")
    return f"{public_url.rstrip('/')}/dashboard/group?{query}"


def alert_text(event: CommunityStatusChanged, row: CategoryRow | None, k: int, public_url: str) -> str:
    """The alert, in words; ``row`` is the category as coordinators see it now (None: not shown)."""
    status = WORDS.get(event.status, str(event.status))
    lines = [f"{event.label} {status}."]
    ratio = row.ratio if row is not None else None
    if ratio is not None:
        lines.append(f"Representation ratio: {ratio:.2f} of its target (as the dashboard shows it, rounded).")
    else:
        lines.append(f"Representation ratio: not shown (fewer than {k} participants, or no rounded figure yet).")
    needed = shown_needed(event.needed, k) if event.status is not Status.ON_TRACK else None
    if needed:
        lines.append(f"About {needed} more participants needed to reach the threshold (rounded up to base {k}).")
    lines.append(f"Details: {group_link(public_url, event)}")
    return "\n".join(lines)


def subject(event: CommunityStatusChanged) -> str:
    return f"engage: {event.label} {WORDS.get(event.status, str(event.status)).split(' (')[0]}"
