"""The tests' one way of waiting: it returns what it waited for, or says what it waited for and what it last saw."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.polling import eventually, eventually_sync


async def test_eventually_returns_the_first_value_that_holds() -> None:
    counter = itertools.count()

    async def probe() -> int:
        return next(counter)

    assert await eventually(probe, lambda n: n >= 3, what="three", interval=0) == 3


async def test_eventually_fails_naming_what_it_awaited_and_the_last_value_seen() -> None:
    async def probe() -> dict:
        return {"sequence": 41}

    with pytest.raises(AssertionError, match=r"waiting for the projection to reach 42; last seen: \{'sequence': 41\}"):
        await eventually(
            probe, lambda body: body["sequence"] >= 42, what="the projection to reach 42", timeout=0.2, interval=0.01
        )


async def test_eventually_bounds_a_probe_that_never_answers() -> None:
    async def hangs() -> None:
        await asyncio.sleep(3600)

    with pytest.raises(AssertionError, match="waiting for an answer; last seen: nothing"):
        await eventually(hangs, what="an answer", timeout=0.1)


async def test_eventually_treats_ignored_errors_as_not_yet_and_others_as_the_end() -> None:
    attempts = itertools.count()

    async def flaky() -> str:
        if next(attempts) < 2:
            raise ConnectionError("not listening yet")
        return "up"

    assert await eventually(flaky, what="the server", interval=0, ignoring=(ConnectionError,)) == "up"

    async def broken() -> str:
        raise ValueError("a real failure")

    with pytest.raises(ValueError, match="a real failure"):
        await eventually(broken, what="the server", timeout=5)


def test_eventually_sync_returns_what_holds_or_fails_with_the_last_value() -> None:
    counter = itertools.count()
    assert eventually_sync(lambda: next(counter), lambda n: n == 2, what="two", interval=0) == 2

    def refused() -> bool:
        raise OSError("refused")

    with pytest.raises(AssertionError, match=r"waiting for a yes; last seen: OSError\('refused'\)"):
        eventually_sync(refused, what="a yes", timeout=0.05, interval=0.01, ignoring=(OSError,))
