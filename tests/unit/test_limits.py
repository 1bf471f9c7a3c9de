"""What a client can send is bounded: times in a sane window, events under NATS's max payload,
bodies under a cap (refused with 413 before they are read)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from services.analytics.projection.fold import DEFAULT_TZ, day_of
from services.analytics.reading.decode import Unreadable, decode
from shared.events import MAX_EVENT_BYTES, MAX_PROFILES_PER_GATHERING, Envelope, GatheringHeld, GatheringKind
from shared.http import MAX_BODY_BYTES, install
from shared.profile import CATEGORIES, ExperienceTerm, Gender, ProfessionalRole, Profile, RaceEthnicity
from shared.settings import Settings
from shared.upcasting import encode_event
from tests import factories as f
from tests.servers import serving

YEAR_ONE = "0001-01-01T00:00:00Z"


def test_the_fold_cannot_place_year_one_on_a_minnesota_day() -> None:
    """Why the window: year 1 has no local day before it in Python's calendar."""
    with pytest.raises(OverflowError):
        day_of(datetime(1, 1, 1, tzinfo=UTC), DEFAULT_TZ)


@pytest.mark.parametrize("field", ["occurred_at", "recorded_at"])
def test_an_event_on_the_log_with_a_time_in_year_one_is_unreadable_never_folded(field: str) -> None:
    """The contract refuses it, so decode parks it: it never reaches day_of."""
    event = f.survey(region="northeast").model_dump(mode="json")
    event[field] = YEAR_ONE
    found = decode(json.dumps(event).encode())
    assert found == Unreadable(f"invalid event: {field}: Value error, must not be before 2000-01-01")


def test_a_scheduled_time_far_ahead_is_unreadable() -> None:
    event = f.survey(region="northeast").model_dump(mode="json")
    event["occurred_at"] = "9999-12-31T23:59:59-05:00"
    found = decode(json.dumps(event).encode())
    assert found == Unreadable("invalid event: occurred_at: Value error, must not be more than 5 years ahead")


def test_the_largest_event_the_contract_allows_fits_in_a_nats_message() -> None:
    everything = Profile(
        region="twin_cities_west_metro",
        lived_experience="yes",
        race_ethnicity=list(RaceEthnicity),
        gender=list(Gender),
        lgbq="yes",
        age_band="65+",
        experience_terms=list(ExperienceTerm),
        professional_roles=list(ProfessionalRole),
        task_force_connection="yes",
        tribal_affiliation="yes",
    )
    largest = Envelope.wrap(
        GatheringHeld(
            gathering_id="g" * 64,
            kind=GatheringKind.small_group_meeting,
            region="twin_cities_west_metro",
            attendee_count=5000,
            profiles=[everything] * MAX_PROFILES_PER_GATHERING,
        ),
        process_id="shfa-2018",
        source="intake",
        correlation_id="c" * 64,
    )
    assert len(encode_event(largest)) < MAX_EVENT_BYTES // 2
    with pytest.raises(ValidationError, match="profiles"):
        GatheringHeld.model_validate(
            {**largest.payload.model_dump(), "profiles": [{}] * (MAX_PROFILES_PER_GATHERING + 1)}
        )


@pytest.mark.parametrize("dimension", ["race_ethnicity", "gender", "experience_terms", "professional_roles"])
def test_a_multi_select_holds_at_most_its_categories(dimension: str) -> None:
    every = list(CATEGORIES[dimension])
    assert Profile.model_validate({dimension: every}).categories[dimension] == tuple(every)
    with pytest.raises(ValidationError, match=dimension):
        Profile.model_validate({dimension: [*every, every[0]]})


# The body cap, against a real server: a test client would hand over the whole body at once.


class Echo(BaseModel):
    text: str


def capped_app() -> FastAPI:
    app = FastAPI()
    install(app, Settings(tokens={}))
    read: list[int] = []
    app.state.read = read

    @app.post("/echo")
    async def echo(body: Echo) -> dict[str, int]:
        read.append(len(body.text))
        return {"length": len(body.text)}

    return app


def posting(length: str) -> bytes:
    """The head of a JSON POST to /echo, its length given by ``length`` (a header)."""
    return f"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{length}\r\n\r\n".encode()


async def exchange(url: str, head: bytes, chunks: list[bytes], then_wait: float = 10.0) -> tuple[int, dict, float]:
    """Send ``head`` and as many ``chunks`` as the server takes; the status, body and seconds taken."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    started = time.monotonic()
    writer.write(head)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass  # the server stopped reading: what the cap is for
    answer = await asyncio.wait_for(reader.read(65536), then_wait)
    took = time.monotonic() - started
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body) if body.startswith(b"{") else {}, took


async def test_a_64_mib_body_is_refused_with_413_before_it_is_read() -> None:
    app = capped_app()
    async with serving(app) as url:
        size = 64 * 1024 * 1024
        head = posting(f"content-length: {size}")
        # Only the head and 1 MiB are sent: an answer at all shows the server did not wait for the rest.
        status, body, took = await exchange(url, head, [b"x" * (1024 * 1024)])
    assert status == 413 and took < 5
    assert body == {"error": "too_large", "reason": f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB"}
    assert app.state.read == []


async def test_a_chunked_body_is_refused_once_it_passes_the_cap() -> None:
    app = capped_app()
    async with serving(app) as url:
        head = posting("transfer-encoding: chunked")
        piece = b'{"text": "' + b"x" * (64 * 1024)
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        # 8 chunks of 64 KiB (twice the cap) and never the last chunk: the server must answer anyway.
        status, body, _ = await exchange(url, head, [chunk] * 8)
    assert status == 413 and body["error"] == "too_large"
    assert app.state.read == []


async def test_a_body_under_the_cap_is_read() -> None:
    app = capped_app()
    async with serving(app) as url:
        payload = json.dumps({"text": "x" * (MAX_BODY_BYTES - 100)}).encode()
        head = posting(f"content-length: {len(payload)}")
        status, body, _ = await exchange(url, head, [payload])
    assert (status, body) == (200, {"length": MAX_BODY_BYTES - 100})


def test_every_route_documents_413() -> None:
    from shared.http import error_responses

    assert error_responses(422)[413]["model"].__name__ == "TooLargeAnswer"


async def test_an_event_over_the_log_s_limit_is_refused_before_anything_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last line of defence: publish_event measures the encoded event and refuses it whole."""
    from shared import bus
    from shared.errors import EventTooLarge
    from shared.settings import Settings
    from tests import factories

    monkeypatch.setattr(bus, "MAX_EVENT_BYTES", 200)

    class NoBroker:
        async def publish(self, *_args: object, **_kwargs: object) -> None:
            raise AssertionError("an oversize event reached the broker")

    with pytest.raises(EventTooLarge, match="at most 200"):
        await bus.publish_event(NoBroker(), factories.survey(region="central"), Settings())  # type: ignore[arg-type]  # only publish is needed


def test_a_token_writes_its_burst_at_once_then_at_its_rate_and_is_told_when_to_come_back() -> None:
    from shared.http import TooManyRequests, WriteLimits

    now = [0.0]
    limits = WriteLimits(rate=2.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        limits.take("survey")
    with pytest.raises(TooManyRequests) as refused:
        limits.take("survey")
    assert refused.value.wait == pytest.approx(0.5) and "try again in 1 s" in str(refused.value)
    limits.take("intake")  # another token has its own bucket
    now[0] = 0.5
    limits.take("survey")  # half a second at 2 a second: one more write
    with pytest.raises(TooManyRequests):
        limits.take("survey")
