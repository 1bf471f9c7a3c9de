"""Segments: any view restricted to the participants in one category of another dimension,
e.g. race/ethnicity among people with lived experience, as the report shows it.

A segment's counts come from the one count builder (:func:`projection.counts.counts_of`)
over the participants in it, so a segment and the whole agree on what a participant
contributes; ``store.reads.states_in`` is the SQL twin of :func:`in_segment`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from services.analytics.projection.fold import ParticipantState
from shared.plan import Plan
from shared.profile import CATEGORIES

Segment = tuple[str, str]  # (dimension, category)


class BadSegment(ValueError):
    """The segment asked for is not one of the plan's answered questions and categories."""


def parse_segment(plan: Plan | None, segment: str | None) -> Segment | None:
    """``dimension:category`` -> the segment; BadSegment with a reason that names the choices."""
    if segment is None:
        return None
    dimension, _, category = segment.partition(":")
    if plan is not None and dimension in plan.dimensions and plan.dimensions[dimension].derived:
        raise BadSegment(f"{dimension!r} is derived; segment by one of the answered questions")
    if dimension not in CATEGORIES:
        raise BadSegment(f"{dimension!r} is not a dimension (one of: {', '.join(CATEGORIES)})")
    if category not in CATEGORIES[dimension]:
        raise BadSegment(f"{category!r} is not a {dimension} category (one of: {', '.join(CATEGORIES[dimension])})")
    return dimension, category


def in_segment(state: ParticipantState, segment: Segment) -> bool:
    """Whether a participant's answer to the segment's dimension includes its category."""
    dimension, category = segment
    return category in state.profile.categories.get(dimension, ())


def members(states: Iterable[ParticipantState], segment: Segment) -> Iterator[ParticipantState]:
    return (state for state in states if in_segment(state, segment))
