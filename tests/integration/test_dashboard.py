"""The dashboard against real servers: sign-in, the stream, a group's drill-down, and what coordinators can see."""

from __future__ import annotations

import asyncio
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
from tests.privacy import COUNT_FIELDS, FEED_FIELDS, small_counts_in, walk
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


async def snapshot_with(lines: AsyncIterator[str], feed: int, within: float = 15.0) -> dict:
    """The first snapshot whose feed has ``feed`` lines (the projection has counted that many events);
    fails after ``within`` seconds instead of hanging."""
    _, data = await eventually(
        lambda: next_event(lines),
        lambda event: event[0] == "snapshot" and len(event[1]["feed"]) >= feed,
        what=f"a snapshot with {feed} feed lines",
        timeout=within,
        interval=0,
    )
    return data


def counts_shown(body: object) -> list[object]:
    """Every value of a count field in a snapshot or drill-down (see ``tests.privacy``)."""
    return [
        value
        for path, value in walk(body)
        if path.rsplit(".", 1)[-1].removesuffix("[]") in COUNT_FIELDS
        or (path.startswith("over_time.periods") and not path.endswith(".period"))
    ]


@pytest.fixture
async def published(make_settings: Callable[..., Settings]):
    """A publisher on this test's JetStream: ``await publish(envelope)``."""
    settings = make_settings()
    broker = make_broker(settings.nats_url, settings, "admin")
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

        # The release is cut at the gathering (the event that brings the changed participants to k);
        # the scheduling after it changes no one, so it waits, and only the (live) feed shows it.
        snap = await eventually(
            current,
            lambda body: (
                body["release"]["sequence"] == len(events) - 1
                and any(i["kind"] == "interview_scheduled" for i in body["feed"])
            ),
            what=f"the release at sequence {len(events) - 1} and the last event in the feed",
        )
        page = (await client.get("/dashboard")).text
        async with client.stream("GET", "/dashboard/stream") as stream:
            name, streamed = await next_event(stream.aiter_lines())
        assert name == "snapshot"

        for body in (snap, streamed):
            assert body["tiles"]["participants"] == 20  # 12 interviewed, 2 surveyed, 6 at the gathering
            assert small_counts_in(body, K) == []
            assert all(v == "<5" or (isinstance(v, int) and v % K == 0) for v in counts_shown(body))
            assert body["as_of"]["behind"] == 1  # the scheduling waits for the next release
            assert "(release at sequence 15)" in body["release"]["note"]
            region = {
                c["category"]: c["count"]
                for d in body["dimensions"]
                if d["dimension"] == "region"
                for c in d["categories"]
            }
            # Rounded to base 5, up or down by who is counted: 9 is 5 or 10, 3 and 2 are "<5" or 5.
            assert region["northeast"] in (5, 10) and region["central"] in ("<5", 5)
            assert region["southwest"] in ("<5", 5) and region["northwest"] == "<5"
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
    """An open page gets the commit's snapshot within moments, not at the next heartbeat, and a
    commit that completes a release brings its numbers.

    Without the projector's pulse the stream would still send the new numbers, but only
    when its heartbeat wait runs out (HEARTBEAT seconds): an answer in well under that, with
    no ``as_of`` heartbeat before it, can only have been pushed by the commit.
    """
    assert PROMPTLY <= HEARTBEAT / 2, "the heartbeat is too short for this test to tell a push from a beat"
    for _ in range(9):  # a release at the fifth; four more wait for the next
        await published(f.survey(region="central"))
    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        await sign_in(client)
        async with client.stream("GET", "/dashboard/stream") as stream:
            lines = stream.aiter_lines()
            snap = await snapshot_with(lines, 9)
            assert snap["tiles"]["participants"] == 5 and snap["release"]["sequence"] == 5
            assert snap["as_of"]["behind"] == 4
            await published(f.survey(region="central"))  # the tenth: a release
            sent = time.monotonic()
            # The next event that is news: the commit's snapshot, or a heartbeat if the pulse is dead.
            name, pushed = await eventually(
                lambda: next_event(lines),
                lambda event: event[0] != "snapshot" or len(event[1]["feed"]) >= 10,
                what="the stream's next event after the commit",
                timeout=HEARTBEAT + 10,
                interval=0,
            )
            lag = time.monotonic() - sent
            # A second commit pulse (a loaded machine can split the work) may repeat the snapshot;
            # then the stream goes quiet: heartbeats, each saying how fresh the release is.
            quiet = await asyncio.wait_for(next_event(lines), HEARTBEAT + 5)
            for _ in range(3):
                if quiet[0] != "snapshot":
                    break
                assert quiet[1]["release"]["sequence"] == 10, quiet
                quiet = await asyncio.wait_for(next_event(lines), HEARTBEAT + 5)
    print(f"publish to pushed snapshot: {lag:.3f} s")
    assert name == "snapshot", f"a {name!r} event came first: the commit pushed nothing"
    assert pushed["release"]["sequence"] == 10 and pushed["tiles"]["participants"] == 10
    assert pushed["as_of"]["behind"] == 0
    assert lag < PROMPTLY, f"the snapshot took {lag:.2f} s: that is the heartbeat ({HEARTBEAT} s), not the commit"
    # Then quiet: a heartbeat that says how fresh the release is, not another snapshot.
    assert quiet[0] == "as_of" and quiet[1]["sequence"] == 10 and quiet[1]["behind"] == 0, quiet


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


async def test_a_group_drilldown_asks_for_a_sign_in_and_names_a_bad_group(make_settings) -> None:
    """The drill-down is a dashboard page: without a session it sends you to sign in (its data
    answers 401), and a group that is not one term of the plan is a 422 naming ``group``."""
    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        page = await client.get("/dashboard/group?group=gender:non_binary")
        assert page.status_code == 303
        assert page.headers["location"] == "/dashboard/login?next=/dashboard/group%3Fgroup%3Dgender%3Anon_binary"
        assert (await client.get("/dashboard/group/data?group=gender:non_binary")).status_code == 401

        await sign_in(client)
        for path in ("/dashboard/group", "/dashboard/group/data"):
            for group in ("gender:nope", "nothing", "gender:non_binary,region:central", ""):
                bad = await client.get(path, params={"group": group})
                assert bad.status_code == 422, (path, group, bad.text)
                assert [p["field"] for p in bad.json()["problems"]] == ["group"], bad.text
            missing = await client.get(path)
            assert missing.status_code == 422 and missing.json()["problems"][0]["field"] == "group"
            five = await client.get(
                path,
                params={
                    "group": "gender:non_binary",
                    "segment": "region:central,lived_experience:yes,channel:survey,age_band:18-24",
                },
            )
            assert five.status_code == 422 and five.json()["problems"][0]["field"] == "segment"
        ok = await client.get("/dashboard/group", params={"group": "mandated_group:victims_survivors"})
        assert ok.status_code == 200 and ok.headers["content-security-policy"].startswith("default-src 'self'")
        await client.post("/dashboard/logout")
        assert (await client.get("/dashboard/group/data?group=gender:non_binary")).status_code == 401


async def test_a_hidden_under_reached_group_is_flagged_and_its_drilldown_is_rounded(
    make_settings: Callable[..., Settings], published
) -> None:
    """One non-binary participant among thirty others (the plan's floor is 5): the page lists the
    group among the under-reached as possibly below target, and its drill-down shows channels,
    regions and weeks with every count a multiple of 5 or "<5"."""
    refs = [f.ref() for _ in range(31)]
    await published(f.interview(refs[0], Profile(region="northeast", gender=["non_binary"], lived_experience="yes")))
    for i, ref in enumerate(refs[1:]):
        region = "central" if i % 3 else "southwest"
        await published(f.interview(ref, Profile(region=region, gender=["female"], lived_experience="no")))
    app = build_app(make_settings(small_cell_k=K))
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        await sign_in(client)
        snap = await eventually(
            lambda: _json_of(client, "/dashboard/snapshot"),
            lambda body: body["release"]["sequence"] == 30,
            what="the release of the first thirty",
        )
        cards = {u["group"]: u for u in snap["under_reached"]}
        card = cards["gender:non_binary"]
        assert card["status"] == "attention" and card["count"] in ("<5", 5)
        assert card["status_text"] == "May be below target — small numbers; needs at least 1 more person"

        drill = await _json_of(client, "/dashboard/group/data?group=gender:non_binary")
        assert drill["release"]["sequence"] == 30 and drill["card"]["status"] == "attention"
        assert small_counts_in(drill, K) == []
        shown = counts_shown(drill)
        assert shown and all(v == "<5" or (isinstance(v, int) and v % K == 0) for v in shown), shown
        assert len(drill["channels"]) == 7  # every channel, whether the group used it or not
        regions = {r["category"]: r["count"] for r in drill["regions"]["categories"]}
        assert regions["northeast"] in ("<5", 5) and regions["central"] == "<5"
        assert len(drill["over_time"]["periods"]) == 1  # this week, as the process has only it

        page = await client.get("/dashboard/group", params={"group": "gender:non_binary"})
        assert page.status_code == 200
        for text in ("May be below target", 'id="group-channels"', 'id="group-regions"', 'id="group-weeks"'):
            assert text in page.text
        for secret in refs:
            assert secret not in page.text and secret not in orjson.dumps(drill).decode()
        # Within a segment: the group among people with lived experience, on the same terms.
        within = await _json_of(client, "/dashboard/group/data?group=gender:non_binary&segment=lived_experience:yes")
        assert within["within"]["key"] == "lived_experience:yes"
        assert within["segment"]["key"] == "gender:non_binary,lived_experience:yes"
        assert small_counts_in(within, K) == []


async def _json_of(client: httpx.AsyncClient, path: str) -> dict:
    answer = await client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()
