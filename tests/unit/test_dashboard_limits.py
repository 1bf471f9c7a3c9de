"""The dashboard's own limits, as plain objects: refused sign-ins per client, open streams."""

from __future__ import annotations

import pytest

from services.analytics.dashboard import session
from services.analytics.dashboard.limits import StreamSlots, Throttle, TooManyStreams
from shared.settings import TokenSpec

TOKENS = {"coordinator": TokenSpec(token="c" * 24, scopes=["coverage:read"])}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_that_keeps_failing_waits_until_its_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    throttle = Throttle(limit=3, window=60, clock=clock)
    for _ in range(3):
        assert throttle.wait("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
        clock.now += 1
    assert throttle.wait("10.0.0.1") == 57  # now 1003: the first failure, at 1000, leaves the window at 1060
    assert throttle.wait("10.0.0.2") == 0  # another client is not held back
    clock.now = 1061
    assert throttle.wait("10.0.0.1") == 0


def test_streams_are_capped_per_session_and_in_all_and_slots_come_back() -> None:
    slots = StreamSlots(per_session=2, in_all=3)
    slots.take("a")
    slots.take("a")
    with pytest.raises(TooManyStreams, match="your sign-in has 2 open streams"):
        slots.take("a")
    slots.take("b")
    with pytest.raises(TooManyStreams, match="3 open streams already"):
        slots.take("c")
    slots.give_back("a")
    slots.take("c")
    assert (slots.open(), slots.open("a"), slots.open("c")) == (3, 1, 1)


def test_each_sign_in_is_a_session_of_its_own() -> None:
    """Two cookies for one token carry different session ids, so signing out one leaves the other."""
    first, second = (session.read(TOKENS, session.issue(TOKENS, "coordinator")) for _ in range(2))
    assert first is not None and second is not None and first.id != second.id
    assert first.name == second.name == "coordinator"
