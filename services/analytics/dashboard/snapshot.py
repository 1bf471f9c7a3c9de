"""What the coordinators' dashboard shows, built from the suppressed coverage view. Pure.

Every number in it comes from coverage and timeline answers made for coordinators, so
small counts are already "<k" (or "suppressed") before they get here. This module only
chooses and labels: the headline tiles, the under-reached communities, a row per
category, participation per week by channel, and the feed. It drops what the page does
not draw (intervals, "alone" counts), so the page carries no more than it shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, tzinfo
from typing import Any

from services.analytics.answers.models import CategoryRow, CoverageAnswer, Period
from services.analytics.projection.activity import LABELS as ACTIVITY_LABELS
from shared.plan import Plan

CHANNEL_LABELS = {
    "interview_in_person": "Interview in person",
    "interview_phone": "Interview by phone",
    "small_group_interview": "Small-group interview",
    "art_of_hosting": "Art-of-Hosting event",
    "small_group_meeting": "Small-group meeting",
    "survey": "Anonymous survey",
    "advisory": "Advisory group",
}
# The row fields the page draws; everything else in a coverage row stays behind.
ROW_FIELDS = ("category", "label", "count", "share", "target", "ratio", "status", "needed", "needed_is_lower_bound")


def humanize(code: str) -> str:
    return code.replace("_", " ").capitalize()


def days_of_outreach(days: Sequence[date]) -> int | None:
    """Calendar days from the first day with activity to the last, both counted."""
    return (max(days) - min(days)).days + 1 if days else None


def _share_of(body: CoverageAnswer, dimension: str, category: str) -> float | None:
    row = body.row(dimension, category)
    return row.share if row else None


def _row(row: CategoryRow) -> dict[str, Any]:
    out = row.model_dump(mode="json", include=set(ROW_FIELDS))
    if out["target"] is not None:
        out["target"] = {k: v for k, v in out["target"].items() if v is not None}
    return out


def feed_item(row: Mapping[str, Any], plan: Plan | None) -> dict[str, Any]:
    """One feed line: "Interview completed · Northeast", and when."""
    region = row["region"]
    return {
        "kind": row["kind"],
        "label": ACTIVITY_LABELS.get(row["kind"], humanize(row["kind"])),
        "channel": CHANNEL_LABELS.get(row["channel"]) if row["channel"] else None,
        "region": (plan.label_of("region", region) if plan else humanize(region)) if region else None,
        "topic": humanize(row["topic"]) if row["topic"] else None,
        "occurred_at": row["occurred_at"],
        "recorded_at": row["recorded_at"],
    }


def over_time(periods: Sequence[Period]) -> dict[str, Any]:
    """Engagements per week and channel, as the chart draws them (suppressed cells stay "<k")."""
    order = list(CHANNEL_LABELS)
    channels = sorted(
        {c for p in periods for c in p.engagements}, key=lambda c: (order.index(c) if c in order else len(order), c)
    )
    return {
        "by": "week",
        "channels": [{"channel": c, "label": CHANNEL_LABELS.get(c, humanize(c))} for c in channels],
        "periods": [{"period": p.period, "engagements": p.engagements, "total": p.total_engagements} for p in periods],
    }


def snapshot(
    body: CoverageAnswer,
    periods: Sequence[Period],
    feed: Sequence[Mapping[str, Any]],
    days: Sequence[date],
    plan: Plan | None,
    *,
    k: int,
    behind_seconds: float | None,
    tz: tzinfo,
) -> dict[str, Any]:
    """The dashboard's whole state for one process (and segment), for coordinators."""
    as_of = body.as_of.model_dump()
    as_of["behind_seconds"] = behind_seconds
    return {
        "process_id": body.process_id,
        "process_name": plan.name if plan else body.process_id,
        "segment": body.segment.model_dump() if body.segment else None,
        "k": k,
        "as_of": as_of,
        "tiles": {
            "participants": body.participants,
            "engagements": body.engagements,
            "lived_experience_share": _share_of(body, "lived_experience", "yes"),
            "days_of_outreach": days_of_outreach(days),
            "first_day": min(days).isoformat() if days else None,
            "last_day": max(days).isoformat() if days else None,
        },
        "engagements_by_channel": [
            {"channel": c, "label": CHANNEL_LABELS.get(c, humanize(c)), "engagements": n}
            for c, n in body.engagements_by_channel.items()
        ],
        "under_reached": [
            {"dimension": u.dimension, "dimension_label": u.dimension_label, **_row(u)} for u in body.under_reached
        ],
        "dimensions": [
            {
                "dimension": d.dimension,
                "label": d.label,
                "multi_select": d.multi_select,
                "derived": d.derived,
                "answered": d.answered,
                "declined": d.declined,
                "not_answered": d.not_answered,
                "categories": [_row(r) for r in d.categories],
            }
            for d in body.dimensions
        ],
        "over_time": over_time(periods),
        "feed": [feed_item(row, plan) for row in feed],
        "timezone": getattr(tz, "key", str(tz)),
    }
