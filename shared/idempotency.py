"""Idempotency keys become deterministic ids.

A client's ``Idempotency-Key`` is turned into the event id (the ``Nats-Msg-Id``) and into
any new aggregate id, so a retried request rebuilds exactly the same event and JetStream
stores it once. Without a key, ids are random and every request is new.
"""

from __future__ import annotations

import uuid

from fastapi import Header

from shared.errors import EngageError

_NAMESPACE = uuid.UUID("7f1d1c2e-5a43-4c2b-9b8e-2f6c0a3e9d51")


class BadIdempotencyKey(EngageError):
    pass


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise BadIdempotencyKey("Idempotency-Key: must be 1 to 200 printable characters")
    return key


async def idempotency_key(idempotency_key: str | None = Header(None, alias="Idempotency-Key")) -> str | None:
    """FastAPI dependency: the request's Idempotency-Key header, if any."""
    return check_key(idempotency_key)


def derived_uuid(key: str | None, *scope: str) -> uuid.UUID:
    """A UUID fixed by (key, scope) when a key is given, random otherwise."""
    if key is None:
        return uuid.uuid4()
    return uuid.uuid5(_NAMESPACE, "\x1f".join((*scope, key)))


def derived_id(key: str | None, prefix: str, *scope: str) -> str:
    """An aggregate id such as ``iv-3f9c...``: fixed by the key when one is given."""
    return f"{prefix}-{derived_uuid(key, prefix, *scope).hex[:20]}"
