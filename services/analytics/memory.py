"""The projection kept in memory instead of Postgres: for as-of views and exports.

It applies the very same pure projection (:func:`projection.project`) to a dict of
participant states and adds up the same count changes the store would write, so an
as-of view or an export counts exactly as the live read models do. Memory grows with the
number of participants in the window.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo

from services.analytics.projection import (
    DEFAULT_TZ,
    ENGAGEMENTS,
    PARTICIPANTS,
    Key,
    ParticipantState,
    keys_of,
    project,
)
from services.analytics.store import Counts
from shared.events import Envelope
from shared.plan import Plan


class MemoryProjection:
    def __init__(self, tz: tzinfo = DEFAULT_TZ) -> None:
        self.tz = tz
        self.states: dict[Key, ParticipantState] = {}
        self.categories: Counter[tuple[str, str, str]] = Counter()
        self.engagements: Counter[tuple[str, str]] = Counter()
        self.totals: Counter[tuple[str, str]] = Counter()
        self.daily: Counter[tuple[str, str, str]] = Counter()
        self.firsts: Counter[tuple[str, str, str]] = Counter()
        self.times: dict[str, tuple[datetime, datetime]] = {}
        self.sequence = 0

    def apply(self, events: Sequence[Envelope], sequence: int | None = None) -> None:
        """Project a batch of events, in log order (``sequence``: the last one's)."""
        if events:
            known = {k: self.states[k] for k in keys_of(events) if k in self.states}
            changes = project(events, known, self.tz)
            self.states.update(changes.participants)
            for mine, theirs in ((self.categories, changes.categories), (self.engagements, changes.engagements),
                                 (self.totals, changes.totals), (self.daily, changes.daily),
                                 (self.firsts, changes.firsts)):
                mine.update(theirs)
            for proc, (first, last) in changes.event_times.items():
                was = self.times.get(proc, (first, last))
                self.times[proc] = (min(was[0], first), max(was[1], last))
        if sequence is not None:
            self.sequence = max(self.sequence, sequence)

    def feed(self, events: Iterable[tuple[int, Envelope]], batch: int = 1000) -> None:
        """Project (sequence, event) pairs in batches."""
        pending: list[Envelope] = []
        last = None
        for seq, event in events:
            pending.append(event)
            last = seq
            if len(pending) >= batch:
                self.apply(pending, last)
                pending = []
        self.apply(pending, last)

    def participants(self, process_id: str) -> Iterable[tuple[str, ParticipantState]]:
        """The counted participants of a process (withdrawn ones are not)."""
        return ((key, s) for (proc, key), s in self.states.items() if proc == process_id and not s.withdrawn)

    def counts(self, process_id: str, plan: Plan | None) -> Counts:
        """The process's counts, shaped as the store reads them from the read models."""
        categories = {(d, c): n for (p, d, c), n in self.categories.items() if p == process_id and n}
        if plan is not None:
            derived: Counter[tuple[str, str]] = Counter()
            dims = list(plan.derived_dimensions())
            for _, state in self.participants(process_id):
                for dim in dims:
                    for code in plan.matches(dim, state.profile.categories):
                        derived[(dim, code)] += 1
            categories.update(derived)
        first, last = self.times.get(process_id, (None, None))
        return Counts(
            sequence=self.sequence,
            participants=self.totals[(process_id, PARTICIPANTS)],
            engagements=self.totals[(process_id, ENGAGEMENTS)],
            channels={c: n for (p, c), n in self.engagements.items() if p == process_id and n},
            categories=categories,
            first_event=first,
            last_event=last,
        )
