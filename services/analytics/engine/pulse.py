"""A beat per projection commit, for whoever is waiting to show fresh numbers (the dashboard).

The projector calls ``beat()`` after each committed batch; a waiter remembers the last
beat it saw and ``wait_after`` returns as soon as there is a newer one.
"""

from __future__ import annotations

import asyncio


class Pulse:
    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def beat(self) -> None:
        self.count += 1
        self._event.set()
        self._event = asyncio.Event()  # waiters hold the old one, which stays set

    async def wait_after(self, seen: int, timeout: float) -> int:
        """The newest beat once it is past ``seen``, or the current one after ``timeout`` s."""
        if self.count > seen:
            return self.count
        try:
            async with asyncio.timeout(timeout):  # not wait_for: 3.11's can swallow a cancel
                await self._event.wait()
        except TimeoutError:
            pass
        return self.count
