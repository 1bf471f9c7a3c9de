"""Waiting for what happens elsewhere (a projector catching up, a server starting): one way to do it.

``await eventually(probe, until, what=...)`` calls ``probe`` until ``until`` holds for what it
returns, and returns that value. After ``timeout`` seconds it fails, saying what it waited
for and the last value it saw, instead of hanging or failing with a bare ``assert``. The
timeout bounds the whole wait, a probe that blocks (reading an event stream) included.

``eventually_sync`` is the same for tests that are not async (processes polled over HTTP).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_NOTHING = object()


def _failure(what: str, timeout: float, last: object) -> AssertionError:
    seen = "nothing (the probe never answered)" if last is _NOTHING else repr(last)
    if len(seen) > 2000:
        seen = seen[:2000] + " ..."
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}; last seen: {seen}")


def _holds(until: Callable[[Any], object], value: object) -> bool:
    return bool(until(value))


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], object] = bool,
    *,
    what: str,
    timeout: float = 15.0,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``await probe()`` until ``until(value)`` is true; that value, or an AssertionError after ``timeout`` s.

    An exception of a type in ``ignoring`` counts as "not yet" (it becomes the last value
    seen); any other exception ends the wait at once.
    """
    last: object = _NOTHING
    limit = asyncio.timeout(timeout)
    try:
        async with limit:
            while True:
                try:
                    value = await probe()
                except ignoring as error:
                    last = error
                else:
                    last = value
                    if _holds(until, value):
                        return value
                if interval:
                    await asyncio.sleep(interval)
    except TimeoutError:
        if not limit.expired():
            raise  # the probe's own timeout, not ours
        raise _failure(what, timeout, last) from None


def eventually_sync(
    probe: Callable[[], T],
    until: Callable[[T], object] = bool,
    *,
    what: str,
    timeout: float = 15.0,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """``eventually`` for plain functions: ``probe()`` until ``until(value)`` is true, at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: object = _NOTHING
    while True:
        try:
            value = probe()
        except ignoring as error:
            last = error
        else:
            last = value
            if _holds(until, value):
                return value
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last)
        time.sleep(interval)
