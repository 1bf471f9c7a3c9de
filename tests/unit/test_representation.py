"""The representation maths, pinned to values computed by hand."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize(("count", "of", "expected"), [
    (90, 288, 31.3),    # the report's Twin Cities West Metro: 31.25 rounds half up
    (111, 288, 38.5),   # lived experience: 38.54
    (1, 16, 6.3),       # 6.25 -> 6.3, not banker's 6.2
    (1, 8, 12.5), (0, 5, 0.0), (5, 5, 100.0),
])
def test_percent_rounds_half_up_to_one_decimal(count: int, of: int, expected: float) -> None:
    assert percent(count, of) == expected


def test_percent_of_nobody_is_none() -> None:
    assert percent(0, 0) is None


def test_wilson_interval_matches_hand_computation() -> None:
    """10 of 100 at 95%: centre 0.114799, half-width 0.059569 (worked by hand)."""
    lo, hi = wilson(10, 100)
    assert lo == pytest.approx(0.055230, abs=1e-5)
    assert hi == pytest.approx(0.174368, abs=1e-5)


def test_wilson_interval_at_the_edges() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.161125, abs=1e-5)
    lo, hi = wilson(20, 20)
    assert hi == 1.0 and lo == pytest.approx(0.838875, abs=1e-5)


def test_needed_is_the_fewest_that_reach_the_threshold() -> None:
    """c=10, n=100, target 25%, threshold 0.8: need (10+x)/(100+x) >= 0.2 -> x = 13."""
    assert needed_for_share(10, 100, 0.25, 0.8) == 13
    assert (10 + 13) / (100 + 13) >= 0.2 > (10 + 12) / (100 + 12)


def test_needed_lands_exactly_on_the_boundary() -> None:
    """c=0, n=4, target 25%, threshold 0.8: (0+1)/(4+1) = 0.2 exactly reaches it."""
    assert needed_for_share(0, 4, 0.25, 0.8) == 1


def test_needed_for_a_minimum_count() -> None:
    """Minimum 10 at threshold 0.8 means 8; with 3 so far, 5 more."""
    assert needed_for_count(3, 10, 0.8) == 5
    assert needed_for_count(9, 10, 0.8) == 0


def test_a_real_shortfall_is_under_reached_with_needed() -> None:
    j = judge(10, 100, share=0.25)
    assert j.status == UNDER_REACHED and j.ratio == pytest.approx(0.4) and j.needed == 13


def test_a_shortfall_within_the_noise_is_watch() -> None:
    """1 of 10 against 25%: ratio 0.4, but the Wilson upper bound (0.404) is above 25%."""
    j = judge(1, 10, share=0.25)
    assert j.status == WATCH and j.needed is None


@pytest.mark.parametrize(("count", "status"), [(20, ON_TRACK), (19, WATCH), (8, UNDER_REACHED)])
def test_status_boundaries_at_the_four_fifths_rule(count: int, status: str) -> None:
    """Target 25% of 100: ratio 0.8 (20) is on track; 0.76 (19) is not yet significant."""
    assert judge(count, 100, share=0.25).status == status


def test_ratio_exactly_at_the_threshold_is_on_track() -> None:
    assert judge(4, 20, share=0.25).status == ON_TRACK  # 0.2 / 0.25 = 0.8 exactly


def test_minimum_count_targets() -> None:
    assert judge(3, 50, min_count=10) .status == UNDER_REACHED
    assert judge(3, 50, min_count=10).needed == 5
    assert judge(8, 50, min_count=10).status == ON_TRACK


def test_no_target_and_no_answers() -> None:
    assert judge(5, 10).status == NO_TARGET
    assert judge(0, 0, share=0.2).status == WATCH
