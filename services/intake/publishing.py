"""Writing to the event log so that retries and races come out right.

JetStream checks ``Nats-Expected-Last-Subject-Sequence`` *before* it dedupes on the
message id, so a retried request whose event is already stored would be refused as a
conflict. Before (and after a refused) publish we therefore look at what is stored: if
it is our own event (same id, derived from the Idempotency-Key), the request already
succeeded and we answer the same success again without publishing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError as JsNotFound

from shared.bus import last_event_on, publish_event
from shared.errors import ConflictError, NotFoundError
from shared.events import Envelope
from shared.logging import get_logger
from shared.settings import Settings
from shared.upcasting import decode_event

log = get_logger("engage.intake")


@dataclass(frozen=True)
class Stored:
    """An event the log holds: its id, its stream sequence, and whether this was a retry."""

    event_id: str
    sequence: int
    replayed: bool


@dataclass(frozen=True)
class Log:
    """What intake needs to write: the broker, a JetStream context, the settings."""

    broker: NatsBroker
    js: JetStreamContext
    settings: Settings

    async def first(self, subject: str) -> tuple[Envelope, int] | None:
        """The oldest event on ``subject`` (the one that created the aggregate), if any."""
        try:
            raw = await self.js.get_msg(self.settings.stream_name, seq=1, subject=subject, next=True)
        except JsNotFound:
            return None
        return decode_event(raw.data or b""), raw.seq or 0

    async def last(self, subject: str, missing: str) -> tuple[Envelope, int]:
        """The newest event on ``subject``; NotFoundError(``missing``) when there is none."""
        found = await last_event_on(self.js, self.settings, subject)
        if found is None:
            raise NotFoundError(missing)
        return found

    async def create(self, event: Envelope, exists: str) -> Stored:
        """Publish the first event of a new aggregate; ConflictError(``exists``) if it exists.

        A retried request finds its own event stored first and is answered from it.
        """
        found = await self.first(event.subject)
        if found is not None:
            return _ours_or_conflict(found, event, exists)
        try:
            seq, duplicate = await publish_event(self.broker, event, self.settings, expected_last_subject_sequence=0)
        except ConflictError:
            # Someone wrote first: maybe the same request, retried concurrently.
            found = await self.first(event.subject)
            if found is None:
                raise
            return _ours_or_conflict(found, event, exists)
        return Stored(event.event_id, seq, duplicate)

    async def append(self, event: Envelope, after: int) -> Stored:
        """Publish ``event`` only if the aggregate's last event is still at sequence ``after``."""
        try:
            seq, duplicate = await publish_event(
                self.broker, event, self.settings, expected_last_subject_sequence=after
            )
        except ConflictError:
            found = await last_event_on(self.js, self.settings, event.subject)
            if found is not None and found[0].event_id == event.event_id:
                return Stored(event.event_id, found[1], True)
            raise
        return Stored(event.event_id, seq, duplicate)

    async def publish(self, event: Envelope) -> Stored:
        """Publish unconditionally (for facts that may be stated twice, like a withdrawal)."""
        seq, duplicate = await publish_event(self.broker, event, self.settings)
        return Stored(event.event_id, seq, duplicate)


def _ours_or_conflict(found: tuple[Envelope, int], event: Envelope, exists: str) -> Stored:
    stored, seq = found
    if stored.event_id == event.event_id:
        return Stored(event.event_id, seq, True)
    raise ConflictError(exists)


def written(event: Envelope, stored: Stored, **ids: Any) -> None:
    """The one log line per write: ids and the sequence, never a profile or a contact."""
    log.info(
        "event_recorded",
        event_type=event.type,
        event_id=str(stored.event_id),
        sequence=stored.sequence,
        replayed=stored.replayed,
        **ids,
    )
