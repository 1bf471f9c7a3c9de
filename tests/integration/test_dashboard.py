"""The dashboard against real servers: sign-in, the stream, and what coordinators can see."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

import httpx
import orjson
import pytest

from services.analytics.app import build_app
from services.analytics.dashboard.routes import HEARTBEAT
from shared.bus import attach_streams, make_broker, publish_event
from shared.events import Envelope, GatheringHeld, GatheringKind, InterviewScheduled
from shared.profile import Profile
from shared.settings import Settings
from tests import factories as f
from tests.conftest import TOKENS
from tests.polling import eventually
from tests.privacy import FEED_FIELDS, small_counts_in
from tests.servers import serving

pytestmark = pytest.mark.integration
K = 5
PROMPTLY = 2.0  # seconds from a commit to its snapshot on an open stream, well under HEARTBEAT


async def sign_in(client: httpx.AsyncClient, token: str = TOKENS["coordinator"].token) -> httpx.Response:
    return await client.post("/dashboard/login", data={"token": token, "next": "/dashboard"})


async def next_event(lines: AsyncIterator[str]) -> tuple[str, dict]:
    """The next server-sent event (name, data) from a stream's lines."""
    name, data = "message", ""
    async for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            return name, orjson.loads(data)
    raise AssertionError("the stream ended")


async def snapshot_at(lines: AsyncIterator[str], sequence: int, within: float = 15.0) -> dict:
    """The first snapshot that reflects ``sequence``; fails after ``within`` seconds instead of hanging."""
    _, data = await eventually(
        lambda: next_event(lines),
        lambda event: event[0] == "snapshot" and event[1]["as_of"]["sequence"] >= sequence,
        what=f"a snapshot at sequence {sequence}",
        timeout=within,
        interval=0,
    )
    return data


@pytest.fixture
async def published(make_settings: Callable[..., Settings]):
    """A publisher on this test's JetStream: ``await publish(envelope)``."""
    settings = make_settings()
    broker = make_broker(settings.nats_url)
    await broker.connect()
    await attach_streams(broker.connection, settings)

    async def publish(ev: Envelope) -> None:
        await publish_event(broker, ev, settings)

    yield publish
    await broker.stop()


async def test_without_sign_in_the_page_redirects_and_its_data_answers_401(make_settings) -> None:
    """No cookie: the page sends you to sign in, the stream and snapshot refuse; bad tokens are named."""
    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/dashboard?segment=lived_experience:yes")
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/login?next=/dashboard%3Fsegment%3Dlived_experience%3Ayes"
        for path in ("/dashboard/stream", "/dashboard/snapshot"):
            refused = await client.get(path)
            assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        forged = await client.get("/dashboard/stream", headers={"cookie": "engage_session=eyJuIjoiY29vcmQifQ.x"})
        assert forged.status_code == 401

        wrong = await sign_in(client, "not-a-token-at-all-000")
        assert wrong.status_code == 401 and "Token:" in wrong.text and "not recognised" in wrong.text
        assert "not-a-token-at-all-000" not in wrong.text  # the value is never echoed
        service = await sign_in(client, TOKENS["intake"].token)
        assert service.status_code == 401  # a write token cannot open the dashboard
        empty = await sign_in(client, "")
        assert empty.status_code == 422 and "is required" in empty.text
        assert "engage_session" not in client.cookies

        ok = await sign_in(client)
        assert ok.status_code == 303 and ok.headers["location"] == "/dashboard"
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert (await client.get("/dashboard")).status_code == 200
        assert (await client.get("/dashboard/snapshot")).status_code == 200
        out = await client.post("/dashboard/logout")
        assert out.status_code == 303
        assert (await client.get("/dashboard/snapshot")).status_code == 401


async def test_the_page_and_its_stream_carry_no_small_count_and_no_profile_detail(
    make_settings: Callable[..., Settings], published
) -> None:
    """Small groups exist in the data; neither the page nor any stream event shows one, nor who anyone is."""
    refs: list[str] = []
    ids: list[str] = []
    events: list[Envelope] = []
    for i in range(12):  # enough people for the totals to show, with small groups inside
        ref = f.ref()
        refs.append(ref)
        region = "northeast" if i < 9 else "central"  # central: 3 people
        events.append(
            f.interview(
                ref,
                Profile(
                    region=region,
                    lived_experience="yes" if i < 7 else "no",
                    race_ethnicity=["indigenous"] if i < 2 else ["white"],
                    experience_terms=["own_term_prostitute"] if i == 0 else None,
                ),
            )
        )
    events += [f.survey(region="southwest") for _ in range(2)]
    gathering = GatheringHeld(
        gathering_id=f.agg("gh"),
        kind=GatheringKind.art_of_hosting,
        region="west_central",
        attendee_count=6,
        profiles=[Profile(lived_experience="yes")],
    )
    events.append(Envelope.wrap(gathering, process_id="shfa-2018", source="intake"))
    events.append(
        Envelope.wrap(
            InterviewScheduled(interview_id=f.agg("iv"), format="phone", scheduled_for=f.when(), region="northwest"),
            process_id="shfa-2018",
            source="intake",
        )
    )
    for ev in events:
        ids += [ev.event_id, ev.aggregate_id]
        await published(ev)

    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        await sign_in(client)

        async def current() -> dict:
            return (await client.get("/dashboard/snapshot")).json()

        snap = await eventually(
            current,
            lambda body: body["as_of"]["sequence"] >= len(events),
            what=f"the snapshot to reach sequence {len(events)}",
        )
        page = (await client.get("/dashboard")).text
        async with client.stream("GET", "/dashboard/stream") as stream:
            name, streamed = await next_event(stream.aiter_lines())
        assert name == "snapshot"

        for body in (snap, streamed):
            assert body["tiles"]["participants"] == 20  # 12 interviewed, 2 surveyed, 6 at the gathering
            assert small_counts_in(body, K) == []
            region = {
                c["category"]: c["count"]
                for d in body["dimensions"]
                if d["dimension"] == "region"
                for c in d["categories"]
            }
            assert region["northeast"] == 9 and region["central"] == "<5" and region["southwest"] == "<5"
            text = orjson.dumps(body).decode()
            for secret in refs + ids:
                assert secret not in text
            for item in body["feed"]:
                assert set(item) <= FEED_FIELDS
            kinds = [(i["kind"], i["region"]) for i in body["feed"]]
            assert ("survey_completed", None) in kinds  # a survey's answers are not its feed line's
            assert ("gathering_held", "West Central") in kinds
            assert ("interview_scheduled", "Northwest") in kinds
        for secret in refs + ids:
            assert secret not in page
        assert 'id="tile-participants">–<' in page  # the page is a shell: its numbers come by the stream


async def test_a_commit_reaches_an_open_stream_as_a_snapshot_well_before_the_heartbeat(
    make_settings: Callable[..., Settings], published
) -> None:
    """An open page gets the commit's snapshot within moments, not at the next heartbeat.

    Without the projector's pulse the stream would still send the new numbers, but only
    when its heartbeat wait runs out (HEARTBEAT seconds): an answer in well under that, with
    no ``as_of`` heartbeat before it, can only have been pushed by the commit.
    """
    assert PROMPTLY <= HEARTBEAT / 2, "the heartbeat is too short for this test to tell a push from a beat"
    for _ in range(6):
        await published(f.survey(region="central"))
    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        await sign_in(client)
        async with client.stream("GET", "/dashboard/stream") as stream:
            lines = stream.aiter_lines()
            snap = await snapshot_at(lines, 6)
            assert snap["tiles"]["participants"] == 6
            await published(f.survey(region="central"))
            sent = time.monotonic()
            # The next event that is news: the commit's snapshot, or a heartbeat if the pulse is dead.
            name, pushed = await eventually(
                lambda: next_event(lines),
                lambda event: event[0] != "snapshot" or event[1]["as_of"]["sequence"] >= 7,
                what="the stream's next event after the commit",
                timeout=HEARTBEAT + 10,
                interval=0,
            )
            lag = time.monotonic() - sent
    print(f"publish to pushed snapshot: {lag:.3f} s")
    assert name == "snapshot", f"a {name!r} event came first: the commit pushed nothing"
    assert pushed["as_of"]["sequence"] == 7 and pushed["tiles"]["participants"] == 7
    assert lag < PROMPTLY, f"the snapshot took {lag:.2f} s: that is the heartbeat ({HEARTBEAT} s), not the commit"


async def test_signing_out_ends_the_session_on_the_server_for_every_copy_of_its_cookie(make_settings) -> None:
    """A copied cookie (another browser, a leaked header) stops working once its session signs out."""
    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        assert (await sign_in(client)).status_code == 303
        copied = {"cookie": f"engage_session={client.cookies['engage_session']}"}
        async with httpx.AsyncClient(base_url=url) as other:
            assert (await other.get("/dashboard/snapshot", headers=copied)).status_code == 200
            await client.post("/dashboard/logout")
            assert (await other.get("/dashboard/snapshot", headers=copied)).status_code == 401
            assert (await other.get("/dashboard/stream", headers=copied)).status_code == 401
            assert (await sign_in(other)).status_code == 303  # a new sign-in is a new session
            assert (await other.get("/dashboard/snapshot")).status_code == 200


async def test_refused_sign_ins_are_throttled_and_say_when_to_try_again(make_settings) -> None:
    """After ten refused tokens from one client, even the right one waits: 429 with Retry-After."""
    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        for _ in range(10):
            assert (await sign_in(client, "guess-" + "0" * 20)).status_code == 401
        held = await sign_in(client)
        assert held.status_code == 429 and int(held.headers["Retry-After"]) > 0
        assert "try again in" in held.text and "engage_session" not in client.cookies


async def test_a_session_may_hold_a_few_streams_open_not_more(make_settings) -> None:
    """Five tabs stream; a sixth gets 429 with the reason; closing one frees its slot."""
    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        await sign_in(client)
        async with contextlib.AsyncExitStack() as tabs:
            for _ in range(5):
                opened = await tabs.enter_async_context(client.stream("GET", "/dashboard/stream"))
                assert opened.status_code == 200
            async with client.stream("GET", "/dashboard/stream") as sixth:  # headers come at once either way
                assert sixth.status_code == 429 and "Retry-After" in sixth.headers
                assert "close a tab" in orjson.loads(await sixth.aread())["reason"]
        again = await eventually(
            lambda: _status_of_stream(client), lambda status: status == 200, what="a freed stream slot"
        )
        assert again == 200


async def _status_of_stream(client: httpx.AsyncClient) -> int:
    async with client.stream("GET", "/dashboard/stream") as opened:
        return opened.status_code
