"""The representation maths, pinned to values computed by hand and checked against counting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.answers.representation import (
    NO_TARGET,
    ON_TRACK,
    UNDER_REACHED,
    WATCH,
    judge,
    needed_for_count,
    needed_for_share,
    percent,
    wilson,
)


@pytest.mark.parametrize(
    ("count", "of", "expected"),
    [
        (90, 288, 31.3),  # the report's Twin Cities West Metro: 31.25 rounds half up
        (111, 288, 38.5),  # lived experience: 38.54
        (1, 16, 6.3),  # 6.25 -> 6.3, not banker's 6.2
        (1, 8, 12.5),
        (0, 5, 0.0),
        (5, 5, 100.0),
    ],
)
def test_percent_rounds_half_up_to_one_decimal(count: int, of: int, expected: float) -> None:
    assert percent(count, of) == expected


def test_percent_of_nobody_is_none() -> None:
    assert percent(0, 0) is None


def test_wilson_interval_matches_hand_computation() -> None:
    """10 of 100 at 95%: centre 0.114799, half-width 0.059569 (worked by hand)."""
    lo, hi = wilson(10, 100)
    assert lo == pytest.approx(0.055230, abs=1e-5)
    assert hi == pytest.approx(0.174368, abs=1e-5)


def test_wilson_interval_is_zero_to_one_for_nobody_and_touches_the_edge_at_none_or_all() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.161125, abs=1e-5)
    lo, hi = wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.838875, abs=1e-5)


def fewest_more_by_counting(count: int, n: int, percent_target: int, threshold_percent: int) -> int | None:
    """Add one participant at a time until (count + x) / (n + x) reaches the goal, in integers only."""
    goal_num, goal_den = percent_target * threshold_percent, 100 * 100
    if goal_num >= goal_den:
        return 0 if count == n else None  # a goal of everyone is met only by everyone
    for x in range(100 * n + 1):  # the goal is at most 99%: 99 n more always reach it
        if (count + x) * goal_den >= goal_num * (n + x):
            return x
    raise AssertionError("counting never reached the goal")


def test_needed_is_the_fewest_that_reach_the_threshold() -> None:
    """c=10, n=100, target 25%, threshold 0.8: (10+x)/(100+x) >= 0.2 first holds at x = 13."""
    assert needed_for_share(10, 100, 0.25, 0.8) == 13 == fewest_more_by_counting(10, 100, 25, 80)


def test_needed_lands_exactly_on_the_boundary() -> None:
    """c=0, n=4, target 25%, threshold 0.8: (0+1)/(4+1) = 0.2 exactly reaches it."""
    assert needed_for_share(0, 4, 0.25, 0.8) == 1 == fewest_more_by_counting(0, 4, 25, 80)


@settings(max_examples=400, deadline=None)
@given(
    n=st.integers(1, 300),
    data=st.data(),
    percent_target=st.integers(1, 100),
    threshold_percent=st.sampled_from([50, 75, 80, 90, 100]),
)
def test_needed_for_a_share_equals_adding_one_participant_at_a_time(
    n: int, data: st.DataObject, percent_target: int, threshold_percent: int
) -> None:
    """For any count, size, target and threshold, the formula agrees with counting up one by one."""
    count = data.draw(st.integers(0, n), label="count")
    expected = fewest_more_by_counting(count, n, percent_target, threshold_percent)
    assert needed_for_share(count, n, percent_target / 100, threshold_percent / 100) == expected


def test_needed_for_a_minimum_count_is_what_is_missing_to_its_four_fifths() -> None:
    """Minimum 10 at threshold 0.8 means 8; with 3 so far, 5 more; with 9, none."""
    assert needed_for_count(3, 10, 0.8) == 5
    assert needed_for_count(9, 10, 0.8) == 0


@settings(max_examples=300, deadline=None)
@given(minimum=st.integers(1, 200), count=st.integers(0, 250), threshold_percent=st.sampled_from([50, 75, 80, 90, 100]))
def test_needed_for_a_minimum_count_equals_adding_one_participant_at_a_time(
    minimum: int, count: int, threshold_percent: int
) -> None:
    x = 0
    while (count + x) * 100 < threshold_percent * minimum:
        x += 1
    assert needed_for_count(count, minimum, threshold_percent / 100) == x


def test_a_real_shortfall_is_under_reached_with_needed() -> None:
    j = judge(10, 100, share=0.25)
    assert j.status == UNDER_REACHED and j.ratio == pytest.approx(0.4) and j.needed == 13


def test_a_shortfall_within_the_noise_is_watch() -> None:
    """1 of 10 against 25%: ratio 0.4, but the Wilson upper bound (0.404) is above 25%."""
    j = judge(1, 10, share=0.25)
    assert j.status == WATCH and j.needed is None


@pytest.mark.parametrize(("count", "status"), [(20, ON_TRACK), (19, WATCH), (8, UNDER_REACHED)])
def test_status_changes_at_the_four_fifths_ratio_and_at_the_wilson_bound(count: int, status: str) -> None:
    """Target 25% of 100: ratio 0.8 (20) is on track; 0.76 (19) is not yet significant."""
    assert judge(count, 100, share=0.25).status == status


def test_ratio_exactly_at_the_threshold_is_on_track() -> None:
    assert judge(4, 20, share=0.25).status == ON_TRACK  # 0.2 / 0.25 = 0.8 exactly


def test_below_four_fifths_of_a_minimum_count_is_under_reached_whatever_the_noise() -> None:
    """A minimum count has no sampling noise: 3 of a minimum 10 needs 5 more; 8 is on track."""
    assert judge(3, 50, min_count=10).status == UNDER_REACHED
    assert judge(3, 50, min_count=10).needed == 5
    assert judge(8, 50, min_count=10).status == ON_TRACK


def test_a_category_without_a_target_is_no_target_and_one_nobody_answered_is_watch() -> None:
    assert judge(5, 10).status == NO_TARGET
    assert judge(0, 0, share=0.2).status == WATCH
