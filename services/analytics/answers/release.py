"""Releases: the numbers coordinators see move only once ``every`` participants have changed.

Two coordinator views taken one arrival apart would differ by one person, and subtracting
them would show that person's answers, however each view is rounded. So coordinator
numbers come from a release: the log read up to a cut, where a cut falls at the event
that brings to ``every`` (at least k) the participants changed since the previous cut.
The cuts depend only on the log, so every instance, before and after a restart, cuts at
the same events. A withdrawal leaves coordinator views at the next cut (analysts' views at
once); the events after the last cut wait, unseen by coordinators.

Each process's release is kept in memory and read forward from where it stopped, so a
refresh costs the events since the last one (the first costs the whole log, read on a NATS
connection of its own and giving the event loop a turn after every batch). A refresh may
pass many cuts; only the one it ends at is shown, so only that one's people are listed.
Answers made from a release are cached until the next cut; the whole process's cell keys
are kept summed, so a new release costs the members that changed.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from contextlib import aclosing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo

from nats.aio.client import Client

from services.analytics.answers.segments import Segment, in_segment
from services.analytics.answers.suppression import KEY_BITS, Cell, cell_keys, record_key
from services.analytics.projection.counts import Counts, counts_of, daily_of
from services.analytics.projection.engages import Key, keys_of
from services.analytics.projection.fold import ParticipantState
from services.analytics.projection.memory import MemoryProjection
from services.analytics.reading import replay
from shared.events import Envelope
from shared.plan import Plan

CACHED = 64  # answers kept per process until the next cut
MOD = 1 << KEY_BITS  # cell keys are sums mod this (``suppression.cell_keys``)
BATCH = 1000  # events taken between two turns of the event loop


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


class _KeySums:
    """The whole process's cell keys under one plan, kept member by member: a new release costs
    the members that changed since the last one summed, not all of them (``cell_keys`` is a sum
    mod 2**64 of each member's own keys, so the sums are exactly its answer)."""

    def __init__(self, plan: Plan | None, tz: tzinfo) -> None:
        self.plan, self.tz = plan, tz
        # What is summed, by participant: the state, not its keys (worked out again to take it
        # out: a few dozen keys a member would weigh more than the states themselves).
        self.of: dict[str, tuple[int, ParticipantState]] = {}
        self.sums: Counter[Cell] = Counter()
        self.holders: Counter[Cell] = Counter()  # members with the cell: cell_keys names a cell only if one has it
        self.number = 0  # the release summed

    def update(self, number: int, members: dict[str, tuple[int, ParticipantState]]) -> dict[Cell, int]:
        """The cell keys of release ``number``, whose people are ``members``."""
        if self.number != number:
            for participant in [p for p in self.of if p not in members]:
                self._move(self.of.pop(participant), -1)
            for participant, member in members.items():
                was = self.of.get(participant)
                if was is None or was[1] is not member[1]:  # states are replaced, never changed in place
                    if was is not None:
                        self._move(was, -1)
                    self._move(member, 1)
                    self.of[participant] = member
            self.number = number
        return {cell: total % MOD for cell, total in self.sums.items()}

    def _move(self, member: tuple[int, ParticipantState], sign: int) -> None:
        for cell, key in cell_keys([member], self.plan, self.tz).items():
            self.holders[cell] += sign
            if self.holders[cell]:
                self.sums[cell] += sign * key
            else:
                del self.holders[cell], self.sums[cell]


class Releases:
    """One process's releases."""

    def __init__(self, process_id: str, secret: bytes, every: int, tz: tzinfo) -> None:
        self.process_id, self.every, self.tz = process_id, every, tz
        self._secret = secret
        self._memory = MemoryProjection(tz)  # the log up to the latest cut
        self._pending: list[tuple[int, Envelope]] = []  # the events after it
        self._touched: set[Key] = set()
        self._read_to = 0
        self._cut_at, self._cuts = 0, 0  # the latest cut's sequence and number, made or not
        self._record_keys: dict[str, int] = {}  # each participant's key, an HMAC worked out once
        self._members: dict[str, tuple[int, ParticipantState]] = {}  # the release's people, by participant
        self._key_sums: _KeySums | None = None
        self._lock = asyncio.Lock()
        self.cut = Cut(0, 0, None, (), None, None)
        self._answers: OrderedDict[tuple[int, str | None], Released] = OrderedDict()

    def take(self, events: list[tuple[int, Envelope]], read_to: int) -> bool:
        """Take events in log order (all of them up to ``read_to``); True if a cut fell among them.

        A cut only moves the latest cut's sequence and number on, and the projection takes the
        events up to the last cut among them at once: only the release a refresh ends at is
        ever shown, so its people are made once, by ``release``, however many cuts it passed.
        """
        last_cut = 0  # how many of the pending events the last cut among these closes
        for seq, event in events:
            self._pending.append((seq, event))
            touched = keys_of([event])
            self._touched |= touched
            for _, participant in touched:  # worked out here, batch by batch, not all at once in ``release``
                self._record_key(participant)
            if len(self._touched) >= self.every:
                self._touched = set()
                self._cut_at, self._cuts = seq, self._cuts + 1
                last_cut = len(self._pending)
        if last_cut:
            self._memory.feed(self._pending[:last_cut])
            del self._pending[:last_cut]
        self._read_to = max(self._read_to, read_to)
        return bool(last_cut)

    def release(self) -> Cut:
        """The latest cut's release, its people made the first time it is asked for."""
        if self.cut.number != self._cuts:
            first, last = self._memory.times.get(self.process_id, (None, None))
            self._members = {p: (self._record_key(p), s) for p, s in self._memory.participants(self.process_id)}
            members = tuple(self._members.values())
            self.cut = Cut(self._cut_at, self._cuts, datetime.now(UTC), members, first, last)
            self._answers.clear()
        return self.cut

    def _record_key(self, participant: str) -> int:
        key = self._record_keys.get(participant)
        if key is None:
            key = self._record_keys[participant] = record_key(self._secret, participant)
        return key

    async def refresh(self, nc: Client, stream: str) -> Cut:
        """Read the log forward to its end, cutting as it goes; the latest release.

        The event loop gets a turn after every batch: a first refresh reads the whole log, and
        the projector, other answers and the NATS connections' pings must not wait for it.
        """
        async with self._lock:
            await self._read_forward(nc, stream)
            return await asyncio.to_thread(self.release)

    async def answers(
        self, nc: Client, stream: str, segment: Segment | None, plan: Plan | None
    ) -> tuple[Released, Released]:
        """Refresh, then the release's counts of ``segment`` and of the whole process. The work
        that grows with the people (listing a release's members, its counts and cell keys) runs
        off the event loop, one answer at a time: the projector and other answers go on."""
        async with self._lock:
            await self._read_forward(nc, stream)

            def both() -> tuple[Released, Released]:
                whole = self.released(None, plan)
                return (whole if segment is None else self.released(segment, plan)), whole

            return await asyncio.to_thread(both)

    async def _read_forward(self, nc: Client, stream: str) -> None:
        """Read the log forward to its end, cutting as it goes (the caller holds the lock)."""
        last = await replay.last_sequence(nc, stream)
        if last > self._read_to:
            window = replay.Window(from_seq=self._read_to + 1, to_seq=last, process_id=self.process_id)
            batch: list[tuple[int, Envelope]] = []
            async with aclosing(replay.events(nc, stream, window)) as found:
                async for pair in found:
                    batch.append(pair)
                    if len(batch) >= BATCH:
                        await asyncio.to_thread(self.take, batch, pair[0])
                        batch = []
            await asyncio.to_thread(self.take, batch, last)

    def released(self, segment: Segment | None, plan: Plan | None) -> Released:
        """The release's counts of the whole process or one segment, with their cell keys."""

        cut = self.release()

        def make() -> Released:
            chosen = [(k, s) for k, s in cut.members if segment is None or in_segment(s, segment, plan)]
            states = [s for _, s in chosen]
            counts = counts_of(states, plan, sequence=cut.sequence, projected_at=cut.made_at)
            if segment is None:
                counts = replace(counts, first_event=cut.first_event, last_event=cut.last_event)
            engagements, reached = daily_of(states, self.tz)
            keys = cell_keys(chosen, plan, self.tz) if segment is not None else self._whole_keys(cut, plan)
            return Released(counts, cut.number, keys, dict(engagements), dict(reached))

        key = (cut.sequence, segment.key if segment else None)
        if key in self._answers:
            self._answers.move_to_end(key)
        else:
            self._answers[key] = make()
            while len(self._answers) > CACHED:
                self._answers.popitem(last=False)
        return self._answers[key]

    def _whole_keys(self, cut: Cut, plan: Plan | None) -> dict[Cell, int]:
        if self._key_sums is None or self._key_sums.plan is not plan:
            self._key_sums = _KeySums(plan, self.tz)
        return self._key_sums.update(cut.number, self._members)


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
