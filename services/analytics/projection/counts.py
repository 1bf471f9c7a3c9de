"""The counts participant states make: the one count builder.

A participant's contribution is :func:`fold.add_contribution` of their state; the counts
of any set of participants (a whole process, a segment of it, the log as of a moment) are
the sum of their contributions, the derived groups they fall in by the plan's rule
(:meth:`shared.plan.Plan.derived_rule_list`) among them. The read models hold the same sums
as running counters, which ``store.reads.counts`` reads (a test holds them equal).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from services.analytics.projection.fold import (
    DEFAULT_TZ,
    ENGAGEMENTS,
    PARTICIPANTS,
    PROFILED,
    Changes,
    ParticipantState,
    add_contribution,
)
from shared.plan import NO_RULES, Plan


@dataclass(frozen=True)
class Counts:
    """Participation counts of one process, or of one segment of it."""

    sequence: int  # the stream sequence they reflect
    participants: int
    engagements: int
    channels: dict[str, int]  # channel -> engagements
    categories: dict[tuple[str, str], int]  # (dimension, category) -> participants; see ``fold``
    profiled: int = 0  # participants who gave a profile: answered or declined any question
    people_by_channel: dict[str, int] = field(default_factory=dict)  # channel -> participants who used it
    first_event: datetime | None = None
    last_event: datetime | None = None
    projected_at: datetime | None = None


def counts_of(
    states: Iterable[ParticipantState],
    plan: Plan | None,
    *,
    sequence: int,
    first_event: datetime | None = None,
    last_event: datetime | None = None,
    projected_at: datetime | None = None,
) -> Counts:
    """The counts ``states`` make together (withdrawn participants make none)."""
    changes = Changes()
    derived = plan.derived_rule_list() if plan else NO_RULES
    process = ""  # one process at a time: the key's process part is the same for every state
    for state in states:
        add_contribution(changes, process, state, derived=derived, over_time=False)
    return Counts(
        sequence=sequence,
        participants=changes.totals[(process, PARTICIPANTS)],
        engagements=changes.totals[(process, ENGAGEMENTS)],
        channels={c: n for (_, c), n in changes.engagements.items() if n},
        categories={(d, c): n for (_, d, c), n in changes.categories.items() if n},
        profiled=changes.totals[(process, PROFILED)],
        people_by_channel={c: n for (_, c), n in changes.people.items() if n},
        first_event=first_event,
        last_event=last_event,
        projected_at=projected_at,
    )


def daily_of(
    states: Iterable[ParticipantState], tz: tzinfo = DEFAULT_TZ
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Per (local day, channel): the engagements of ``states``, and how many of them were first
    reached then (by their first channel). The read models' ``daily_counts`` holds the same sums."""
    changes = Changes()
    for state in states:
        add_contribution(changes, "", state, tz=tz)
    return (
        Counter({(day, channel): n for (_, day, channel), n in changes.daily.items() if n}),
        Counter({(day, channel): n for (_, day, channel), n in changes.firsts.items() if n}),
    )
