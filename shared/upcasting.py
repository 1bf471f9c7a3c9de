"""Bring events written under older schema versions up to today's, then validate.

A published version never changes meaning. When a payload's shape changes, bump
``shared.events.SCHEMA_VERSION`` and register one upcaster from the old version to the
next: a plain function from the raw event dict to the raw event dict. Replay then reads
every version ever written.

``CURRENT_VERSION`` is the version this reader brings events up to. It starts as
``SCHEMA_VERSION`` and is read on every call (not bound when the module loads), so a
schema-evolution test can move it and register an upcaster for the step, and see what a
reader of the next version would make of the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from shared.events import ENVELOPE, SCHEMA_VERSION, Envelope

RawEvent = dict[str, Any]
Upcaster = Callable[[RawEvent], RawEvent]

# (event type, from version) -> upcaster producing version + 1. "*" applies to every type.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}
CURRENT_VERSION: int = SCHEMA_VERSION


def upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` to lift ``event_type`` from ``from_version`` to ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(event_type, from_version)] = fn
        return fn

    return register


class UnknownSchemaVersion(ValueError):
    pass


def upcast(raw: RawEvent, target: int | None = None) -> RawEvent:
    """Apply registered upcasters until ``raw`` is at ``target`` (default: ``CURRENT_VERSION``).

    A version newer than the target is refused, never guessed at: a reader cannot know
    what a later schema meant.
    """
    if target is None:
        target = CURRENT_VERSION
    version = raw.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise UnknownSchemaVersion("schema_version: is not a positive integer")
    if version > target:
        raise UnknownSchemaVersion(f"schema_version: {version} is newer than this reader ({target})")
    while version < target:
        event_type = raw.get("type", "")
        step = UPCASTERS.get((event_type, version)) or UPCASTERS.get(("*", version))
        if step is None:
            # No change for this type between these versions.
            raw = {**raw, "schema_version": version + 1}
        else:
            raw = {**step(raw), "schema_version": version + 1}
        version += 1
    return raw


def decode_event(data: bytes) -> Envelope:
    """Parse one event from the log, upcasting it first. Raises ``ValueError`` subclasses.

    Most events are of the current version: they are validated straight from the JSON in
    one pass. Anything else (an older version, a shape that fails, a newer version) takes
    the careful path: parse, upcast, validate, with that path's reason if it fails.
    """
    try:
        event = ENVELOPE.validate_json(data)
    except ValueError:
        event = None
    if event is not None and event.schema_version == CURRENT_VERSION:
        return event
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ValueError("not JSON") from None  # the parser's message quotes the input
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    return ENVELOPE.validate_python(upcast(raw))


def encode_event(event: Envelope) -> bytes:
    return event.model_dump_json().encode()
