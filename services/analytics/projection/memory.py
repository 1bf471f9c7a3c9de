"""The projection kept in memory instead of PostgreSQL: for as-of views and exports.

It applies the very same pure fold (:func:`fold.project`) to a dict of participant
states, and its counts come from the one count builder (:func:`counts.counts_of`), so an
as-of view or an export counts exactly as the live read models do. Memory grows with the
number of participants in the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, tzinfo

from services.analytics.projection.counts import Counts, counts_of
from services.analytics.projection.engages import Key, keys_of
from services.analytics.projection.fold import DEFAULT_TZ, ParticipantState, project
from shared.events import Envelope
from shared.plan import Plan

BATCH = 1000


class MemoryProjection:
    def __init__(self, tz: tzinfo = DEFAULT_TZ) -> None:
        self.tz = tz
        self.states: dict[Key, ParticipantState] = {}
        self.times: dict[str, tuple[datetime, datetime]] = {}  # process -> first and last event
        self.sequence = 0

    def apply(self, events: Sequence[Envelope], sequence: int | None = None) -> None:
        """Project a batch of events, in log order (``sequence``: the last one's)."""
        if events:
            known = {k: self.states[k] for k in keys_of(events) if k in self.states}
            changes = project(events, known, self.tz)
            self.states.update(changes.participants)
            for proc, (first, last) in changes.event_times.items():
                was = self.times.get(proc, (first, last))
                self.times[proc] = (min(was[0], first), max(was[1], last))
        if sequence is not None:
            self.sequence = max(self.sequence, sequence)

    def feed(self, events: Iterable[tuple[int, Envelope]], batch: int = BATCH) -> None:
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

    def participants(self, process_id: str) -> Iterator[tuple[str, ParticipantState]]:
        """The counted participants of a process (withdrawn ones are not)."""
        return ((key, s) for (proc, key), s in self.states.items() if proc == process_id and not s.withdrawn)

    def counts(self, process_id: str, plan: Plan | None) -> Counts:
        """The counts of a process's participants, with the span of its events."""
        first, last = self.times.get(process_id, (None, None))
        return counts_of(
            (s for _, s in self.participants(process_id)),
            plan,
            sequence=self.sequence,
            first_event=first,
            last_event=last,
        )
