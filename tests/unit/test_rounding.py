"""Coordinators' numbers: random rounding to base k keyed by who is counted, and statuses that
never hide a problem."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.answers.coverage import Shower, View, coverage, judged
from services.analytics.answers.models import CoverageAnswer, Freshness
from services.analytics.answers.segments import Segment, members, parse_segment
from services.analytics.answers.suppression import bounds, cell_keys, record_key, round_to_base, show
from services.analytics.dashboard.snapshot import snapshot
from services.analytics.export.tables import coverage_rows, totals_rows
from services.analytics.projection.counts import counts_of
from services.analytics.projection.fold import ParticipantState
from shared.events import Channel
from shared.plan import shipped_plans
from shared.profile import CATEGORIES
from shared.status_events import Status
from tests.populations import keyed, person, populations

PLAN = shipped_plans()["shfa-2018"]
K = 5
ROUNDED = View(K, suppressed=True, release_every=K)
EXACT = View(K, suppressed=False)
FRESH = Freshness(sequence=1, stream_sequence=1, behind=0, projected_at=None, answered_at=datetime.now(UTC))


def answer(members_: list[tuple[int, ParticipantState]], view: View, segment: Segment | None = None) -> CoverageAnswer:
    chosen = [(k, s) for k, s in members_ if segment is None or next(members([s], segment, PLAN), None)]
    counts = counts_of([s for _, s in chosen], PLAN, sequence=1)
    return coverage(counts, "shfa-2018", PLAN, view, FRESH, segment, cell_keys(chosen, PLAN))


def numbers(value: Any) -> list[Any]:
    """Every count-like value of an answer (shares, ratios and the like left out)."""
    skip = {"share", "share_of_profiled", "ratio", "interval", "needed", "target", "as_of", "suppression", "plan"}
    if isinstance(value, dict):
        return [n for key, v in value.items() if key not in skip for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return [value] if isinstance(value, int) and not isinstance(value, bool) else []


def test_rounding_keeps_multiples_and_moves_others_less_than_k() -> None:
    for value in range(40):
        for key in (0, 1 << 63, (1 << 64) - 1, 12345):
            p = round_to_base(value, key, K)
            assert p % K == 0 and abs(p - value) < K
            if value % K == 0:
                assert p == value


def test_rounding_is_unbiased_over_the_keys() -> None:
    """Over evenly spread keys, a count's rounded values average to the count itself."""
    spread = [i * (1 << 64) // 1000 for i in range(1000)]
    for value in range(0, 23):
        mean = sum(round_to_base(value, key, K) for key in spread) / len(spread)
        assert abs(mean - value) < 0.01, value


def test_show_and_bounds_say_the_same_thing() -> None:
    assert show(0, K) == "<5" and show(10, K) == 10
    assert bounds("<5", K, rounded=True) == (0, 4)
    assert bounds(10, K, rounded=True) == (6, 14)
    assert bounds(5, K, rounded=True) == (1, 9)
    assert bounds(7, K, rounded=False) == (7, 7)


def test_record_keys_are_secret_and_stable() -> None:
    assert record_key(b"s" * 32, "p-1") == record_key(b"s" * 32, "p-1")
    assert record_key(b"s" * 32, "p-1") != record_key(b"t" * 32, "p-1")
    assert record_key(b"s" * 32, "p-1") != record_key(b"s" * 32, "p-2")


@settings(max_examples=40, deadline=None)
@given(populations)
def test_a_coordinator_sees_only_multiples_of_k(states: list[ParticipantState]) -> None:
    """No count from 1 to k-1 anywhere, every count a multiple of k, and 0 reads "<k"."""
    body = answer(keyed(states), ROUNDED).model_dump(mode="json")
    for d in body["dimensions"]:
        if d["derived"]:  # a derived group has no declined or unanswered people: always 0
            assert (d.pop("declined"), d.pop("not_answered")) == (0, 0)
    values = numbers(body)
    assert all(v % K == 0 and v >= K for v in values), values
    assert body["suppression"] == {
        "k": K,
        "applied": True,
        "method": "rounded",
        "release": 1,
        "release_number": None,
        "release_every": K,
    }
    assert body["participants"] == (body["participants"] if states else "<5")


@settings(max_examples=40, deadline=None)
@given(populations)
def test_each_rounded_count_is_within_k_of_the_truth(states: list[ParticipantState]) -> None:
    members_ = keyed(states)
    exact, rounded = answer(members_, EXACT), answer(members_, ROUNDED)
    shower = Shower(ROUNDED, {})
    for d_exact, d_rounded in zip(exact.dimensions, rounded.dimensions, strict=True):
        for e, r in zip(d_exact.categories, d_rounded.categories, strict=True):
            lo, hi = shower.bounds(r.count)
            assert isinstance(e.count, int) and lo <= e.count <= hi
        lo, hi = shower.bounds(d_rounded.not_answered)
        assert isinstance(d_exact.not_answered, int) and lo <= d_exact.not_answered <= hi


@settings(max_examples=30, deadline=None)
@given(populations)
def test_the_same_people_round_the_same_however_asked(states: list[ParticipantState]) -> None:
    """Central among people with lived experience: a row of one segment, a row of the other."""
    members_ = keyed(states)
    one = answer(members_, ROUNDED, parse_segment(PLAN, "lived_experience:yes"))
    other = answer(members_, ROUNDED, parse_segment(PLAN, "region:central"))
    both = answer(members_, ROUNDED, parse_segment(PLAN, "region:central,lived_experience:yes"))
    central, lived = one.row("region", "central"), other.row("lived_experience", "yes")
    assert central is not None and lived is not None
    assert central.count == lived.count == both.participants
    again = answer(list(reversed(members_)), ROUNDED, parse_segment(PLAN, "lived_experience:yes"))
    assert again == one


def test_a_hidden_under_reached_category_is_flagged_never_on_track() -> None:
    """One non-binary participant (a floor of 5): "<5" could be 0 to 4; 4 would be on track, 0 to 3
    not, so the row asks for attention and is listed among the under-reached."""
    crowd = [person("central", "no", ["female"], {"survey": 1}, 0) for _ in range(30)]
    states = [*crowd, person("central", "yes", ["non_binary"], {"survey": 1}, 1)]
    body = answer(keyed(states), ROUNDED)
    row = body.row("gender", "non_binary")
    assert row is not None and row.count in ("<5", 5)  # rounded down, or (one time in five) up
    if row.count == "<5":  # no share of an unknown 0 to 4
        assert row.share is None and row.ratio is None and row.share_of_profiled is None
    assert row.status is Status.ATTENTION
    assert row.needed == 1 and row.needed_is_lower_bound
    assert ("gender", "non_binary") in {(u.dimension, u.category) for u in body.under_reached}
    analyst = answer(keyed(states), EXACT).row("gender", "non_binary")
    assert analyst is not None and analyst.status is Status.UNDER_REACHED and analyst.needed == 3


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(1, 80),
    st.sampled_from([0.05, 0.1, 0.3, 0.5]),
)
def test_a_judgement_from_ranges_is_one_every_value_agrees_on(lo: int, width: int, n: int, share: float) -> None:
    """Never on track (or any status) unless every count and base in the ranges says so."""
    target = PLAN.dimensions["region"].categories["central"].target
    assert target is not None
    target = target.model_copy(update={"share": share})
    count, base = (lo, lo + width % 9), (n, n + width % 7)
    judgement, agree = judged(count, base, target, 0.8)
    every = {
        judged((c, c), (b, b), target, 0.8)[0].status
        for c in range(count[0], count[1] + 1)
        for b in range(base[0], base[1] + 1)
    }
    if agree:
        assert every == {judgement.status}
    else:
        assert len(every) > 1 or judgement.status is Status.UNDER_REACHED
        assert judgement.status in (Status.ATTENTION, Status.UNDER_REACHED)


def test_a_count_read_as_under_k_has_no_share_or_ratio() -> None:
    """A lone non-binary participant whose key rounds them down: "<5" and nothing worked out of it."""
    crowd = [
        (i * 0x9E3779B97F4A7C15 % (1 << 64), person("central", "no", ["female"], {"survey": 1}, 0)) for i in range(30)
    ]
    lone = (1 << 63, person("central", "yes", ["non_binary"], {"survey": 1}, 1))  # 1 rounds up only below 2**64/5
    body = answer([*crowd, lone], ROUNDED)
    row = body.row("gender", "non_binary")
    assert row is not None and row.count == "<5"
    assert row.share is None and row.ratio is None and row.share_of_profiled is None and row.interval is None
    assert row.status is Status.ATTENTION


@settings(max_examples=30, deadline=None)
@given(populations)
def test_a_row_or_channel_is_there_whether_anyone_is_in_it_or_not(states: list[ParticipantState]) -> None:
    """For coordinators every channel and every category of a question is listed, so that a row's
    presence never says "at least one" (its count, "<5", says 0 to 4)."""
    body = answer(keyed(states), ROUNDED, parse_segment(PLAN, "gender:non_binary"))
    every = {c.value for c in Channel}
    assert set(body.engagements_by_channel) == set(body.people_by_channel) == every
    for d in body.dimensions:
        if not d.derived:
            assert {r.category for r in d.categories} >= set(CATEGORIES[d.dimension])
    exact = answer(keyed(states), EXACT, parse_segment(PLAN, "gender:non_binary"))
    assert set(exact.engagements_by_channel) <= every  # analysts: the channels used


def test_both_share_bases_reach_the_export_tables_and_the_dashboard() -> None:
    """Share of those who answered and of everyone who gave a profile, side by side, and people per
    channel beside engagements (exact here: an analyst's export)."""
    states = [person("central", "yes", ["female"], {"survey": 1}, 0) for _ in range(6)]
    states += [person("declined", "no", ["male"], {"advisory": 2}, 0) for _ in range(4)]
    body = answer(keyed(states), EXACT)
    central = next(r for r in coverage_rows(body) if (r["dimension"], r["category"]) == ("region", "central"))
    assert (central["share"], central["share_of_profiled"]) == (100.0, 60.0)  # 6 of 6 answered, 6 of 10
    totals = {(r["measure"], r["channel"]): r["count"] for r in totals_rows(body)}
    assert totals[("profiled", None)] == 10
    assert (totals[("participants", "advisory")], totals[("engagements", "advisory")]) == (4, 8)
    row = next(r for d in snapshot_row_dims(body) for r in d["categories"] if r["category"] == "central")
    assert row["share_of_profiled"] == 60.0


def snapshot_row_dims(body: CoverageAnswer) -> list[dict[str, Any]]:
    snap = snapshot(body, [], [], [], PLAN, tz=UTC)
    dims: list[dict[str, Any]] = snap["dimensions"]
    return dims
