"""The per-form token: when the form was shown, a random nonce, and an HMAC over both.

Nothing about the person is in it or kept: it only proves the form came from this service,
tells how long the form was open, and is the response's idempotency key (a double submit
records once).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    ok = "ok"
    forged = "forged"
    too_fast = "too_fast"
    stale = "stale"


@dataclass(frozen=True)
class FormTokens:
    """Issue and check form tokens with a secret that never leaves the service."""

    secret: bytes
    min_seconds: float
    max_age_seconds: float
    clock: Callable[[], float] = time.time

    def _mac(self, issued: int, nonce: str) -> str:
        digest = hmac.new(self.secret, f"{issued}.{nonce}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self) -> str:
        issued = int(self.clock() * 1000)
        nonce = secrets.token_urlsafe(16)
        return f"{issued}.{nonce}.{self._mac(issued, nonce)}"

    def check(self, token: str) -> Verdict:
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or len(token) > 200:
            return Verdict.forged
        issued, nonce, mac = int(parts[0]), parts[1], parts[2]
        if not hmac.compare_digest(mac, self._mac(issued, nonce)):
            return Verdict.forged
        age = self.clock() - issued / 1000
        if age > self.max_age_seconds:
            return Verdict.stale
        if age < self.min_seconds:
            return Verdict.too_fast
        return Verdict.ok

    @staticmethod
    def nonce(token: str) -> str:
        """The token's random part: the response's idempotency key."""
        return token.split(".")[1]
