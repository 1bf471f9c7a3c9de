"""The dashboard's pure parts: the sign-in cookie, the activity feed, and what a snapshot and a drill-down may carry."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime
from pathlib import Path
from string import Template
from zoneinfo import ZoneInfo

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.analytics.answers.coverage import View, coverage
from services.analytics.answers.models import CoverageAnswer, Freshness, Period
from services.analytics.answers.segments import in_segment, parse_segment
from services.analytics.answers.suppression import cell_keys
from services.analytics.answers.timeline import timeline
from services.analytics.dashboard import group_page, session
from services.analytics.dashboard.snapshot import days_of_outreach, drilldown, snapshot
from services.analytics.projection import activity
from services.analytics.projection.counts import Counts, counts_of, daily_of
from services.analytics.projection.fold import ANSWERED, ParticipantState
from shared.events import (
    Channel,
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
from tests.populations import keyed, person, populations
from tests.privacy import small_counts_in

DASHBOARD = Path(__file__).resolve().parents[2] / "services" / "analytics" / "dashboard"
TEMPLATES = DASHBOARD / "templates"
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
K = 5
ROUNDED = View(K, suppressed=True, release_every=K)
FRESH = Freshness(sequence=10, stream_sequence=10, behind=0, projected_at=None, answered_at=datetime.now(UTC))
ROUNDING_NOTE = (
    "Numbers are rounded to multiples of 5 and move once at least 5 participants have changed (release at sequence 10)."
)
GROUPS = ["gender:non_binary", "region:central", "lived_experience:yes", "mandated_group:victims_survivors"]


def _dates(daily: dict[tuple[str, str], int]) -> dict[tuple[date, str], int]:
    return {(date.fromisoformat(d), c): n for (d, c), n in daily.items()}


def rounded(
    members: list[tuple[int, ParticipantState]], segment: str | None = None
) -> tuple[CoverageAnswer, list[Period]]:
    """A coordinator's answer and weeks for the members of a segment, rounded as a release rounds them."""
    seg = parse_segment(PLAN, segment)
    chosen = [(key, s) for key, s in members if seg is None or in_segment(s, seg, PLAN)]
    states = [s for _, s in chosen]
    keys = cell_keys(chosen, PLAN)
    body = coverage(counts_of(states, PLAN, sequence=10), "shfa-2018", PLAN, ROUNDED, FRESH, seg, keys)
    engaged, reached = daily_of(states)
    return body, timeline(_dates(engaged), _dates(reached), "week", K, keys)


def page_of(members: list[tuple[int, ParticipantState]], segment: str | None = None) -> dict:
    whole, whole_weeks = rounded(members)
    body, weeks = rounded(members, segment) if segment else (whole, whole_weeks)
    days = sorted({date.fromisoformat(p.period) for p in whole_weeks})
    return snapshot(body, weeks, [], days, PLAN, tz=ZoneInfo("America/Chicago"), whole=whole, whole_periods=whole_weeks)


def drill_of(members: list[tuple[int, ParticipantState]], group: str, within: str | None = None) -> dict:
    whole, whole_weeks = rounded(members)
    page = rounded(members, within)[0] if within else whole
    body, weeks = rounded(members, f"{group},{within}" if within else group)
    dimension, category = group.split(":")
    return drilldown(
        body,
        weeks,
        PLAN,
        dimension=dimension,
        category=category,
        card=page.row(dimension, category),
        within=page.segment,
        whole=whole,
        whole_weeks=whole_weeks,
    )


def one_non_binary_among_thirty() -> list[tuple[int, ParticipantState]]:
    crowd = [person("central", "no", ["female"], {"survey": 1}, d % 14) for d in range(30)]
    return keyed([*crowd, person("northeast", "yes", ["non_binary"], {"interview_phone": 1}, 3)])


@settings(max_examples=60, deadline=None)
@given(populations)
def test_a_snapshot_never_carries_a_count_from_1_to_k_minus_1(states: list) -> None:
    """Whatever the population, every count field of the dashboard is a multiple of k or "<k"."""
    members = keyed(states)
    for segment in (None, "lived_experience:yes"):
        snap = page_of(members, segment)
        assert small_counts_in(snap, K) == []
        assert snap["release"] == {"rounded": True, "k": K, "every": K, "sequence": 10, "note": ROUNDING_NOTE}


@settings(max_examples=60, deadline=None)
@given(populations, st.sampled_from(GROUPS), st.sampled_from([None, "lived_experience:yes", "channel:survey"]))
def test_a_drilldown_never_carries_a_count_from_1_to_k_minus_1(states: list, group: str, within: str | None) -> None:
    """Whatever the population and the group (within a segment or not), the drill-down's channels,
    regions and weeks are multiples of k or "<k", on the whole process's grid of channels and weeks."""
    members = keyed(states)
    drill = drill_of(members, group, within)
    assert small_counts_in(drill, K) == []
    whole, whole_weeks = rounded(members)
    assert [p["period"] for p in drill["over_time"]["periods"]] == [p.period for p in whole_weeks]
    assert {c["channel"] for c in drill["channels"]} == set(whole.people_by_channel) | set(whole.engagements_by_channel)
    assert {c["channel"] for c in drill["over_time"]["channels"]} == {
        c for p in whole_weeks for c in (*p.engagements, *p.participants_reached)
    }
    assert drill["regions"] is not None and {r["category"] for r in drill["regions"]["categories"]} >= set(
        PLAN.dimensions["region"].categories
    )


def test_the_checker_finds_a_small_count_when_there_is_one() -> None:
    """The checks above can fail: exact numbers trip them, in a snapshot and in a drill-down."""
    c = Counts(
        sequence=1,
        participants=3,
        engagements=3,
        channels={"survey": 3},
        categories={("region", "central"): 3, ("region", ANSWERED): 3},
        people_by_channel={"survey": 3},
    )
    fresh = Freshness(sequence=1, stream_sequence=1, behind=0, projected_at=None, answered_at=datetime.now(UTC))
    body = coverage(c, "shfa-2018", PLAN, View(5, suppressed=False), fresh)
    snap = snapshot(body, [], [], [], PLAN, tz=ZoneInfo("UTC"))
    assert "tiles.participants=3" in small_counts_in(snap, 5)
    assert "channels[].participants=3" in small_counts_in(snap, 5)
    assert any(p.startswith("dimensions[].categories[].count=3") for p in small_counts_in(snap, 5))
    weeks = timeline({(date(2018, 3, 6), "survey"): 3}, {(date(2018, 3, 6), "survey"): 3}, "week", 5)
    drill = drilldown(
        body, weeks, PLAN, dimension="region", category="central", card=None, within=None, whole=body, whole_weeks=[]
    )
    found = small_counts_in(drill, 5)
    for path in ("participants=3", "channels[].participants=3", "regions.categories[].count=3"):
        assert path in found, found
    assert "over_time.periods[].by_channel.survey=3" in found


def test_a_hidden_under_reached_group_is_flagged_among_the_under_reached_never_on_track() -> None:
    """One non-binary participant among thirty (a floor of 5): "<5" may be 0 to 4, so the card says
    it may be below target and needs at least one more person; its row is never on track."""
    snap = page_of(one_non_binary_among_thirty())
    cards = {u["group"]: u for u in snap["under_reached"]}
    card = cards["gender:non_binary"]
    assert card["status"] == "attention" and card["count"] in ("<5", 5)
    assert card["status_text"] == "May be below target — small numbers; needs at least 1 more person"
    assert card["needed"] == 1 and card["needed_is_lower_bound"] is True
    (row,) = [
        r
        for d in snap["dimensions"]
        if d["dimension"] == "gender"
        for r in d["categories"]
        if r["category"] == "non_binary"
    ]
    assert row["status"] == "attention"
    # Attention follows the plainly under-reached, and every attention row is a card.
    statuses = [u["status"] for u in snap["under_reached"]]
    assert statuses == sorted(statuses, key=lambda s: s == "attention")
    rows = [r for d in snap["dimensions"] for r in d["categories"]]
    assert {r["status"] for r in rows if r["label"] in {u["label"] for u in snap["under_reached"]}} <= {
        "attention",
        "under-reached",
    }
    assert sum(r["status"] in ("attention", "under-reached") for r in rows) == len(snap["under_reached"])


def test_the_drilldown_of_a_hidden_group_shows_its_channels_regions_and_weeks_rounded() -> None:
    """The non-binary participant's interview by phone, in the Northeast, in the week of 5 March: all
    "<5" or 5, beside every other channel and week of the process, so "<5" never means "at least one"."""
    drill = drill_of(one_non_binary_among_thirty(), "gender:non_binary")
    assert drill["group"] == {
        "key": "gender:non_binary",
        "dimension": "gender",
        "category": "non_binary",
        "label": "Gender non-binary",
        "dimension_label": "Gender",
    }
    assert drill["card"]["status"] == "attention"
    assert drill["card"]["status_text"].startswith("May be below target")
    channels = {c["channel"]: (c["participants"], c["engagements"]) for c in drill["channels"]}
    assert set(channels) == {c.value for c in Channel}  # every channel, used or not
    assert channels["survey"] == ("<5", "<5")  # nobody of the group: shown as a 0 rounds
    assert channels["interview_phone"][0] in ("<5", 5)
    regions = {r["category"]: r["count"] for r in drill["regions"]["categories"]}
    assert regions["northeast"] in ("<5", 5) and regions["central"] == "<5"
    weeks = drill["over_time"]["periods"]
    assert [p["period"] for p in weeks] == ["2018-03-05", "2018-03-12"]
    assert all(v in ("<5", 5) for p in weeks for v in (*p["by_channel"].values(), p["total"]))
    page = group_page.render(drill, Template((TEMPLATES / "group.html").read_text()))
    assert "May be below target — small numbers; needs at least 1 more person" in page
    assert 'id="group-channels"' in page and 'id="group-regions"' in page and 'id="group-weeks"' in page
    assert "release at sequence 10" in page


def test_terms_participants_use_are_shown_as_theirs_in_quotes() -> None:
    """Every term of "Terms participants use" is quoted; a label that quotes the term already is not quoted twice."""
    snap = page_of(keyed([person("central", "yes", ["female"], {"survey": 1}, 0)]))
    (terms,) = [d for d in snap["dimensions"] if d["dimension"] == "experience_terms"]
    labels = {r["category"]: r["label"] for r in terms["categories"]}
    assert terms["own_terms"] is True
    assert labels["sex_worker"] == "“Sex worker”"
    assert labels["own_term_prostitute"] == '"prostitute" (their own term)'
    assert all(label.count("“") + label.count('"') >= 1 for label in labels.values())
    region = next(d for d in snap["dimensions"] if d["dimension"] == "region")
    assert region["own_terms"] is False and all("“" not in r["label"] for r in region["categories"])


def test_a_snapshot_says_nothing_of_hidden_or_suppressed_counts() -> None:
    """Rounded numbers are shown as they are: no old "suppressed" marker anywhere in a snapshot or the page's files."""
    snap = page_of(one_non_binary_among_thirty())
    text = orjson.dumps(snap).decode()
    assert "suppressed" not in text and "hidden" not in text
    old = ("suppress", "Hidden", "hidden to", "hides", "counts hidden", "are hidden", "ratio hidden", '"hidden"')
    for name in ("static/dashboard.js", "static/dashboard.css", "templates/dashboard.html", "templates/login.html"):
        body = (DASHBOARD / name).read_text().replace('type="hidden"', "")
        assert [w for w in old if w in body] == [], name


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
