"""Shares and suppression, pinned to hand-computed values."""

from __future__ import annotations

import pytest

from services.analytics.coverage import coverage, percent, suppress
from services.analytics.projection import ANSWERED


@pytest.mark.parametrize(("count", "of", "expected"), [
    (90, 288, 31.3),    # the report's Twin Cities West Metro: 31.25 rounds half up
    (111, 288, 38.5),   # lived experience: 38.54
    (1, 8, 12.5),
    (1, 16, 6.3),       # 6.25 -> 6.3, not banker's 6.2
    (0, 5, 0.0),
    (5, 5, 100.0),
])
def test_percent_rounds_half_up_to_one_decimal(count: int, of: int, expected: float) -> None:
    assert percent(count, of) == expected


def test_percent_of_nobody_is_none() -> None:
    assert percent(0, 0) is None


@pytest.mark.parametrize(("count", "shown"), [(0, 0), (1, "<5"), (4, "<5"), (5, 5), (120, 120)])
def test_counts_from_1_to_k_minus_1_are_suppressed(count: int, shown: int | str) -> None:
    assert suppress(count, 5) == shown


def raw(categories: list[tuple[str, str, int]], participants: int) -> dict:
    return {"participants": participants, "engagements": participants, "channels": {"survey": participants},
            "first_event": None, "last_event": None, "categories": categories}


def test_shares_are_of_those_who_answered() -> None:
    """Declined and unanswered people are reported, but are not in the denominator."""
    body = coverage(raw([("region", "northeast", 6), ("region", "central", 2), ("region", ANSWERED, 8),
                         ("region", "declined", 1)], 10), k=5, suppressed=False)
    region = body["dimensions"]["region"]
    assert region["answered"] == 8 and region["declined"] == 1 and region["not_answered"] == 1
    assert region["categories"] == [{"category": "northeast", "count": 6, "share": 75.0},
                                    {"category": "central", "count": 2, "share": 25.0}]


def test_multi_select_shares_can_add_past_100() -> None:
    body = coverage(raw([("race_ethnicity", "white", 6), ("race_ethnicity", "black", 6),
                         ("race_ethnicity", ANSWERED, 10)], 10), k=5, suppressed=False)
    assert sum(c["share"] for c in body["dimensions"]["race_ethnicity"]["categories"]) == 120.0


def test_a_coordinator_sees_no_count_below_k_anywhere() -> None:
    body = coverage(raw([("region", "northeast", 3), ("region", ANSWERED, 3)], 3), k=5, suppressed=True)
    assert body["participants"] == "<5" and body["engagements"] == "<5"
    assert body["engagements_by_channel"] == {"survey": "<5"}
    assert body["dimensions"]["region"]["categories"] == [{"category": "northeast", "count": "<5", "share": None}]
