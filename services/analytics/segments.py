"""Segments: any view restricted to the participants in one category of another dimension,
e.g. race/ethnicity among people with lived experience, as the report shows it.

Counted from the participants' rows with the projection's own rule (``add_contribution``),
so a segment and the whole agree on what a participant contributes.
"""

from __future__ import annotations

import asyncpg

from services.analytics import store
from services.analytics.projection import Changes, ParticipantState, add_contribution
from shared.plan import Plan


async def segment_counts(pool: asyncpg.Pool, process_id: str, consumer: str, dimension: str, category: str,
                         plan: Plan | None) -> store.Counts:
    """Counts of the participants whose answer to ``dimension`` includes ``category``."""
    sequence, rows = await store.profiles_in(pool, process_id, consumer, dimension, category)
    changes = Changes()
    derived = list(plan.derived_dimensions()) if plan else []
    for profile, channels in rows:
        add_contribution(changes, process_id, ParticipantState(profile=profile, channels=channels))
        for dimension in derived:
            for code in plan.matches(dimension, profile.categories):  # type: ignore[union-attr]
                changes.categories[(process_id, dimension, code)] += 1
    return store.Counts(
        sequence=sequence,
        participants=changes.totals[(process_id, "participants")],
        engagements=changes.totals[(process_id, "engagements")],
        channels={c: n for (_, c), n in changes.engagements.items() if n},
        categories={(d, c): n for (_, d, c), n in changes.categories.items() if n},
    )
