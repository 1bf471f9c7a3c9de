"""The dashboard's pure parts: the sign-in cookie, the activity feed, and what a snapshot may carry."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given, settings

from services.analytics.answers.coverage import View, coverage
from services.analytics.answers.models import Freshness
from services.analytics.answers.suppression import cell_keys
from services.analytics.answers.timeline import timeline
from services.analytics.dashboard import session
from services.analytics.dashboard.snapshot import days_of_outreach, snapshot
from services.analytics.projection import activity
from services.analytics.projection.counts import Counts, counts_of, daily_of
from services.analytics.projection.fold import ANSWERED
from shared.events import (
    Envelope,
    InterviewCompleted,
    InterviewFormat,
    InterviewScheduled,
    ParticipantWithdrawn,
    SurveyCompleted,
)
from shared.plan import load_plans
from shared.profile import Profile
from shared.settings import TokenSpec
from tests import factories as f
from tests.populations import keyed, populations
from tests.privacy import small_counts_in

TOKENS = {
    "coordinator": TokenSpec(token="c" * 24, scopes=["coverage:read"]),
    "other-coordinator": TokenSpec(token="o" * 24, scopes=["coverage:read"]),
    "intake": TokenSpec(token="i" * 24, scopes=["intake:write"]),
}


# ---- the sign-in cookie -------------------------------------------------------------------


def test_a_cookie_issued_for_a_coordinator_token_verifies_as_that_token() -> None:
    """The cookie names the token it was made for, and holds no secret."""
    cookie = session.issue(TOKENS, "coordinator")
    assert session.verify(TOKENS, cookie) == "coordinator"
    assert "c" * 24 not in cookie


def test_a_tampered_or_foreign_cookie_is_refused() -> None:
    """Changing the name, or signing with another token's key, gives no session."""
    cookie = session.issue(TOKENS, "coordinator")
    body, sig = cookie.split(".")
    claims = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["n"] = "other-coordinator"
    forged = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode() + "." + sig
    assert session.verify(TOKENS, forged) is None
    assert session.verify(TOKENS, cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None
    for junk in (None, "", "x", "a.b.c", "!!!.???"):
        assert session.verify(TOKENS, junk) is None


def test_a_cookie_expires_and_dies_with_its_token() -> None:
    """After its lifetime, or once the token is replaced, a cookie opens nothing."""
    cookie = session.issue(TOKENS, "coordinator", now=1_000_000)
    assert session.verify(TOKENS, cookie, now=1_000_000 + session.LIFETIME - 1) == "coordinator"
    assert session.verify(TOKENS, cookie, now=1_000_000 + session.LIFETIME + 1) is None
    replaced = {**TOKENS, "coordinator": TokenSpec(token="n" * 24, scopes=["coverage:read"])}
    assert session.verify(replaced, cookie, now=1_000_000) is None


def test_only_a_token_with_the_coverage_scope_signs_in() -> None:
    """A service's write token does not open the dashboard."""
    assert session.token_name(TOKENS, "c" * 24) == "coordinator"
    assert session.token_name(TOKENS, "i" * 24) is None
    assert session.token_name(TOKENS, "nope") is None


# ---- the activity feed ----------------------------------------------------------------------


def test_feed_items_say_what_and_where_never_who() -> None:
    """An interview's completion takes its region from its scheduling; no reference or profile rides along."""
    ref = f.ref()
    scheduled = Envelope.wrap(
        InterviewScheduled(
            interview_id="iv-abcdef12", format=InterviewFormat.phone, scheduled_for=f.when(), region="northeast"
        ),
        process_id="shfa-2018",
        source="intake",
    )
    completed = Envelope.wrap(
        InterviewCompleted(
            interview_id="iv-abcdef12",
            format=InterviewFormat.phone,
            participants=[{"participant_ref": ref, "profile": {"region": "central"}}],
        ),
        process_id="shfa-2018",
        source="intake",
    )
    withdrawn = Envelope.wrap(ParticipantWithdrawn(participant_ref=ref), process_id="shfa-2018", source="intake")
    events = [(1, scheduled), (2, completed), (3, withdrawn)]
    items = activity.items(events, activity.regions_scheduled(ev for _, ev in events))
    assert [(i.kind, i.region, i.channel) for i in items] == [
        ("interview_scheduled", "northeast", "interview_phone"),
        ("interview_completed", "northeast", "interview_phone"),  # the interview's region, not the profile's
        ("participant_withdrawn", None, None),
    ]
    for item in items:
        assert ref not in repr(item)


def test_an_event_whose_place_was_declined_has_no_region_in_the_feed() -> None:
    """A region the schema allows as "declined" is no place: the feed says none (it used to stop the projector)."""
    scheduled = Envelope.wrap(
        InterviewScheduled(
            interview_id="iv-declined1", format=InterviewFormat.phone, scheduled_for=f.when(), region="declined"
        ),
        process_id="shfa-2018",
        source="intake",
    )
    held = f.gathering(4, [])
    held = held.model_copy(update={"payload": held.payload.model_copy(update={"region": "declined"})})
    events = [(1, scheduled), (2, held)]
    regions = activity.regions_scheduled(ev for _, ev in events)
    assert regions == {}
    assert [(i.kind, i.region) for i in activity.items(events, regions)] == [
        ("interview_scheduled", None),
        ("gathering_held", None),
    ]


def test_a_batch_adds_at_most_its_latest_items_per_process() -> None:
    """Catching up on a long log writes only the feed items that can still be shown."""
    events = [
        (seq, Envelope.wrap(SurveyCompleted(response_id=f"sr-{seq:08d}"), process_id="shfa-2018", source="survey"))
        for seq in range(1, 1001)
    ]
    items = activity.items(events, {})
    assert len(items) == activity.PER_BATCH
    assert [i.sequence for i in items] == list(range(1001 - activity.PER_BATCH, 1001))


# ---- what a snapshot may carry ------------------------------------------------------------

PLAN = load_plans(None)["shfa-2018"]


@settings(max_examples=60, deadline=None)
@given(populations)
def test_a_snapshot_never_carries_a_count_from_1_to_k_minus_1(states: list) -> None:
    """Whatever the population, every count field of the dashboard is a multiple of k or "<k"."""
    k = 5
    members = keyed(states)
    counts = counts_of(states, PLAN, sequence=10)
    keys = cell_keys(members, PLAN)
    fresh = Freshness(sequence=10, stream_sequence=10, behind=0, projected_at=None, answered_at=datetime.now(UTC))
    body = coverage(counts, "shfa-2018", PLAN, View(k, suppressed=True, release_every=k), fresh, None, keys)
    engaged, reached = daily_of(states)
    as_dates = {(date.fromisoformat(d), c): n for (d, c), n in engaged.items()}
    firsts = {(date.fromisoformat(d), c): n for (d, c), n in reached.items()}
    snap = snapshot(
        body,
        timeline(as_dates, firsts, "week", k, keys),
        [],
        sorted({d for d, _ in as_dates}),
        PLAN,
        k=k,
        behind_seconds=None,
        tz=ZoneInfo("America/Chicago"),
    )
    assert small_counts_in(snap, k) == []


def test_the_checker_finds_a_small_count_when_there_is_one() -> None:
    """The check above can fail: unsuppressed numbers trip it."""
    c = Counts(
        sequence=1,
        participants=3,
        engagements=3,
        channels={"survey": 3},
        categories={("region", "central"): 3, ("region", ANSWERED): 3},
    )
    fresh = Freshness(sequence=1, stream_sequence=1, behind=0, projected_at=None, answered_at=datetime.now(UTC))
    body = coverage(c, "shfa-2018", PLAN, View(5, suppressed=False), fresh)
    snap = snapshot(body, [], [], [], PLAN, k=5, behind_seconds=None, tz=ZoneInfo("UTC"))
    assert "tiles.participants=3" in small_counts_in(snap, 5)
    assert any(p.startswith("dimensions[].categories[].count=3") for p in small_counts_in(snap, 5))


def test_days_of_outreach_count_both_ends() -> None:
    assert days_of_outreach([date(2018, 1, 15), date(2018, 5, 31), date(2018, 3, 1)]) == 137
    assert days_of_outreach([date(2018, 1, 15)]) == 1
    assert days_of_outreach([]) is None


def test_profile_answers_are_not_in_a_feed_item() -> None:
    """A feed line built from a survey response holds its kind and times, no answer."""
    ev = Envelope.wrap(
        SurveyCompleted(response_id="sr-12345678", profile=Profile(region="central", lived_experience="yes")),
        process_id="shfa-2018",
        source="survey",
    )
    (item,) = activity.items([(1, ev)], {})
    assert (item.kind, item.region, item.channel, item.topic) == ("survey_completed", None, "survey", None)
