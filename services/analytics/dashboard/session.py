"""Coordinator sign-in: a bearer token exchanged for a signed session cookie.

The cookie holds the token's name, a random session id and an expiry, signed with a key
derived from that token's own secret. So a session outlives a restart of analytics (the
dashboard reconnects by itself), and replacing a token ends every session made with it.
Signing out records the session id on the server (``store.sessions``), so a copy of the
cookie stops working too. The token itself never goes into the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from shared.settings import TokenSpec

COOKIE = "engage_session"
LIFETIME = 12 * 3600  # seconds: a working day, then sign in again
SCOPE = "coverage:read"


def _key(spec: TokenSpec) -> bytes:
    return hmac.new(spec.token.encode(), b"engage dashboard session v1", hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def allowed(spec: TokenSpec) -> bool:
    return SCOPE in spec.scopes or "admin" in spec.scopes


def token_name(tokens: Mapping[str, TokenSpec], presented: str) -> str | None:
    """The name of the token ``presented`` if it may open the dashboard."""
    for name, spec in tokens.items():
        if hmac.compare_digest(spec.token.encode(), presented.encode()) and allowed(spec):
            return name
    return None


@dataclass(frozen=True)
class Session:
    """A genuine, unexpired session: whose token opened it, its id, and when it expires (epoch seconds)."""

    name: str
    id: str
    expires: int


def issue(tokens: Mapping[str, TokenSpec], name: str, now: float | None = None) -> str:
    """A cookie value for the token ``name``, valid for ``LIFETIME`` seconds."""
    claims = {"n": name, "s": secrets.token_urlsafe(12), "e": int((now or time.time()) + LIFETIME)}
    body = _b64(orjson.dumps(claims))
    return body + "." + _b64(hmac.new(_key(tokens[name]), body.encode(), hashlib.sha256).digest())


def read(tokens: Mapping[str, TokenSpec], cookie: str | None, now: float | None = None) -> Session | None:
    """The session a cookie holds, if it is genuine, unexpired and its token still allowed
    (whether it was signed out is the server's to say: ``store.sessions``)."""
    if not cookie or cookie.count(".") != 1:
        return None
    body, signature = cookie.split(".")
    try:
        claims = orjson.loads(_unb64(body))
        name, session_id, expires = claims["n"], claims["s"], int(claims["e"])
        given = _unb64(signature)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None
    spec = tokens.get(name) if isinstance(name, str) else None
    if spec is None or not isinstance(session_id, str) or not allowed(spec) or expires < (now or time.time()):
        return None
    expected = hmac.new(_key(spec), body.encode(), hashlib.sha256).digest()
    return Session(name, session_id, expires) if hmac.compare_digest(expected, given) else None


def verify(tokens: Mapping[str, TokenSpec], cookie: str | None, now: float | None = None) -> str | None:
    """The token name a cookie was issued for, if it is genuine, unexpired and still allowed."""
    found = read(tokens, cookie, now)
    return found.name if found else None
