"""The one way analytics reads an event: typed and upcast, or a reason it cannot be.

Every reader of the log (the live projector, the rebuild, replays, as-of views and
exports) decodes through :func:`decode`. A reason names fields and rules, never the
values: an unreadable event may carry exactly what must not be shown (a name typed into
the wrong field), and reasons go to the logs and the dead-letter stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.events import AGGREGATE_OF, Envelope
from shared.upcasting import UnknownSchemaVersion, decode_event

MAX_PROBLEMS = 10


@dataclass(frozen=True)
class Unreadable:
    """Why an event could not be read; safe to log and to publish."""

    reason: str


@dataclass(frozen=True)
class Skipped:
    """An unreadable event of a batch: where it sits on the log, and why it was left out."""

    sequence: int
    subject: str
    reason: str


# pydantic errors whose message or path can carry what the event said, and what to say instead.
_QUOTES_INPUT = {
    "union_tag_invalid": "is not a known event type",  # its message repeats the tag it was given
    "union_tag_not_found": "names no event type",
}


def _problem(error: Mapping[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    if error["type"] == "extra_forbidden" and loc:
        loc[-1] = "<a field not in the schema>"  # the field's name came from the event
    return f"{'.'.join(loc) or 'event'}: {_QUOTES_INPUT.get(error['type'], error['msg'])}"


def reason_of(exc: Exception) -> str:
    """Field paths and reasons, never the input values."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        return "invalid event: " + "; ".join(_problem(e) for e in errors[:MAX_PROBLEMS])
    if isinstance(exc, UnknownSchemaVersion):
        return str(exc)  # the upcaster's own words: the versions, never anything the event said
    if isinstance(exc, ValueError) and str(exc) in ("not JSON", "not a JSON object"):
        return str(exc)
    return f"unreadable event ({type(exc).__name__})"


def unprojectable(exc: BaseException) -> str:
    """Why a readable event could not be projected: the error's type, never its message (it may quote the event)."""
    return f"event could not be projected ({type(exc).__name__})"


def decode(data: bytes, subject: str | None = None) -> Envelope | Unreadable:
    """The event in ``data``, upcast to today's schema, or why it cannot be read.

    Given the ``subject`` it was stored on, an event must be on its own aggregate's subject
    (``Envelope.subject``): a publisher allowed one subject cannot slip in another aggregate's
    event (a withdrawal, or a 40-person interview, on a survey response's subject)."""
    try:
        event = decode_event(data)
    except Exception as exc:  # noqa: BLE001 - any failure to read one event is that event's, and is reported
        return Unreadable(reason_of(exc))
    if subject is not None and subject != event.subject:
        return Unreadable(misplaced(event))
    return event


def misplaced(event: Envelope) -> str:
    """Why an event on another subject than its own is not read (naming the rule, not the values)."""
    aggregate, id_field = AGGREGATE_OF[event.type]
    article = "an" if event.type[0] in "AEIOU" else "a"
    return (
        f"{article} {event.type} belongs on engagement.<its process>.{aggregate}.<its {id_field}>; "
        "it was stored on another subject"
    )


def decode_batch(raw: Iterable[tuple[int, str, bytes]]) -> tuple[list[tuple[int, Envelope]], list[Skipped]]:
    """(sequence, subject, data) -> the readable events with their sequences, and the skipped ones."""
    events: list[tuple[int, Envelope]] = []
    skipped: list[Skipped] = []
    for seq, subject, data in raw:
        found = decode(data, subject)
        if isinstance(found, Unreadable):
            skipped.append(Skipped(seq, subject, found.reason))
        else:
            events.append((seq, found))
    return events, skipped
