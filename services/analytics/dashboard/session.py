"""Coordinator sign-in: a bearer token exchanged for a signed session cookie.

The cookie holds the token's name and an expiry, signed with a key derived from that
token's own secret. Nothing is kept on the server, so a session outlives a restart of
analytics (the dashboard reconnects by itself), and replacing a token ends every session
made with it. The token itself never goes into the cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

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


def issue(tokens: Mapping[str, TokenSpec], name: str, now: float | None = None) -> str:
    """A cookie value for the token ``name``, valid for ``LIFETIME`` seconds."""
    body = _b64(orjson.dumps({"n": name, "e": int((now or time.time()) + LIFETIME)}))
    return body + "." + _b64(hmac.new(_key(tokens[name]), body.encode(), hashlib.sha256).digest())


def verify(tokens: Mapping[str, TokenSpec], cookie: str | None, now: float | None = None) -> str | None:
    """The token name a cookie was issued for, if it is genuine, unexpired and still allowed."""
    if not cookie or cookie.count(".") != 1:
        return None
    body, signature = cookie.split(".")
    try:
        claims = orjson.loads(_unb64(body))
        name, expires = claims["n"], int(claims["e"])
        given = _unb64(signature)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return None
    spec = tokens.get(name) if isinstance(name, str) else None
    if spec is None or not allowed(spec) or expires < (now or time.time()):
        return None
    expected = hmac.new(_key(spec), body.encode(), hashlib.sha256).digest()
    return name if hmac.compare_digest(expected, given) else None
