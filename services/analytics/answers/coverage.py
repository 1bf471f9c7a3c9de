"""Coverage: who has been heard from, per dimension and category, against the plan.

Pure: counts and the plan in, the answer out. Shares are of the participants who answered
the question with a category ("declined" is its own count, outside the denominator), so
a multi-select dimension's shares can add up past 100%. A derived dimension (the
mandated stakeholder groups) takes all participants as its denominator.

For coordinators every count from 1 to k-1 is shown as "<k", with complementary
suppression so that no hidden count can be worked out from a total and the cells shown
(see ``suppression``). A hidden cell's share, interval and ratio are withheld; its
status and "needed" are judged as if it held k-1 participants, so they say nothing a
coordinator could not work out from what is shown ("needed" is then a lower bound).
"""

from __future__ import annotations

from collections.abc import Iterable
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
    UnderReached,
)
from services.analytics.answers.representation import judge, percent, round_half_up
from services.analytics.answers.suppression import TOTAL, show, suppress_row
from services.analytics.projection.counts import Counts
from services.analytics.projection.fold import ALONE, ANSWERED
from shared.plan import Dimension, Plan
from shared.plan import Target as PlanTarget
from shared.profile import CATEGORIES, DECLINED, DIMENSIONS, MULTI_SELECT
from shared.status_events import Status


@dataclass(frozen=True)
class View:
    """How to present: suppressed for coordinators (k), or every number for analysts."""

    k: int
    suppressed: bool

    def hide(self, cells: dict[str, int], total: int | None) -> set[object]:
        return suppress_row(cells, total, self.k) if self.suppressed else set()

    @property
    def suppression(self) -> Suppression:
        return Suppression(k=self.k, applied=self.suppressed)


def _dimensions(plan: Plan | None) -> Iterable[tuple[str, Dimension | None]]:
    if plan is not None:
        yield from plan.dimensions.items()
    else:
        yield from ((d, None) for d in DIMENSIONS)


def _codes(key: str, spec: Dimension | None, counts: Counts) -> list[str]:
    """The plan's categories in its order, then any other category with participants."""
    listed = list(spec.categories) if spec else list(CATEGORIES.get(key, ()))
    seen = {c for (d, c) in counts.categories if d == key and c not in (ANSWERED, DECLINED) and not c.startswith(ALONE)}
    return listed + sorted(seen - set(listed))


def dimension_view(key: str, spec: Dimension | None, counts: Counts, plan: Plan | None, view: View) -> DimensionAnswer:
    cats = counts.categories
    derived = bool(spec and spec.derived)
    multi = spec.multi_select if spec else key in MULTI_SELECT
    answered = counts.participants if derived else cats.get((key, ANSWERED), 0)
    declined = 0 if derived else cats.get((key, DECLINED), 0)
    not_answered = 0 if derived else max(counts.participants - answered - declined, 0)
    codes = _codes(key, spec, counts)
    values = {c: cats.get((key, c), 0) for c in codes}

    head = {"answered": answered, "declined": declined, "not_answered": not_answered}
    # A derived dimension's "answered" is the participant total, hidden as the total is.
    head_hidden: set[object] = (
        view.hide(head, sum(head.values()))
        if not derived
        else {"answered"}
        if view.suppressed and 0 < answered < view.k
        else set()
    )
    hidden = view.hide(values, None if multi else answered)
    if TOTAL in hidden:
        head_hidden.add("answered")
    n_hidden = "answered" in head_hidden

    rows = []
    for code in codes:
        count, is_hidden = values[code], code in hidden or n_hidden
        target = spec.categories[code].target if spec and code in spec.categories else None
        judged = judge(
            min(view.k - 1, answered) if is_hidden else count,
            answered,
            share=target.share if target else None,
            min_count=target.min_count if target else None,
            threshold=plan.threshold if plan else 0.8,
        )
        alone = cats.get((key, ALONE + code), 0) if multi and not derived else None
        rows.append(
            CategoryRow(
                category=code,
                label=plan.label_of(key, code) if plan else code,
                count=show(count, is_hidden, view.k),
                alone=None if alone is None else show(alone, view.suppressed and 0 < alone < view.k, view.k),
                share=None if is_hidden else percent(count, answered),
                interval=None
                if is_hidden or judged.interval is None
                else (round_half_up(100 * judged.interval[0], 1), round_half_up(100 * judged.interval[1], 1)),
                target=_target(target),
                ratio=None if is_hidden or judged.ratio is None else round_half_up(judged.ratio, 2),
                status=judged.status,
                needed=judged.needed,
                needed_is_lower_bound=is_hidden and judged.needed is not None,
            )
        )
    return DimensionAnswer(
        dimension=key,
        label=spec.label if spec else key,
        multi_select=multi,
        derived=derived,
        answered=show(answered, "answered" in head_hidden, view.k),
        declined=show(declined, "declined" in head_hidden, view.k),
        not_answered=show(not_answered, "not_answered" in head_hidden, view.k),
        categories=rows,
    )


def _target(target: PlanTarget | None) -> Target | None:
    if target is None:
        return None
    return Target(
        kind=target.kind,
        source=target.source,
        vintage=target.vintage,
        share=None if target.share is None else round_half_up(100 * target.share, 1),
        min_count=target.min_count,
    )


def coverage(
    counts: Counts,
    process_id: str,
    plan: Plan | None,
    view: View,
    freshness: Freshness | Replayed,
    segment: tuple[str, str] | None = None,
) -> CoverageAnswer:
    """The coverage answer for one process or segment, whether read from the read models or replayed."""
    dimensions = [dimension_view(key, spec, counts, plan, view) for key, spec in _dimensions(plan)]
    under = sorted(
        (
            UnderReached(dimension=d.dimension, dimension_label=d.label, **c.model_dump())
            for d in dimensions
            for c in d.categories
            if c.status is Status.UNDER_REACHED
        ),
        key=lambda c: (c.ratio if c.ratio is not None else -1, c.dimension, c.category),
    )
    channel_hidden = view.hide(counts.channels, counts.engagements)
    small_total = view.suppressed and 0 < counts.participants < view.k
    return CoverageAnswer(
        process_id=process_id,
        plan=PlanInfo(name=plan.name, threshold=plan.threshold) if plan else None,
        segment=SegmentInfo(
            dimension=segment[0], category=segment[1], label=plan.label_of(*segment) if plan else segment[1]
        )
        if segment
        else None,
        as_of=freshness,
        suppression=view.suppression,
        participants=show(counts.participants, small_total, view.k),
        engagements=show(counts.engagements, view.suppressed and 0 < counts.engagements < view.k, view.k),
        engagements_by_channel={c: show(n, c in channel_hidden, view.k) for c, n in sorted(counts.channels.items())},
        first_event=counts.first_event,
        last_event=counts.last_event,
        under_reached=under,
        dimensions=dimensions,
    )
