"""The coverage answer from counts and a plan: shares, alone counts, suppression, order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.analytics.answers.coverage import View, coverage
from services.analytics.answers.models import Freshness
from services.analytics.projection.counts import Counts
from services.analytics.projection.fold import ALONE, ANSWERED
from shared.plan import shipped_plans

PLAN = shipped_plans()["shfa-2018"]


def counts(categories: dict[tuple[str, str], int], participants: int) -> Counts:
    return Counts(
        sequence=7,
        participants=participants,
        engagements=participants,
        channels={"survey": participants},
        categories=categories,
    )


def answer(c: Counts, plan: Any, view: View) -> dict[str, Any]:
    """The coverage answer as /coverage sends it (JSON)."""
    fresh = Freshness(
        sequence=c.sequence, stream_sequence=c.sequence, behind=0, projected_at=None, answered_at=datetime.now(UTC)
    )
    return coverage(c, "shfa-2018", plan, view, fresh).model_dump(mode="json")


def dim(body: dict, key: str) -> dict:
    return next(d for d in body["dimensions"] if d["dimension"] == key)


def cat(body: dict, key: str, code: str) -> dict:
    return next(c for c in dim(body, key)["categories"] if c["category"] == code)


def test_shares_are_of_those_who_answered_and_labels_come_from_the_plan() -> None:
    """Declined and unanswered people are reported, but are not in the denominator."""
    body = answer(
        counts(
            {
                ("region", "northeast"): 60,
                ("region", "central"): 20,
                ("region", ANSWERED): 80,
                ("region", "declined"): 10,
            },
            100,
        ),
        PLAN,
        View(5, suppressed=False),
    )
    region = dim(body, "region")
    assert (region["answered"], region["declined"], region["not_answered"]) == (80, 10, 10)
    assert cat(body, "region", "northeast")["share"] == 75.0
    assert cat(body, "region", "twin_cities_west_metro")["label"] == "Twin Cities West Metro"
    assert cat(body, "region", "twin_cities_west_metro")["count"] == 0


def test_multi_select_shares_can_add_past_100_and_alone_is_beside_them() -> None:
    body = answer(
        counts(
            {
                ("race_ethnicity", "white"): 60,
                ("race_ethnicity", "black"): 60,
                ("race_ethnicity", ALONE + "white"): 40,
                ("race_ethnicity", ANSWERED): 100,
            },
            100,
        ),
        PLAN,
        View(5, suppressed=False),
    )
    white, black = cat(body, "race_ethnicity", "white"), cat(body, "race_ethnicity", "black")
    assert white["share"] + black["share"] == 120.0
    assert white["alone"] == 40 and black["alone"] == 0


def test_under_reached_communities_come_first_lowest_ratio_first() -> None:
    body = answer(
        counts(
            {
                ("region", "twin_cities_west_metro"): 90,
                ("region", "northwest"): 2,
                ("region", "west_central"): 8,
                ("region", ANSWERED): 100,
            },
            100,
        ),
        PLAN,
        View(5, suppressed=False),
    )
    regions = [c["category"] for c in body["under_reached"] if c["dimension"] == "region"]
    # northwest's 2 of 100 against 7% is short, but within the noise (Wilson upper bound 7.0%): watch
    assert set(regions) == {"twin_cities_east_metro", "central", "northeast", "southeast", "southwest"}
    assert cat(body, "region", "northwest")["status"] == "watch"
    assert all(c["status"] == "under-reached" for c in body["under_reached"])
    ratios = [c["ratio"] for c in body["under_reached"]]
    assert ratios == sorted(ratios)


def test_an_analyst_sees_every_number() -> None:
    body = answer(counts({("region", "northeast"): 3, ("region", ANSWERED): 3}, 3), PLAN, View(5, suppressed=False))
    assert body["participants"] == 3 and cat(body, "region", "northeast")["count"] == 3
