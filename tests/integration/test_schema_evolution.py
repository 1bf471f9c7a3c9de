"""Schema evolution: events written under an older shape are read through an upcaster, by replay
and by the projector; without one they are parked, never miscounted; a newer version is refused.

The story: in v1 a survey response carried ``"answers"`` with ``"lived_experience"`` as
true/false; v2 carries ``"profile"`` with ``"yes"``/``"no"``. The tests move the reader to v2
and register the upcaster themselves, and a fixture puts both back.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import nats
import orjson
import pytest

from services.analytics.app import build_app
from services.analytics.reading import replay
from shared import upcasting
from shared.bus import DEADLETTER_STREAM, attach_streams
from shared.events import SCHEMA_VERSION
from shared.profile import Profile
from tests import factories as f
from tests.polling import eventually

pytestmark = pytest.mark.integration

V1_ANSWERS = [
    {"region": "northeast", "lived_experience": True, "race_ethnicity": ["indigenous"]},
    {"region": "northeast", "lived_experience": False},
    {"region": "southwest", "lived_experience": True},
    {"region": "central", "lived_experience": True, "gender": ["female"]},
    {"region": "central"},
    {"lived_experience": False},
    {"region": "southwest", "lived_experience": "declined"},
]


def survey_v1_to_v2(raw: dict) -> dict:
    """v1 -> v2: ``answers`` became ``profile``, and lived experience true/false became yes/no."""
    payload = dict(raw["payload"])
    answers = dict(payload.pop("answers", {}))
    if isinstance(answers.get("lived_experience"), bool):
        answers["lived_experience"] = "yes" if answers["lived_experience"] else "no"
    return {**raw, "payload": {**payload, "profile": answers}}


@contextlib.contextmanager
def reader_moved_to_v2(*, with_upcaster: bool) -> Iterator[None]:
    """The reader at schema version 2 with a registry of its own (holding the v1 -> v2 survey
    upcaster if asked); today's version and registry are put back on leaving."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(upcasting, "CURRENT_VERSION", 2)
        patch.setattr(upcasting, "UPCASTERS", dict(upcasting.UPCASTERS))
        if with_upcaster:
            upcasting.upcaster("SurveyCompleted", 1)(survey_v1_to_v2)
        yield


@pytest.fixture
def reader_at_v2() -> Iterator[None]:
    with reader_moved_to_v2(with_upcaster=False):
        yield


@pytest.fixture
def upcaster_registered() -> Iterator[None]:
    with reader_moved_to_v2(with_upcaster=True):
        yield


def raw_of(event, version: int, at: datetime) -> tuple[str, dict]:
    raw = event.model_copy(update={"occurred_at": at}).model_dump(mode="json")
    raw["schema_version"] = version
    return event.subject, raw


def the_log() -> tuple[list[tuple[str, dict]], dict]:
    """v1 surveys (old shape), v1 interviews (shape unchanged), a v1 withdrawal, and v2 surveys;
    with the counts a correct v2 reader must arrive at."""
    at = datetime(2018, 3, 1, tzinfo=UTC)
    log: list[tuple[str, dict]] = []
    for i, answers in enumerate(V1_ANSWERS):
        subject, raw = raw_of(f.survey(), 1, at + timedelta(hours=i))
        raw["payload"].pop("profile")
        raw["payload"]["answers"] = answers
        log.append((subject, raw))
    people = [f.ref() for _ in range(4)]
    for person, region in zip(people, ["northeast", "central", "central", "northwest"], strict=True):
        log.append(raw_of(f.interview(person, Profile(region=region, lived_experience="yes")), 1, at))
    log.append(raw_of(f.withdrawn(people[3]), 1, at + timedelta(days=1)))
    for region in ["southwest", "southwest"]:
        log.append(raw_of(f.survey(Profile(region=region, lived_experience="no")), 2, at))
    lived = Counter(
        {True: "yes", False: "no"}.get(a["lived_experience"], a["lived_experience"])
        for a in V1_ANSWERS
        if "lived_experience" in a
    )
    lived.update({"yes": 3, "no": 2})
    regions = Counter(a["region"] for a in V1_ANSWERS if "region" in a)
    regions.update({"northeast": 1, "central": 2, "southwest": 2})
    return log, {"participants": len(V1_ANSWERS) + 3 + 2, "lived": lived, "regions": regions}


async def publish_raw(settings, log: list[tuple[str, dict]]) -> tuple[nats.NATS, int]:
    """Put the bytes on the log exactly as an older writer left them."""
    nc = await nats.connect(settings.nats_url)
    await attach_streams(nc, settings)
    js = nc.jetstream()
    last = 0
    for subject, raw in log:
        ack = await js.publish(subject, orjson.dumps(raw), headers={"Nats-Msg-Id": raw["event_id"]})
        last = ack.seq
    return nc, last


async def project(settings, auth_headers, last: int) -> dict:
    """Run analytics until it has reached ``last``; its analyst coverage answer."""
    app = build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client,
    ):

        async def coverage() -> dict:
            return (await client.get("/coverage", headers=auth_headers("analyst"))).json()

        return await eventually(
            coverage,
            lambda body: body["as_of"]["sequence"] == last,
            what=f"the projector to reach the log's end ({last})",
        )


def counts(body: dict, dimension: str) -> Counter:
    dim = next(d for d in body["dimensions"] if d["dimension"] == dimension)
    found = Counter({c["category"]: c["count"] for c in dim["categories"] if c["count"]})
    if dim["declined"]:
        found["declined"] = dim["declined"]
    return found


async def parked(nc: nats.NATS) -> list:
    js = nc.jetstream()
    info = await js.stream_info(DEADLETTER_STREAM)
    return (
        [await js.get_msg(DEADLETTER_STREAM, seq) for seq in range(info.state.first_seq, info.state.last_seq + 1)]
        if info.state.messages
        else []
    )


async def test_v1_events_are_read_as_v2_by_replay_and_by_the_projector(
    make_settings, auth_headers, upcaster_registered
) -> None:
    """Through the upcaster, replay and the projector both count the v1 surveys with today's shape."""
    settings = make_settings()
    log, expected = the_log()
    nc, last = await publish_raw(settings, log)
    unreadable: list[tuple[int, str, str]] = []
    replayed = [
        ev
        async for _, ev in replay.events(nc, settings.stream_name, replay.Window(), lambda *why: unreadable.append(why))
    ]
    assert unreadable == [] and len(replayed) == len(log)
    assert {ev.schema_version for ev in replayed} == {2}
    surveys = [ev.payload.profile for ev in replayed if ev.type == "SurveyCompleted"]
    assert Counter(p.lived_experience for p in surveys if p.lived_experience) == Counter(
        {"yes": 3, "no": 4, "declined": 1}
    )

    body = await project(settings, auth_headers, last)
    assert body["participants"] == expected["participants"]
    assert counts(body, "lived_experience") == expected["lived"]
    assert counts(body, "region") == expected["regions"]
    assert await parked(nc) == []
    await nc.close()


async def test_without_the_upcaster_v1_surveys_are_parked_not_miscounted(
    make_settings, auth_headers, reader_at_v2
) -> None:
    """A v2 reader with no upcaster parks every old-shaped survey and counts only what it can read."""
    settings = make_settings()
    log, _ = the_log()
    nc, last = await publish_raw(settings, log)
    unreadable: list[tuple[int, str, str]] = []
    replayed = [
        ev
        async for _, ev in replay.events(nc, settings.stream_name, replay.Window(), lambda *why: unreadable.append(why))
    ]
    assert len(unreadable) == len(V1_ANSWERS) and len(replayed) == len(log) - len(V1_ANSWERS)

    body = await project(settings, auth_headers, last)
    assert body["participants"] == 3 + 2  # three interviewees still counted, two v2 surveys
    assert counts(body, "lived_experience") == Counter({"yes": 3, "no": 2})
    dead = await parked(nc)
    assert len(dead) == len(V1_ANSWERS)
    assert {int(m.headers["Engage-Original-Sequence"]) for m in dead} == {seq for seq, _, _ in unreadable}
    assert all("payload" in m.headers["Engage-Reason"] for m in dead)
    await nc.close()


async def test_an_event_newer_than_the_reader_is_parked_naming_schema_version(make_settings, auth_headers) -> None:
    """An event from a future schema is refused with a reason naming schema_version; the rest count."""
    settings = make_settings()
    newer = upcasting.CURRENT_VERSION + 1
    log = [raw_of(f.survey(region="central"), SCHEMA_VERSION, datetime(2018, 4, 1, tzinfo=UTC)) for _ in range(3)]
    log.insert(1, raw_of(f.survey(region="central"), newer, datetime(2018, 4, 1, tzinfo=UTC)))
    nc, last = await publish_raw(settings, log)
    body = await project(settings, auth_headers, last)
    assert body["participants"] == 3
    dead = await parked(nc)
    assert [m.headers["Engage-Original-Sequence"] for m in dead] == ["2"]
    reason = dead[0].headers["Engage-Reason"]
    assert "schema_version" in reason and "newer than this reader" in reason
    await nc.close()


def test_a_reader_moved_to_v2_for_a_test_is_back_at_todays_schema_afterwards() -> None:
    """What the fixtures above do, done here: while moved, a v1 survey is read as v2; afterwards
    the version, the registry and what a v1 survey reads as are today's again."""
    todays_version, todays_registry = upcasting.CURRENT_VERSION, dict(upcasting.UPCASTERS)
    assert todays_version == SCHEMA_VERSION and ("SurveyCompleted", 1) not in todays_registry
    _, v1 = the_log()[0][0]
    assert "answers" in v1["payload"] and v1["schema_version"] == 1

    with reader_moved_to_v2(with_upcaster=True):
        assert upcasting.CURRENT_VERSION == 2
        assert upcasting.UPCASTERS[("SurveyCompleted", 1)] is survey_v1_to_v2
        moved = upcasting.upcast(v1)
        assert moved["schema_version"] == 2 and moved["payload"]["profile"]["lived_experience"] == "yes"

    assert todays_version == upcasting.CURRENT_VERSION and todays_registry == upcasting.UPCASTERS
    assert upcasting.upcast(v1) == v1  # today's reader leaves a v1 event as it is
