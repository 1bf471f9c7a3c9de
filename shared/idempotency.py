"""Idempotency keys: every write has one, and it becomes the write's deterministic ids.

A client's ``Idempotency-Key`` (or, when it sends none, one the server chooses for it) is
turned into the event id (the ``Nats-Msg-Id``) and into any new aggregate id, so a retried
request rebuilds exactly the same event and it is stored once. Keys are scoped per token:
the same key sent with two tokens names two different writes.

``IdempotencyKeys`` (an ASGI middleware on intake and survey) gives every write a key and
returns it in the answer's ``Idempotency-Key`` header, 2xx and 503 alike, so even a client
that sent none can retry a write whose answer it did not trust without it being stored twice.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Header
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import EngageError

_NAMESPACE = uuid.UUID("7f1d1c2e-5a43-4c2b-9b8e-2f6c0a3e9d51")
HEADER = "Idempotency-Key"
_HEADER = HEADER.lower().encode()
SERVER_PREFIX = "srv-"  # keys the server chose start so
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BadIdempotencyKey(EngageError):
    pass


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not key.isprintable():
        raise BadIdempotencyKey("Idempotency-Key: must be 1 to 200 printable characters")
    return key


def _valid(key: str | None) -> bool:
    try:
        return check_key(key) is not None
    except BadIdempotencyKey:
        return False


@dataclass(frozen=True)
class Key:
    """A write's idempotency key as the service scopes it: the token that sent it, and its value."""

    token: str
    value: str

    @property
    def chosen_by_server(self) -> bool:
        return self.value.startswith(SERVER_PREFIX)


async def idempotency_key(idempotency_key: str | None = Header(None, alias=HEADER)) -> str | None:
    """FastAPI dependency: the request's Idempotency-Key header (``IdempotencyKeys`` fills it in for writes)."""
    return check_key(idempotency_key)


def write_key(token: Callable[..., Any]) -> Callable[..., Any]:
    """A dependency giving a write its ``Key``: ``token`` is the route's ``require_scope`` dependency.

    Pass the very dependency the route (or its router) already uses, so the token is checked once.
    """

    async def key(client: str = Depends(token), value: str | None = Depends(idempotency_key)) -> Key:
        # Only reachable without a key when the app runs without ``IdempotencyKeys``.
        return Key(client, value or new_key())

    return key


def new_key() -> str:
    return SERVER_PREFIX + uuid.uuid4().hex


def derived_uuid(key: Key, *scope: str) -> uuid.UUID:
    """A UUID fixed by (token, key, scope)."""
    return uuid.uuid5(_NAMESPACE, "\x1f".join((*scope, key.token, key.value)))


def derived_id(key: Key, prefix: str, *scope: str) -> str:
    """An aggregate id such as ``iv-3f9c...``, fixed by the key."""
    return f"{prefix}-{derived_uuid(key, prefix, *scope).hex[:20]}"


def fingerprint(route: str, body: BaseModel | None, **params: str) -> str:
    """What a request asked for, as a hash: its route, path parameters and body (as validated).

    The same key with a different fingerprint is a different request, and is refused.
    """
    content = {
        "route": route,
        "params": params,
        "body": body.model_dump(mode="json", exclude_unset=True) if body is not None else None,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def conflicting_key(_key: Key) -> str:
    """The 409's reason for a key reused with a different request (the key itself is not echoed back)."""
    return f"{HEADER}: this key was already used for a different request; send a new key for a new request"


class IdempotencyKeys:
    """Every write gets a key, and every answer to a write names it.

    A write without an ``Idempotency-Key`` header is given one the server chose (``srv-…``),
    as if the client had sent it; the answer, whatever its status, carries the key in its
    ``Idempotency-Key`` header. A malformed key is left for the route to refuse (422) and is
    never echoed back.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        given = [value for name, value in scope["headers"] if name == _HEADER]
        if given:
            key = given[0].decode("latin-1")
        else:
            key = new_key()
            scope = {**scope, "headers": [*scope["headers"], (_HEADER, key.encode())]}
        echo = _valid(key)

        async def sending(message: Message) -> None:
            if echo and message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", []) if n != _HEADER]
                message = {**message, "headers": [*headers, (_HEADER, key.encode("latin-1"))]}
            await send(message)

        await self.app(scope, receive, sending)
