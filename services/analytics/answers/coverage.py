"""Coverage: who has been heard from, per dimension and category, against the plan.

Pure: counts and the plan in, the answer out. Each category has two shares: of the
participants who answered the question (``share``; "declined" is its own count, outside
the denominator, so a multi-select dimension's shares can add up past 100%), and of
everyone who gave a profile (``share_of_profiled``, the 2018 report's base for regions).
A target's ``base`` in the plan says which one it is judged on. A derived dimension (the
mandated stakeholder groups) takes all participants as its denominator.

For coordinators every count is rounded to base k (``answers.suppression``): shares and
ratios are worked out from the rounded numbers, with no interval, and a status is one
every true value the rounded numbers allow agrees on. Where they disagree the status is
``attention`` (it may be below target) and the category is listed among the
under-reached, with the fewest more people any of those values needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.analytics.answers.models import (
    CategoryRow,
    CoverageAnswer,
    DimensionAnswer,
    Freshness,
    PlanInfo,
    Replayed,
    SegmentInfo,
    Suppression,
    Target,
    Term,
    UnderReached,
)
from services.analytics.answers.representation import Judgement, judge, percent, round_half_up
from services.analytics.answers.segments import Segment, term_label
from services.analytics.answers.suppression import Cell, bounds, round_to_base, show
from services.analytics.projection.counts import Counts
from services.analytics.projection.fold import ALONE, ANSWERED
from shared.events import Channel
from shared.plan import Dimension, Plan
from shared.plan import Target as PlanTarget
from shared.profile import CATEGORIES, DECLINED, DIMENSIONS, MULTI_SELECT
from shared.status_events import Status

Shown = int | str
CHANNELS = tuple(c.value for c in Channel)


@dataclass(frozen=True)
class View:
    """How to present: rounded for coordinators (base k, from a release), or exact for analysts."""

    k: int
    suppressed: bool
    release_every: int | None = None

    def suppression(self, release: int | None = None, number: int | None = None) -> Suppression:
        if not self.suppressed:
            return Suppression(k=self.k, applied=False, method="none")
        return Suppression(
            k=self.k,
            applied=True,
            method="rounded",
            release=release,
            release_number=number,
            release_every=self.release_every,
        )


class Shower:
    """Shows counts: exact, or rounded by their cells' keys."""

    def __init__(self, view: View, keys: Mapping[Cell, int] | None) -> None:
        if view.suppressed and keys is None:
            raise ValueError("rounded answers need the cells' keys")
        self.k, self.keys = view.k, keys if view.suppressed else None

    def __call__(self, cell: Cell, value: int) -> Shown:
        if self.keys is None:
            return value
        if value and cell not in self.keys:  # a key of 0 would always round down: never guess one
            raise KeyError(f"no key for the cell {cell}")
        return show(round_to_base(value, self.keys.get(cell, 0), self.k), self.k)

    def bounds(self, shown: Shown) -> tuple[int, int]:
        return bounds(shown, self.k, self.keys is not None)


def _dimensions(plan: Plan | None) -> Iterable[tuple[str, Dimension | None]]:
    if plan is not None:
        yield from plan.dimensions.items()
    else:
        yield from ((d, None) for d in DIMENSIONS)


def _codes(key: str, spec: Dimension | None, counts: Counts, rounded: bool) -> list[str]:
    """The plan's categories in its order, then any other category with participants; for
    coordinators every category the question has, so that a row's presence says nothing."""
    listed = list(spec.categories) if spec else list(CATEGORIES.get(key, ()))
    if rounded:
        seen = set() if spec and spec.derived else set(CATEGORIES.get(key, ()))
    else:
        seen = {c for (d, c) in counts.categories if d == key and c not in (ANSWERED, DECLINED)}
        seen = {c for c in seen if not c.startswith(ALONE)}
    return listed + sorted(seen - set(listed))


def judged(
    count: tuple[int, int], base: tuple[int, int], target: PlanTarget | None, threshold: float
) -> tuple[Judgement, bool]:
    """The judgement every (count, base) in the ranges agrees on, and whether they agree.

    A status only rises with the count and falls with the base, so the two corners decide it.
    Where they disagree the answer is ``attention``, needing the least any value below target
    needs (which is at the smallest base)."""

    def at(c: int, n: int) -> Judgement:
        return judge(
            min(c, n),  # a category never holds more than its base
            n,
            share=target.share if target else None,
            min_count=target.min_count if target else None,
            threshold=threshold,
        )

    best, worst = at(count[1], base[0]), at(count[0], base[1])
    exact = count[0] == count[1] and base[0] == base[1]
    if exact:
        return best, True
    if best.status is worst.status and best.status is not Status.UNDER_REACHED:
        return best, True
    needs = [j.needed for c in range(count[0], count[1] + 1) if (j := at(c, base[0])).needed]
    status = best.status if best.status is worst.status else Status.ATTENTION
    return Judgement(best.ratio, status, min(needs) if needs else None, None), False


def dimension_view(
    key: str, spec: Dimension | None, counts: Counts, plan: Plan | None, shower: Shower
) -> DimensionAnswer:
    """One dimension's rows."""
    cats = counts.categories
    derived = bool(spec and spec.derived)
    multi = spec.multi_select if spec else key in MULTI_SELECT
    answered = counts.participants if derived else cats.get((key, ANSWERED), 0)
    declined = 0 if derived else cats.get((key, DECLINED), 0)
    not_answered = 0 if derived else max(counts.participants - answered - declined, 0)
    shown_answered = shower(("participants",), answered) if derived else shower(("category", key, ANSWERED), answered)
    shown_profiled = shower(("profiled",), counts.profiled)
    rows = []
    for code in _codes(key, spec, counts, shower.keys is not None):
        count = cats.get((key, code), 0)
        shown = shower(("category", key, code), count)
        target = spec.categories[code].target if spec and code in spec.categories else None
        on_profiled = target is not None and target.base == "profiled" and not derived
        base_shown = shown_profiled if on_profiled else shown_answered
        judgement, exact = judged(
            shower.bounds(shown), shower.bounds(base_shown), target, plan.threshold if plan else 0.8
        )
        published = (count, counts.profiled if on_profiled else answered) if shower.keys is None else None
        if published is None:  # rounded: shares and ratios of the rounded numbers, none of a "<k"
            a_shown = shown_answered if isinstance(shown_answered, int) else 0
            p_shown = shown_profiled if isinstance(shown_profiled, int) else 0
            if isinstance(shown, int):
                share, of_profiled = percent(shown, a_shown), None if derived else percent(shown, p_shown)
                ratio = _ratio(shown, p_shown if on_profiled else a_shown, target)
            else:
                share = of_profiled = ratio = None
            interval = None
        else:
            share, of_profiled = percent(count, answered), None if derived else percent(count, counts.profiled)
            ratio = judgement.ratio
            interval = judgement.interval
        alone = cats.get((key, ALONE + code), 0) if multi and not derived else None
        rows.append(
            CategoryRow(
                category=code,
                label=plan.label_of(key, code) if plan else code,
                count=shown,
                alone=None if alone is None else shower(("category", key, ALONE + code), alone),
                share=share,
                share_of_profiled=of_profiled,
                interval=None
                if interval is None
                else (round_half_up(100 * interval[0], 1), round_half_up(100 * interval[1], 1)),
                target=_target(target),
                ratio=None if ratio is None else round_half_up(ratio, 2),
                status=judgement.status,
                needed=judgement.needed,
                needed_is_lower_bound=not exact and judgement.needed is not None,
            )
        )
    return DimensionAnswer(
        dimension=key,
        label=spec.label if spec else key,
        multi_select=multi,
        derived=derived,
        answered=shown_answered,
        declined=shower(("category", key, DECLINED), declined) if not derived else 0,
        not_answered=shower(("not_answered", key), not_answered) if not derived else 0,
        categories=rows,
    )


def _ratio(count: int, base: int, target: PlanTarget | None) -> float | None:
    if target is None:
        return None
    if target.share is not None:
        return None if base <= 0 else count / base / target.share
    assert target.min_count is not None  # a target has one or the other
    return count / target.min_count


def _target(target: PlanTarget | None) -> Target | None:
    if target is None:
        return None
    return Target(
        kind=target.kind,
        source=target.source,
        vintage=target.vintage,
        share=None if target.share is None else round_half_up(100 * target.share, 1),
        min_count=target.min_count,
        base=target.base,
    )


def coverage(
    counts: Counts,
    process_id: str,
    plan: Plan | None,
    view: View,
    freshness: Freshness | Replayed,
    segment: Segment | None = None,
    keys: Mapping[Cell, int] | None = None,
    release_number: int | None = None,
) -> CoverageAnswer:
    """The coverage answer for one process or segment: exact, or rounded by ``keys`` for coordinators."""
    shower = Shower(view, keys)
    # Coordinators get every channel, so that a channel's presence says nothing; analysts those used.
    channels = sorted(CHANNELS if view.suppressed else {*counts.channels, *counts.people_by_channel})
    dimensions = [dimension_view(key, spec, counts, plan, shower) for key, spec in _dimensions(plan)]
    flagged = (Status.UNDER_REACHED, Status.ATTENTION)
    under = sorted(
        (
            UnderReached(dimension=d.dimension, dimension_label=d.label, **c.model_dump())
            for d in dimensions
            for c in d.categories
            if c.status in flagged
        ),
        key=lambda c: (c.status is Status.ATTENTION, c.ratio if c.ratio is not None else -1, c.dimension, c.category),
    )
    return CoverageAnswer(
        process_id=process_id,
        plan=PlanInfo(name=plan.name, threshold=plan.threshold) if plan else None,
        segment=segment_info(segment, plan),
        as_of=freshness,
        suppression=view.suppression(counts.sequence, release_number) if view.suppressed else view.suppression(),
        participants=shower(("participants",), counts.participants),
        profiled=shower(("profiled",), counts.profiled),
        engagements=shower(("engagements",), counts.engagements),
        engagements_by_channel={c: shower(("engagements", c), counts.channels.get(c, 0)) for c in channels},
        people_by_channel={c: shower(("people", c), counts.people_by_channel.get(c, 0)) for c in channels},
        first_event=counts.first_event,
        last_event=counts.last_event,
        under_reached=under,
        dimensions=dimensions,
    )


def segment_info(segment: Segment | None, plan: Plan | None) -> SegmentInfo | None:
    if segment is None:
        return None
    return SegmentInfo(
        key=segment.key,
        label=segment.label(plan),
        terms=[Term(dimension=t.dimension, category=t.category, label=term_label(plan, t)) for t in segment.terms],
    )
