"""Limits that keep one client from wearing the dashboard down: sign-in attempts, open streams.

Both are kept in this process's memory: they protect this process's own resources (an open
stream holds a connection and a task here), and after a restart they start afresh.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

SIGN_IN_FAILURES = 10  # refused sign-ins allowed per client in a window …
SIGN_IN_WINDOW = 300.0  # … of this many seconds; then 429 until the oldest falls out of it
STREAMS_PER_SESSION = 5  # a coordinator's tabs
STREAMS_IN_ALL = 200


@dataclass
class Throttle:
    """Counts failures per client in a sliding window."""

    limit: int = SIGN_IN_FAILURES
    window: float = SIGN_IN_WINDOW
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def wait(self, client: str) -> int:
        """Seconds ``client`` must wait before trying again (0: it may try now)."""
        recent = self._recent(client)
        if len(recent) < self.limit:
            return 0
        return max(1, math.ceil(recent[0] + self.window - self.clock()))

    def failed(self, client: str) -> None:
        self._recent(client).append(self.clock())
        if len(self._failures) > 10_000:  # many clients: forget the quiet ones
            for quiet in [c for c, times in self._failures.items() if not times]:
                del self._failures[quiet]

    def _recent(self, client: str) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] <= self.clock() - self.window:
            times.popleft()
        return times


class TooManyStreams(Exception):
    """No stream slot is free, for the session asking or at all."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class StreamSlots:
    """Open event streams, per session and in all."""

    per_session: int = STREAMS_PER_SESSION
    in_all: int = STREAMS_IN_ALL
    _open: dict[str, int] = field(default_factory=dict)

    def take(self, session_id: str) -> None:
        """Take a slot for one more stream of ``session_id``, or raise TooManyStreams."""
        if sum(self._open.values()) >= self.in_all:
            raise TooManyStreams(f"the dashboard has {self.in_all} open streams already; try again shortly")
        if self._open.get(session_id, 0) >= self.per_session:
            raise TooManyStreams(f"your sign-in has {self.per_session} open streams; close a tab of the dashboard")
        self._open[session_id] = self._open.get(session_id, 0) + 1

    def give_back(self, session_id: str) -> None:
        left = self._open.get(session_id, 0) - 1
        if left > 0:
            self._open[session_id] = left
        else:
            self._open.pop(session_id, None)

    def open(self, session_id: str | None = None) -> int:
        return sum(self._open.values()) if session_id is None else self._open.get(session_id, 0)
