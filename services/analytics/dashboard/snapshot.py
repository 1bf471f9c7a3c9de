"""What the coordinators' dashboard shows, built from the coordinators' rounded answers. Pure.

Every number in it comes from coverage and over-time answers made for coordinators: a
release's counts, each rounded to a multiple of k, with a count rounded to 0 shown as
"<k". This module only chooses and labels: the headline tiles, the under-reached
communities (each with the key of its drill-down), a row per category, people and
engagements per channel, participation per week by channel, and the feed. It drops what
the page does not draw ("alone" counts and the like), so the page carries no more than it
shows.

A segment's cells are laid on the whole process's grid of weeks and channels, a missing
cell shown as "<k" (what a count of 0 rounds to). Otherwise a "<k" that appears only where
someone took part would say "at least one" where "<k" must mean "0 to k-1".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, tzinfo
from typing import Any, Literal

from services.analytics.answers.models import CategoryRow, CoverageAnswer, Period, SegmentInfo
from services.analytics.projection.activity import LABELS as ACTIVITY_LABELS
from shared.plan import Plan
from shared.status_events import Status

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
ROW_FIELDS = (
    "category",
    "label",
    "count",
    "share",
    "share_of_profiled",
    "target",
    "ratio",
    "status",
    "needed",
    "needed_is_lower_bound",
)
# Dimensions whose categories are words participants chose for themselves: shown in quotes, as theirs.
OWN_TERMS = frozenset({"experience_terms"})
REGION = "region"
Measure = Literal["engagements", "participants_reached"]


def humanize(code: str) -> str:
    return code.replace("_", " ").capitalize()


def quoted(label: str) -> str:
    """A participant's own term, in quotes (a label that already quotes the term stays as it is)."""
    return label if '"' in label or "“" in label else f"“{label}”"


def label_for(dimension: str, label: str) -> str:
    return quoted(label) if dimension in OWN_TERMS else label


def days_of_outreach(days: Sequence[date]) -> int | None:
    """Calendar days from the first day with activity to the last, both counted."""
    return (max(days) - min(days)).days + 1 if days else None


def small(k: int) -> str:
    """How a count rounded to 0 is shown."""
    return f"<{k}"


def _share_of(body: CoverageAnswer, dimension: str, category: str) -> float | None:
    row = body.row(dimension, category)
    return row.share if row else None


def _row(row: CategoryRow, dimension: str) -> dict[str, Any]:
    out = row.model_dump(mode="json", include=set(ROW_FIELDS))
    out["label"] = label_for(dimension, row.label)
    if out["target"] is not None:
        out["target"] = {k: v for k, v in out["target"].items() if v is not None}
    return out


def segment_view(segment: SegmentInfo | None) -> dict[str, Any] | None:
    """A segment's key and label, its participants' own terms in quotes."""
    if segment is None:
        return None
    return {
        "key": segment.key,
        "label": " and ".join(label_for(t.dimension, t.label) for t in segment.terms),
    }


def release_of(body: CoverageAnswer) -> dict[str, Any]:
    """The release the numbers come from: the rounding base, how many changed participants make
    a new release, the log sequence of this one (0: nothing released yet), and the page's note."""
    s = body.suppression
    every = s.release_every if s.release_every is not None else s.k
    where = f"release at sequence {s.release:,}" if s.release else "nothing released yet"
    note = (
        f"Numbers are rounded to multiples of {s.k} and move once at least {every} participants have changed ({where})."
        if s.applied
        else "Numbers are exact."
    )
    return {"rounded": s.applied, "k": s.k, "every": every, "sequence": s.release, "note": note}


def _people(n: int) -> str:
    return f"{n} more {'person' if n == 1 else 'people'}"


def status_text(row: CategoryRow) -> str:
    """A flagged row's status in words: never on track unless every value the numbers allow is."""
    needs = ""
    if row.needed is not None:
        needs = f"needs {'at least ' if row.needed_is_lower_bound else ''}{_people(row.needed)}"
    if row.status == Status.ATTENTION:
        return "May be below target — small numbers" + (f"; {needs}" if needs else "")
    words = {
        Status.UNDER_REACHED: "Under-reached",
        Status.WATCH: "Watch: below target, not yet clearly",
        Status.ON_TRACK: "On track",
        Status.NO_TARGET: "No target",
    }
    return words[row.status] + (f"; {needs}" if needs else "")


def reach_text(row: CategoryRow, k: int) -> str:
    """How many of the group have been heard from, as the rounded numbers say it (with the ratio
    only where every value they allow agrees on the status: elsewhere it would reassure)."""
    if not isinstance(row.count, int):
        return f"fewer than {k} people so far"
    people = f"about {row.count:,} people so far"
    if row.ratio is None or row.status == Status.ATTENTION:
        return people
    return f"{people}, about {round(100 * row.ratio)}% of its target"


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


def _ordered(channels: Iterable[str]) -> list[str]:
    order = list(CHANNEL_LABELS)
    return sorted(set(channels), key=lambda c: (order.index(c) if c in order else len(order), c))


def channels_of(body: CoverageAnswer) -> list[str]:
    """The channels an answer has anyone or any engagement in, in the page's order."""
    return _ordered([*body.people_by_channel, *body.engagements_by_channel])


def channel_rows(body: CoverageAnswer, grid: Iterable[str], k: int) -> list[dict[str, Any]]:
    """People and engagements per channel: every channel of ``grid`` (the whole process's), and any other."""
    return [
        {
            "channel": c,
            "label": CHANNEL_LABELS.get(c, humanize(c)),
            "participants": body.people_by_channel.get(c, small(k)),
            "engagements": body.engagements_by_channel.get(c, small(k)),
        }
        for c in _ordered([*grid, *channels_of(body)])
    ]


def over_time(
    periods: Sequence[Period], k: int, grid: Sequence[Period] | None = None, measure: Measure = "engagements"
) -> dict[str, Any]:
    """One measure per week and channel, as the chart and tables draw it, on ``grid``'s weeks and
    channels (the whole process's) where a cell of ``periods`` is missing."""
    grid = periods if grid is None else grid

    def cells(p: Period) -> Mapping[str, int | str]:
        return p.engagements if measure == "engagements" else p.participants_reached

    def total(p: Period) -> int | str:
        return p.total_engagements if measure == "engagements" else p.total_participants_reached

    own = {p.period: p for p in periods}
    channels = _ordered(c for p in [*grid, *periods] for c in (*p.engagements, *p.participants_reached))
    rows = []
    for period in sorted({p.period for p in grid} | set(own)):
        found = own.get(period)
        values = cells(found) if found else {}
        rows.append(
            {
                "period": period,
                "by_channel": {c: values.get(c, small(k)) for c in channels},
                "total": total(found) if found else small(k),
            }
        )
    return {
        "by": "week",
        "measure": measure,
        "channels": [{"channel": c, "label": CHANNEL_LABELS.get(c, humanize(c))} for c in channels],
        "periods": rows,
    }


def group_key(dimension: str, category: str) -> str:
    """The drill-down of a category: the segment of its participants."""
    return f"{dimension}:{category}"


def snapshot(
    body: CoverageAnswer,
    periods: Sequence[Period],
    feed: Sequence[Mapping[str, Any]],
    days: Sequence[date],
    plan: Plan | None,
    *,
    tz: tzinfo,
    whole: CoverageAnswer | None = None,
    whole_periods: Sequence[Period] | None = None,
) -> dict[str, Any]:
    """The dashboard's whole state for one process (and segment), for coordinators.

    ``whole`` and ``whole_periods`` are the whole process's answer and weeks, the grid a
    segment's channels and weeks are shown on (the same as ``body`` and ``periods`` without
    a segment). ``days`` are the whole process's days with activity."""
    k = body.suppression.k
    return {
        "process_id": body.process_id,
        "process_name": plan.name if plan else body.process_id,
        "segment": segment_view(body.segment),
        "k": k,
        "release": release_of(body),
        "as_of": body.as_of.model_dump(),
        "tiles": {
            "participants": body.participants,
            "engagements": body.engagements,
            "lived_experience_share": _share_of(body, "lived_experience", "yes"),
            "days_of_outreach": days_of_outreach(days),
            "first_day": min(days).isoformat() if days else None,
            "last_day": max(days).isoformat() if days else None,
        },
        "channels": channel_rows(body, channels_of(whole or body), k),
        "under_reached": [
            {
                "dimension": u.dimension,
                "dimension_label": u.dimension_label,
                "group": group_key(u.dimension, u.category),
                **_row(u, u.dimension),
                "status_text": status_text(u),
                "reach_text": reach_text(u, k),
            }
            for u in body.under_reached
        ],
        "dimensions": [
            {
                "dimension": d.dimension,
                "label": d.label,
                "own_terms": d.dimension in OWN_TERMS,
                "multi_select": d.multi_select,
                "derived": d.derived,
                "answered": d.answered,
                "declined": d.declined,
                "not_answered": d.not_answered,
                "categories": [_row(r, d.dimension) for r in d.categories],
            }
            for d in body.dimensions
        ],
        "over_time": over_time(periods, k, whole_periods),
        "feed": [feed_item(row, plan) for row in feed],
        "timezone": getattr(tz, "key", str(tz)),
    }


def drilldown(
    body: CoverageAnswer,
    weeks: Sequence[Period],
    plan: Plan | None,
    *,
    dimension: str,
    category: str,
    card: CategoryRow | None,
    within: SegmentInfo | None,
    whole: CoverageAnswer,
    whole_weeks: Sequence[Period],
) -> dict[str, Any]:
    """One group's drill-down: who of it has been reached, through which channels, in which
    regions, and in which weeks.

    ``body`` and ``weeks`` are the coordinators' (rounded) answers for the group's segment
    (within the page's segment ``within``, if any); ``card`` is the group's row on the page it
    was opened from (its status); ``whole`` and ``whole_weeks`` are the whole process's answers,
    the grid of channels and weeks every cell is shown on."""
    k = body.suppression.k
    spec = plan.dimensions.get(dimension) if plan else None
    regions = next((d for d in body.dimensions if d.dimension == REGION), None)
    label = plan.label_of(dimension, category) if plan else category
    return {
        "process_id": body.process_id,
        "process_name": plan.name if plan else body.process_id,
        "group": {
            "key": group_key(dimension, category),
            "dimension": dimension,
            "category": category,
            "label": label_for(dimension, label),
            "dimension_label": spec.label if spec else humanize(dimension),
        },
        "within": segment_view(within),
        "segment": segment_view(body.segment),
        "k": k,
        "release": release_of(body),
        "as_of": body.as_of.model_dump(),
        "card": None
        if card is None
        else {**_row(card, dimension), "status_text": status_text(card), "reach_text": reach_text(card, k)},
        "participants": body.participants,
        "engagements": body.engagements,
        "channels": channel_rows(body, channels_of(whole), k),
        "regions": None
        if regions is None
        else {
            "label": regions.label,
            "answered": regions.answered,
            "declined": regions.declined,
            "not_answered": regions.not_answered,
            "categories": [
                {"category": r.category, "label": r.label, "count": r.count, "share": r.share}
                for r in regions.categories
            ],
        },
        "over_time": over_time(weeks, k, whole_weeks, "participants_reached"),
    }
