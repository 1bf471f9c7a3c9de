"""Releases: the numbers coordinators see move only once ``every`` participants have changed.

Two coordinator views taken one arrival apart would differ by one person, and subtracting
them would show that person's answers, however each view is rounded. So coordinator
numbers come from a release: the log read up to a cut, where a cut falls at the event
that brings to ``every`` (at least k) the participants changed since the previous cut.
The cuts depend only on the log, so every instance, before and after a restart, cuts at
the same events. A withdrawal leaves coordinator views at the next cut (analysts' views at
once); the events after the last cut wait, unseen by coordinators.

Each process's release is kept in memory and read forward from where it stopped, so a
refresh costs the events since the last one (the first costs the whole log). Answers made
from a release are cached until the next cut.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo

from nats.aio.client import Client

from services.analytics.answers.segments import Segment, in_segment
from services.analytics.answers.suppression import Cell, cell_keys, record_key
from services.analytics.projection.counts import Counts, counts_of, daily_of
from services.analytics.projection.engages import Key, keys_of
from services.analytics.projection.fold import ParticipantState
from services.analytics.projection.memory import MemoryProjection
from services.analytics.reading import replay
from shared.events import Envelope
from shared.plan import Plan

CACHED = 64  # answers kept per process until the next cut


@dataclass(frozen=True)
class Cut:
    """One release's people, with their keys; what every coordinator answer is made from."""

    sequence: int  # the last event in the release (0: nothing released yet)
    number: int  # releases so far: between release n and n+j, exactly j*every participants changed
    made_at: datetime | None  # when this instance cut it
    members: tuple[tuple[int, ParticipantState], ...]  # (record key, state) of each counted participant
    first_event: datetime | None
    last_event: datetime | None


@dataclass(frozen=True)
class Released:
    """A release's counts of a segment (or the whole process) and their cell keys."""

    counts: Counts
    number: int  # the release's number (see ``Cut``)
    keys: dict[Cell, int]
    engagements_daily: dict[tuple[str, str], int]
    reached_daily: dict[tuple[str, str], int]


class Releases:
    """One process's releases."""

    def __init__(self, process_id: str, secret: bytes, every: int, tz: tzinfo) -> None:
        self.process_id, self.every, self.tz = process_id, every, tz
        self._secret = secret
        self._memory = MemoryProjection(tz)
        self._pending: list[tuple[int, Envelope]] = []
        self._touched: set[Key] = set()
        self._read_to = 0
        self._lock = asyncio.Lock()
        self.cut = Cut(0, 0, None, (), None, None)
        self._answers: OrderedDict[tuple[int, str | None], Released] = OrderedDict()

    def take(self, events: list[tuple[int, Envelope]], read_to: int) -> bool:
        """Take events in log order (all of them up to ``read_to``); True if a new cut was made."""
        cut_made = False
        for seq, event in events:
            self._pending.append((seq, event))
            self._touched |= keys_of([event])
            if len(self._touched) >= self.every:
                self._memory.feed(self._pending)
                self._pending, self._touched = [], set()
                self._release(seq)
                cut_made = True
        self._read_to = max(self._read_to, read_to)
        return cut_made

    def _release(self, sequence: int) -> None:
        first, last = self._memory.times.get(self.process_id, (None, None))
        members = tuple(
            (record_key(self._secret, participant), state)
            for participant, state in self._memory.participants(self.process_id)
        )
        self.cut = Cut(sequence, self.cut.number + 1, datetime.now(UTC), members, first, last)
        self._answers.clear()

    async def refresh(self, nc: Client, stream: str) -> Cut:
        """Read the log forward to its end, cutting as it goes; the latest release."""
        async with self._lock:
            last = await replay.last_sequence(nc, stream)
            if last > self._read_to:
                window = replay.Window(from_seq=self._read_to + 1, to_seq=last, process_id=self.process_id)
                batch: list[tuple[int, Envelope]] = []
                async with aclosing(replay.events(nc, stream, window)) as found:
                    async for pair in found:
                        batch.append(pair)
                        if len(batch) >= 1000:
                            self.take(batch, pair[0])
                            batch = []
                self.take(batch, last)
            return self.cut

    def released(self, segment: Segment | None, plan: Plan | None) -> Released:
        """The release's counts of the whole process or one segment, with their cell keys."""

        def make() -> Released:
            chosen = [(k, s) for k, s in self.cut.members if segment is None or in_segment(s, segment, plan)]
            states = [s for _, s in chosen]
            counts = counts_of(states, plan, sequence=self.cut.sequence, projected_at=self.cut.made_at)
            if segment is None:
                counts = replace(counts, first_event=self.cut.first_event, last_event=self.cut.last_event)
            engagements, reached = daily_of(states, self.tz)
            return Released(counts, self.cut.number, cell_keys(chosen, plan, self.tz), dict(engagements), dict(reached))

        key = (self.cut.sequence, segment.key if segment else None)
        if key in self._answers:
            self._answers.move_to_end(key)
        else:
            self._answers[key] = make()
            while len(self._answers) > CACHED:
                self._answers.popitem(last=False)
        return self._answers[key]


class ReleaseBook:
    """Every process's releases, made on first use; the least recently asked are let go beyond
    ``PROCESSES`` (a token asking for many made-up process ids cannot fill memory)."""

    PROCESSES = 16

    def __init__(self, secret: bytes, every: int, tz: tzinfo) -> None:
        self.secret, self.every, self.tz = secret, every, tz
        self._of: OrderedDict[str, Releases] = OrderedDict()

    def of(self, process_id: str) -> Releases:
        if process_id in self._of:
            self._of.move_to_end(process_id)
        else:
            self._of[process_id] = Releases(process_id, self.secret, self.every, self.tz)
            while len(self._of) > self.PROCESSES:
                self._of.popitem(last=False)
        return self._of[process_id]
