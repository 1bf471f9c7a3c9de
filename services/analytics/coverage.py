"""Coverage: who has been heard from, per dimension and category. Pure functions.

Shares are of the participants who answered the question with a category ("declined"
is reported as its own count and is not in the denominator), so a multi-select
dimension's shares can add up past 100%. Percentages round the way a report does:
one decimal, half up (90 of 288 is 31.3%). For coordinators, counts from 1 to k-1 are
shown as "<k" and their shares withheld; analysts see every number.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from services.analytics.projection import ANSWERED
from shared.profile import DECLINED, DIMENSIONS


def percent(count: int, of: int) -> float | None:
    """``count`` as a percentage of ``of``, one decimal, half up."""
    if of <= 0:
        return None
    return float((Decimal(count) * 100 / Decimal(of)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def suppress(count: int, k: int) -> int | str:
    return f"<{k}" if 0 < count < k else count


def coverage(raw: dict[str, Any], k: int, suppressed: bool) -> dict[str, Any]:
    """Shape the raw counts of one process into the coverage answer."""
    show = (lambda n: suppress(n, k)) if suppressed else (lambda n: n)
    by_dim: dict[str, dict[str, int]] = defaultdict(dict)
    for dimension, category, n in raw["categories"]:
        by_dim[dimension][category] = n
    participants = raw["participants"]
    dimensions: dict[str, Any] = {}
    for dimension in DIMENSIONS:
        counts = by_dim.get(dimension, {})
        answered = counts.get(ANSWERED, 0)
        declined = counts.get(DECLINED, 0)
        rows = []
        for category, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
            if category in (ANSWERED, DECLINED):
                continue
            hidden = suppressed and 0 < n < k
            rows.append({"category": category, "count": show(n), "share": None if hidden else percent(n, answered)})
        dimensions[dimension] = {
            "answered": show(answered),
            "declined": show(declined),
            "not_answered": show(max(participants - answered - declined, 0)),
            "categories": rows,
        }
    return {
        "participants": show(participants),
        "engagements": show(raw["engagements"]),
        "engagements_by_channel": {c: show(n) for c, n in raw["channels"].items()},
        "first_event": raw["first_event"],
        "last_event": raw["last_event"],
        "dimensions": dimensions,
    }
