"""Segments: any view restricted to the participants who meet every one of a few terms, e.g.
race/ethnicity among people with lived experience, as the 2018 report shows it, or the
advisory group's share with lived experience.

A segment is written ``term,term,...``; a term is one of

- ``dimension:category``: the participant's answer includes the category;
- ``dimension:declined`` / ``dimension:not_answered``: they declined, or never answered;
- ``group:category`` for a derived dimension of the plan (e.g. a mandated stakeholder group);
- ``channel:<channel>``: they took part through that channel at least once.

A segment's counts come from the one count builder (:func:`projection.counts.counts_of`)
over the participants in it, so a segment and the whole agree on what a participant
contributes. ``store.reads.states_in`` narrows by the first answered term in SQL, and
:func:`in_segment` decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from services.analytics.projection.fold import ParticipantState
from shared.events import Channel
from shared.plan import Plan
from shared.profile import CATEGORIES, DECLINED

NOT_ANSWERED = "not_answered"
CHANNEL = "channel"
MAX_TERMS = 4
_CHANNELS = tuple(c.value for c in Channel)
_TOOK_PART = {
    "interview_in_person": "interviewed in person",
    "interview_phone": "interviewed by phone",
    "small_group_interview": "in a small-group interview",
    "art_of_hosting": "at an Art-of-Hosting event",
    "small_group_meeting": "at a small-group meeting",
    "survey": "answered the survey",
    "advisory": "in the advisory group",
}


class BadSegment(ValueError):
    """The segment asked for is not made of the plan's questions, groups and channels."""


@dataclass(frozen=True, order=True)
class Term:
    dimension: str
    category: str

    def __str__(self) -> str:
        return f"{self.dimension}:{self.category}"


@dataclass(frozen=True)
class Segment:
    """Terms a participant must all meet, in their canonical (sorted) order."""

    terms: tuple[Term, ...]

    @property
    def key(self) -> str:
        return ",".join(map(str, self.terms))

    def label(self, plan: Plan | None) -> str:
        return " and ".join(term_label(plan, t) for t in self.terms)


def term_label(plan: Plan | None, term: Term) -> str:
    if term.dimension == CHANNEL:
        return _TOOK_PART.get(term.category, term.category)
    if term.category in (DECLINED, NOT_ANSWERED):
        question = (
            plan.dimensions[term.dimension].label if plan and term.dimension in plan.dimensions else term.dimension
        )
        return f"{question}: {'declined' if term.category == DECLINED else 'not answered'}"
    return plan.label_of(term.dimension, term.category) if plan else term.category


def _term(plan: Plan | None, text: str) -> Term:
    dimension, sep, category = text.strip().partition(":")
    if not sep or not dimension or not category:
        raise BadSegment(f"{text.strip()!r} is not a term like lived_experience:yes")
    derived = plan.derived_dimensions() if plan else {}
    if dimension == CHANNEL:
        if category not in _CHANNELS:
            raise BadSegment(f"{category!r} is not a channel (one of: {', '.join(_CHANNELS)})")
    elif dimension in derived:
        if category not in derived[dimension].categories:
            raise BadSegment(
                f"{category!r} is not a {dimension} group (one of: {', '.join(derived[dimension].categories)})"
            )
    elif dimension in CATEGORIES:
        known = (*CATEGORIES[dimension], DECLINED, NOT_ANSWERED)
        if category not in known:
            raise BadSegment(f"{category!r} is not a {dimension} category (one of: {', '.join(known)})")
    else:
        choices = [*CATEGORIES, *derived, CHANNEL]
        raise BadSegment(f"{dimension!r} is not a question, group or channel (one of: {', '.join(choices)})")
    return Term(dimension, category)


def parse_segment(plan: Plan | None, segment: str | None) -> Segment | None:
    """``term,term`` -> the segment; BadSegment with a reason that names the choices."""
    if segment is None:
        return None
    texts = [t for t in segment.split(",") if t.strip()]
    if not texts:
        raise BadSegment("is empty; give terms like lived_experience:yes,region:central")
    terms = tuple(sorted({_term(plan, t) for t in texts}))
    if len(terms) > MAX_TERMS:
        raise BadSegment(f"has {len(terms)} terms; at most {MAX_TERMS}")
    return Segment(terms)


def meets(state: ParticipantState, term: Term, plan: Plan | None) -> bool:
    """Whether a participant meets one term."""
    answers = state.profile.categories
    if term.dimension == CHANNEL:
        return state.channels.get(term.category, 0) > 0
    if plan is not None and term.dimension in plan.dimensions and plan.dimensions[term.dimension].derived:
        return term.category in plan.matches(term.dimension, answers)
    chosen = answers.get(term.dimension)
    if term.category == NOT_ANSWERED:
        return chosen is None
    if term.category == DECLINED:
        return chosen == (DECLINED,)
    return chosen is not None and term.category in chosen


def in_segment(state: ParticipantState, segment: Segment, plan: Plan | None) -> bool:
    """Whether a participant meets every term of the segment."""
    return all(meets(state, term, plan) for term in segment.terms)


def members(states: Iterable[ParticipantState], segment: Segment, plan: Plan | None) -> Iterator[ParticipantState]:
    return (state for state in states if in_segment(state, segment, plan))


def narrowing(segment: Segment, plan: Plan | None) -> Term | None:
    """A term the read models can narrow by in SQL (an answered category), if the segment has one."""
    derived = plan.derived_dimensions() if plan else {}
    return next(
        (
            t
            for t in segment.terms
            if t.dimension in CATEGORIES and t.dimension not in derived and t.category not in (NOT_ANSWERED,)
        ),
        None,
    )
