"""Coverage as of a moment, against real servers, checked against counts made from the events by hand."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.analytics.answers.asof import parse_moment
from services.analytics.app import build_app
from services.cli.coverage import fetch
from shared.bus import attach_streams, make_broker, publish_event
from shared.events import (
    Attendee,
    Envelope,
    GatheringHeld,
    GatheringKind,
    InterviewCompleted,
    InterviewFormat,
    ParticipantWithdrawn,
    SurveyCompleted,
)
from shared.profile import Profile
from tests import factories as f
from tests.polling import eventually
from tests.servers import serving

pytestmark = pytest.mark.integration

PROCESS = "shfa-2018"
START, END = datetime(2018, 1, 1, tzinfo=UTC), datetime(2018, 6, 1, tzinfo=UTC)
EARLY = "2018-01-20T00:00Z"
CUTS = [EARLY, "2018-03-15T12:00-05:00", "2018-05-01"]
LEAVER_SEEN = datetime(2018, 1, 10, 15, tzinfo=UTC)  # engaged before every cut-off
LEAVER_GONE = datetime(2018, 5, 20, 15, tzinfo=UTC)  # withdrew after every cut-off
# Channel names spelled out here, not imported, so the expected counts owe nothing to the projection.
INTERVIEW_CHANNELS = {
    "in_person": "interview_in_person",
    "phone": "interview_phone",
    "small_group": "small_group_interview",
}


def at_random(rng: random.Random) -> datetime:
    return START + timedelta(seconds=rng.uniform(0, (END - START).total_seconds()))


def wrap(payload: object, at: datetime, source: str = "intake", process_id: str = PROCESS) -> Envelope:
    return Envelope.wrap(payload, process_id=process_id, source=source, occurred_at=at)


def outreach(rng: random.Random, leaver: str) -> list[Envelope]:
    """Surveys, interviews with people who come back, gatherings and one withdrawal, recorded
    out of time order (coordinators record after the fact)."""
    people = [f.ref() for _ in range(45)]
    events = [
        wrap(SurveyCompleted(response_id=f.agg("sr"), profile=f.random_profile(rng)), at_random(rng), "survey")
        for _ in range(170)
    ]
    for _ in range(110):
        fmt = rng.choice([InterviewFormat.in_person, InterviewFormat.phone, InterviewFormat.small_group])
        who = rng.sample(people, rng.randint(2, 4) if fmt is InterviewFormat.small_group else 1)
        attendees = [Attendee(participant_ref=p, profile=f.random_profile(rng)) for p in who]
        events.append(
            wrap(InterviewCompleted(interview_id=f.agg("iv"), format=fmt, participants=attendees), at_random(rng))
        )
    for _ in range(14):
        count = rng.randint(1, 9)
        profiles = [f.random_profile(rng) for _ in range(rng.randint(0, count))]
        kind = rng.choice([GatheringKind.art_of_hosting, GatheringKind.small_group_meeting])
        events.append(
            wrap(
                GatheringHeld(
                    gathering_id=f.agg("gh"),
                    kind=kind,
                    region=rng.choice(f.REGIONS),
                    attendee_count=count,
                    profiles=profiles,
                ),
                at_random(rng),
            )
        )
    events.append(
        wrap(
            InterviewCompleted(
                interview_id=f.agg("iv"),
                format=InterviewFormat.phone,
                participants=[
                    Attendee(participant_ref=leaver, profile=Profile(region="northwest", lived_experience="yes"))
                ],
            ),
            LEAVER_SEEN,
        )
    )
    on_the_cut = datetime(2018, 3, 15, 17, tzinfo=UTC)  # exactly CUTS[1]: "at or before" counts it
    events.append(
        wrap(SurveyCompleted(response_id=f.agg("sr"), profile=Profile(region="southeast")), on_the_cut, "survey")
    )
    rng.shuffle(events)
    events.append(wrap(ParticipantWithdrawn(participant_ref=leaver), LEAVER_GONE))
    return events


def count_by_hand(events: list[Envelope], cut: datetime, honour_withdrawals: bool = True) -> dict:
    """Who had been heard from by ``cut``: plain counting over the events, in log order."""
    gone = {
        e.payload.participant_ref for e in events if honour_withdrawals and isinstance(e.payload, ParticipantWithdrawn)
    }
    answers: dict[object, dict] = {}
    channels: Counter[str] = Counter()

    def heard(key: object, channel: str, profile: Profile | None) -> None:
        person = answers.setdefault(key, {})
        if profile is not None:
            person.update(profile.model_dump(mode="json", exclude_none=True))
        channels[channel] += 1

    for ev in events:
        p = ev.payload
        if ev.process_id != PROCESS or ev.occurred_at > cut:
            continue
        if isinstance(p, SurveyCompleted):
            heard(("survey", p.response_id), "survey", p.profile)
        elif isinstance(p, InterviewCompleted):
            for a in p.participants:
                if a.participant_ref not in gone:
                    heard(a.participant_ref, INTERVIEW_CHANNELS[p.format.value], a.profile)
        elif isinstance(p, GatheringHeld):
            for i in range(p.attendee_count):
                heard((p.gathering_id, i), p.kind.value, p.profiles[i] if i < len(p.profiles) else None)
    return {
        "answers": answers,
        "participants": len(answers),
        "channels": dict(channels),
        "engagements": sum(channels.values()),
        "region": Counter(a["region"] for a in answers.values() if "region" in a),
        "lived_experience": Counter(a["lived_experience"] for a in answers.values() if "lived_experience" in a),
    }


def when(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def rows(body: dict, dimension: str) -> dict[str, object]:
    dim = next(d for d in body["dimensions"] if d["dimension"] == dimension)
    return {c["category"]: c["count"] for c in dim["categories"]}


def head(body: dict, dimension: str) -> tuple[object, object]:
    dim = next(d for d in body["dimensions"] if d["dimension"] == dimension)
    return dim["answered"], dim["declined"]


def assert_matches(body: dict, expected: dict) -> None:
    assert body["participants"] == expected["participants"]
    assert body["engagements"] == expected["engagements"]
    assert body["engagements_by_channel"] == expected["channels"]
    for dimension in ("region", "lived_experience"):
        counted = expected[dimension]
        assert {c: n for c, n in rows(body, dimension).items() if n} == {
            c: n for c, n in counted.items() if c != "declined"
        }
        assert head(body, dimension) == (sum(counted.values()) - counted["declined"], counted["declined"])


@pytest.fixture
async def outreach_app(make_settings):
    """A few hundred events spread over January to May 2018 on the log, and analytics running."""
    settings = make_settings()
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    leaver = f.ref()
    events = outreach(random.Random(2018), leaver)
    events += [
        wrap(
            SurveyCompleted(response_id=f.agg("sr"), profile=Profile(region="central")),
            datetime(2018, 2, 1, tzinfo=UTC),
            "survey",
            "other-2018",
        )
        for _ in range(6)
    ]
    last = 0
    for ev in events:
        last, _ = await publish_event(broker, ev, settings)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            yield client, events, leaver, last
    await broker.stop()


async def test_as_of_coverage_matches_counts_made_from_the_events(outreach_app, auth_headers) -> None:
    """At each cut-off, participants, channels, regions and lived experience equal a hand count."""
    client, events, _, last = outreach_app

    async def coverage() -> dict:
        return (await client.get("/coverage", headers=auth_headers("analyst"))).json()

    live = await eventually(
        coverage,
        lambda body: body["as_of"]["sequence"] == last and body["as_of"]["behind"] == 0,
        what=f"the projection to reach {last}",
    )
    for cut in CUTS:
        r = await client.get("/coverage", params={"as_of": cut}, headers=auth_headers("analyst"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert_matches(body, count_by_hand(events, when(cut)))
        assert when(body["as_of"]["as_of"]) == when(cut)
        assert (body["as_of"]["sequence"], body["as_of"]["stream_sequence"], body["as_of"]["behind"]) == (last, last, 0)
    first, second = (count_by_hand(events, when(c))["participants"] for c in CUTS[:2])
    assert 0 < first < second  # the cut-offs really do see different moments

    after_all = (
        await client.get("/coverage", params={"as_of": "2018-06-01T00:00Z"}, headers=auth_headers("analyst"))
    ).json()
    for key in ("participants", "engagements", "engagements_by_channel", "dimensions", "under_reached"):
        assert after_all[key] == live[key], key


async def test_as_of_is_for_analysts_only(outreach_app, auth_headers) -> None:
    """Two moments one arrival apart would show that person's answers: a coordinator gets a 403
    that names the scope, and no number."""
    client, _, _, _ = outreach_app
    r = await client.get("/coverage", params={"as_of": EARLY}, headers=auth_headers("coordinator"))
    assert r.status_code == 403 and "analyst:read" in r.text
    assert "participants" not in r.json()
    ok = await client.get("/coverage", params={"as_of": EARLY}, headers=auth_headers("analyst"))
    assert ok.status_code == 200 and ok.json()["suppression"]["method"] == "none"


async def test_a_withdrawn_person_counts_nowhere_even_before_they_withdrew(outreach_app, auth_headers) -> None:
    """A person engaged in January who withdrew in May is absent from a January as-of view."""
    client, events, leaver, _ = outreach_app
    with_them = count_by_hand(events, when(EARLY), honour_withdrawals=False)
    without = count_by_hand(events, when(EARLY))
    assert leaver in with_them["answers"] and with_them["participants"] == without["participants"] + 1
    body = (await client.get("/coverage", params={"as_of": EARLY}, headers=auth_headers("analyst"))).json()
    assert body["participants"] == without["participants"]
    assert rows(body, "region")["northwest"] == without["region"]["northwest"]


async def test_a_segment_and_a_process_id_narrow_an_as_of_view_as_they_narrow_todays(
    outreach_app, auth_headers
) -> None:
    """A segment and a process id narrow an as-of view the same way they narrow today's."""
    client, events, _, _ = outreach_app
    cut = CUTS[1]
    expected = count_by_hand(events, when(cut))
    lived = [a for a in expected["answers"].values() if a.get("lived_experience") == "yes"]
    body = (
        await client.get(
            "/coverage", params={"as_of": cut, "segment": "lived_experience:yes"}, headers=auth_headers("analyst")
        )
    ).json()
    assert body["segment"]["key"] == "lived_experience:yes"
    assert [t["dimension"] for t in body["segment"]["terms"]] == ["lived_experience"]
    assert body["participants"] == len(lived)
    assert {c: n for c, n in rows(body, "region").items() if n} == dict(
        Counter(a["region"] for a in lived if a.get("region") not in (None, "declined"))
    )
    other = (
        await client.get(
            "/coverage", params={"as_of": cut, "process_id": "other-2018"}, headers=auth_headers("analyst")
        )
    ).json()
    before = (
        await client.get(
            "/coverage",
            params={"as_of": "2018-01-31T23:59Z", "process_id": "other-2018"},
            headers=auth_headers("analyst"),
        )
    ).json()
    assert (other["participants"], before["participants"]) == (6, 0)


async def test_a_bad_as_of_is_a_422_naming_as_of(outreach_app, auth_headers) -> None:
    """An unreadable, zoneless or future as_of is refused, naming the field, without echoing it."""
    client, _, _, _ = outreach_app
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    for value, reason in [("2018-13-01", "is not a time"), ("2018-04-02T09:30", "time zone"), (future, "future")]:
        r = await client.get("/coverage", params={"as_of": value}, headers=auth_headers("analyst"))
        assert r.status_code == 422, value
        problem = r.json()["problems"][0]
        assert problem["field"] == "as_of" and reason in problem["reason"], problem
        assert value not in r.text


async def test_as_of_questions_beyond_the_limit_are_refused_at_once(make_settings, auth_headers) -> None:
    """All as-of slots taken (ENGAGE_AS_OF_CONCURRENCY): the next is a 429 with Retry-After, at once."""
    app = build_app(make_settings(as_of_concurrency=2))
    async with app.router.lifespan_context(app):
        slots = app.state.analytics.sources.as_of_slots
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            await slots.acquire()
            await slots.acquire()
            refused = await client.get("/coverage", params={"as_of": EARLY}, headers=auth_headers("analyst"))
            assert refused.status_code == 429, refused.text
            assert refused.headers["Retry-After"] == "1" and "as-of" in refused.json()["reason"]
            live = await client.get("/coverage", headers=auth_headers("analyst"))
            assert live.status_code == 200  # live answers never wait on as-of slots
            slots.release()
            answered = await client.get("/coverage", params={"as_of": EARLY}, headers=auth_headers("analyst"))
            assert answered.status_code == 200, answered.text
            slots.release()


async def test_the_command_waits_for_a_slot_and_says_so(make_settings, auth_headers, capsys) -> None:
    """`engage coverage --as-of` asks again after a 429, saying it waits, and gets its answer."""
    app = build_app(make_settings(as_of_concurrency=1))
    async with serving(app) as url:  # uvicorn runs the app's lifespan
        slots = app.state.analytics.sources.as_of_slots
        await slots.acquire()
        loop = asyncio.get_running_loop()
        asking = loop.run_in_executor(
            None, lambda: fetch(url, auth_headers("analyst")["Authorization"].split()[1], None, None, EARLY)
        )
        await asyncio.sleep(1.5)
        assert not asking.done()
        slots.release()
        body = await asyncio.wait_for(asking, 30)
    assert body.as_of.as_of == parse_moment(EARLY)
    assert "answering other as-of questions; asking again" in capsys.readouterr().err
