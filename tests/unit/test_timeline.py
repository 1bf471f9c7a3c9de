"""Participation over time: periods, weeks from Monday, and rounding for coordinators."""

from __future__ import annotations

from datetime import date

from services.analytics.answers.timeline import period_of, timeline

ROWS = [
    (date(2018, 3, 5), "survey", 12, 12),  # a Monday
    (date(2018, 3, 7), "survey", 9, 9),
    (date(2018, 3, 7), "interview_phone", 2, 2),
    (date(2018, 3, 12), "survey", 20, 18),  # the next Monday
    (date(2018, 3, 12), "interview_phone", 7, 6),
]
ENGAGED = {(day, channel): e for day, channel, e, _ in ROWS}
REACHED = {(day, channel): p for day, channel, _, p in ROWS}
ENGAGED_FIRST = (date(2018, 3, 5), "survey")


def test_a_week_is_named_by_its_monday() -> None:
    assert period_of(date(2018, 3, 11), "week") == date(2018, 3, 5)  # a Sunday
    assert period_of(date(2018, 3, 12), "week") == date(2018, 3, 12)
    assert period_of(date(2018, 3, 11), "day") == date(2018, 3, 11)


def test_weekly_totals_for_an_analyst() -> None:
    weeks = [w.model_dump() for w in timeline(ENGAGED, REACHED, "week", k=5)]
    assert [w["period"] for w in weeks] == ["2018-03-05", "2018-03-12"]
    assert weeks[0]["engagements"] == {"interview_phone": 2, "survey": 21}
    assert weeks[0]["total_engagements"] == 23
    assert weeks[1]["participants_reached"] == {"interview_phone": 6, "survey": 18}


def test_days_and_weeks_round_as_the_people_in_them() -> None:
    """A coordinator's week is rounded by the sum of its days' keys: every number a multiple of 5,
    within 4 of the truth, and the same week from the same days however the keys are split."""
    keys = {("day", d.isoformat(), c): (i + 1) * 0x9E3779B97F4A7C15 % (1 << 64) for i, (d, c) in enumerate(ENGAGED)}
    keys |= {("first", d.isoformat(), c): (i + 7) * 0x9E3779B97F4A7C15 % (1 << 64) for i, (d, c) in enumerate(REACHED)}
    exact = timeline(ENGAGED, REACHED, "week", k=5)
    rounded = timeline(ENGAGED, REACHED, "week", k=5, keys=keys)
    for e, r in zip(exact, rounded, strict=True):
        pairs = [
            *zip(e.engagements.values(), r.engagements.values(), strict=True),
            *zip(e.participants_reached.values(), r.participants_reached.values(), strict=True),
            (e.total_engagements, r.total_engagements),
            (e.total_participants_reached, r.total_participants_reached),
        ]
        for true, shown in pairs:
            assert isinstance(true, int)
            value = 0 if shown == "<5" else shown
            assert isinstance(value, int) and value % 5 == 0 and abs(value - true) < 5
    by_day = timeline(ENGAGED, REACHED, "day", k=5, keys=keys)
    assert by_day[0].engagements == {
        "survey": timeline({ENGAGED_FIRST: 12}, {}, "day", 5, keys)[0].engagements["survey"]
    }


def test_a_coordinators_grid_lists_every_period_and_channel_given() -> None:
    """A segment's weeks and channels are the whole process's, so none appears because someone is in it."""
    keys = {("day", d.isoformat(), c): 1 << 63 for d, c in ENGAGED}
    grid = ([date(2018, 3, 5), date(2018, 3, 12), date(2018, 3, 19)], ["survey", "interview_phone", "advisory"])
    weeks = timeline(
        {(date(2018, 3, 12), "survey"): 2}, {}, "week", 5, keys | {("day", "2018-03-12", "survey"): (1 << 64) - 1}, grid
    )
    assert [w.period for w in weeks] == ["2018-03-05", "2018-03-12", "2018-03-19"]
    assert all(set(w.engagements) == {"survey", "interview_phone", "advisory"} for w in weeks)
    assert {v for w in weeks for v in w.engagements.values()} == {"<5"}
