"""Coverage as it stood at a moment: who had been heard from by then.

The read models only know the present, so an as-of view replays the log instead: every
event up to the stream's last sequence now, through the same pure projection kept in
memory (:class:`~services.analytics.projection.memory.MemoryProjection`), so it counts exactly as the
live numbers do. An engagement counts if it happened (``occurred_at``) at or before the
moment asked about; events recorded after the fact are found wherever they sit in the log.

A ``ParticipantWithdrawn`` applies whatever its time. The process promised that
withdrawal removes a person from every count, so they are absent from every as-of view
too, including views of moments before they withdrew.

The replay reads the whole log on each request; memory grows with the participants.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo

from nats.aio.client import Client

from services.analytics.answers.models import Replayed
from services.analytics.answers.segments import Segment, members
from services.analytics.projection.counts import Counts, counts_of
from services.analytics.projection.memory import BATCH, MemoryProjection
from services.analytics.reading import replay
from shared.events import EARLIEST, Envelope
from shared.plan import Plan


@dataclass(frozen=True)
class AsOf:
    """Counts as they stood at ``moment``, read from the log up to ``sequence``."""

    moment: datetime
    sequence: int
    counts: Counts
    unreadable: int  # events the replay could not read (the projector parks them too)
    replayed_at: datetime

    def freshness(self) -> Replayed:
        """What an as-of answer reflects: the moment, and the log read up to its last sequence
        (so it is never behind)."""
        return Replayed(
            as_of=self.moment,
            sequence=self.sequence,
            stream_sequence=self.sequence,
            behind=0,
            unreadable=self.unreadable,
            projected_at=self.replayed_at,
            answered_at=datetime.now(UTC),
        )


def parse_moment(value: str, now: datetime | None = None) -> datetime:
    """The moment asked about: a time with a zone, not in the future.

    Raises ``ValueError`` with a reason that never repeats the value (it came from a user).
    """
    try:
        moment = replay.parse_time(value, "as_of")
    except ValueError as exc:
        if "time zone" in str(exc):
            raise ValueError("needs a time zone, e.g. 2018-04-01T00:00Z") from None
        raise ValueError("is not a time like 2018-04-01T00:00Z or 2018-04-01") from None
    if moment is None:
        raise ValueError("is required")
    if moment > (now or datetime.now(UTC)):
        raise ValueError("is in the future; coverage can only be told up to now")
    if moment < EARLIEST:
        raise ValueError(f"is before {EARLIEST:%Y-%m-%d}: no event on the log can be that old")
    return moment


def counted_at(event: Envelope, moment: datetime) -> bool:
    """Whether an event belongs in the view as of ``moment``: it had happened by then, or it
    is a withdrawal, which removes the person from every view."""
    return event.occurred_at <= moment or event.payload.type == "ParticipantWithdrawn"


async def replay_to(
    nc: Client, stream: str, process_id: str, moment: datetime, tz: tzinfo, plan: Plan | None
) -> tuple[MemoryProjection, AsOf]:
    """Replay the whole log, as it is now, into memory, keeping what counts as of ``moment``."""
    sequence = await replay.last_sequence(nc, stream)
    unreadable = 0

    def skipped(_seq: int, _subject: str, _reason: str) -> None:
        nonlocal unreadable
        unreadable += 1

    memory = MemoryProjection(tz)
    first: datetime | None = None
    last: datetime | None = None
    kept: list[tuple[int, Envelope]] = []
    window = replay.Window(to_seq=sequence, process_id=process_id)
    async for seq, event in replay.events(nc, stream, window, skipped):
        if not counted_at(event, moment):
            continue
        kept.append((seq, event))
        if event.occurred_at <= moment:  # a later withdrawal does not stretch the view's span
            first = event.occurred_at if first is None else min(first, event.occurred_at)
            last = event.occurred_at if last is None else max(last, event.occurred_at)
        if len(kept) >= BATCH:  # the window's events are projected as they come, never all held at once
            memory.feed(kept)
            kept = []
    memory.feed(kept)
    counts = replace(memory.counts(process_id, plan), sequence=sequence, first_event=first, last_event=last)
    return memory, AsOf(moment, sequence, counts, unreadable, datetime.now(UTC))


async def coverage_counts(
    nc: Client, stream: str, process_id: str, moment: datetime, tz: tzinfo, plan: Plan | None, segment: Segment | None
) -> AsOf:
    """The counts of a process (or of one segment of it) as they stood at ``moment``."""
    memory, result = await replay_to(nc, stream, process_id, moment, tz, plan)
    if segment is None:
        return result
    chosen = members((state for _, state in memory.participants(process_id)), segment, plan)
    return replace(result, counts=counts_of(chosen, plan, sequence=result.sequence))
