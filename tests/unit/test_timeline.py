"""Participation over time: periods, weeks from Monday, and suppression of the whole table."""

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


def test_a_week_is_named_by_its_monday() -> None:
    assert period_of(date(2018, 3, 11), "week") == date(2018, 3, 5)  # a Sunday
    assert period_of(date(2018, 3, 12), "week") == date(2018, 3, 12)
    assert period_of(date(2018, 3, 11), "day") == date(2018, 3, 11)


def test_weekly_totals_for_an_analyst() -> None:
    weeks = [w.model_dump() for w in timeline(ROWS, "week", k=5, suppressed=False)]
    assert [w["period"] for w in weeks] == ["2018-03-05", "2018-03-12"]
    assert weeks[0]["engagements"] == {"interview_phone": 2, "survey": 21}
    assert weeks[0]["total_engagements"] == 23
    assert weeks[1]["participants_reached"] == {"interview_phone": 6, "survey": 18}


def test_a_coordinator_sees_no_small_count_and_cannot_work_one_out() -> None:
    """The week with 2 phone interviews hides them, and enough else that 23 - 21 cannot give them away."""
    weeks = [w.model_dump() for w in timeline(ROWS, "week", k=5, suppressed=True)]
    first = weeks[0]
    assert first["engagements"]["interview_phone"] == "<5"
    hidden = [v for w in weeks for v in (*w["engagements"].values(), w["total_engagements"]) if isinstance(v, str)]
    assert len(hidden) >= 2
    for w in weeks:
        for value in (
            *w["engagements"].values(),
            *w["participants_reached"].values(),
            w["total_engagements"],
            w["total_participants_reached"],
        ):
            assert not (isinstance(value, int) and 0 < value < 5)
