"""Survey platforms pushing submissions to the survey service, against a real nats-server.

KoboToolbox posts JSON behind basic auth and retries; REDCap's Data Entry Trigger is followed by
an export from a stand-in of REDCap's API (served here, answering as REDCap documents); any other
tool signs Standard Webhooks. Each is mapped by its mapping file; what the file does not map is
refused naming the field, and what it ignores (a name, a phone number) never reaches the log or the logs.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.survey.app import build_app
from shared.errors import ConfigError
from shared.events import SurveyCompleted
from shared.http import InvalidAnswer, NotFoundAnswer, UnauthorizedAnswer, UnavailableAnswer
from shared.logging import configure_logging
from shared.settings import Settings
from tests.integration.test_survey_api import stored_events
from tests.servers import serving

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sources"
KOBO_PASSWORD = "kobo-password-for-tests"
REDCAP_TOKEN = "0123456789ABCDEF0123456789ABCDEF"
TRIGGER_SECRET = "trigger-secret-for-tests"
WEBHOOK_KEY = b"webhook-signing-key-for-tests!!"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
PROJECT_ID = "4021"

REGIONS = """
ne = "northeast"
c = "central"
tcw = "twin_cities_west_metro"
tce = "twin_cities_east_metro"
sw = "southwest"
nw = "northwest"
se = "southeast"
wc = "west_central"
"""
KOBO_MAPPING = (
    """
process_id = "shfa-2018"
submitted_at = "_submission_time"
ignore = ["start", "end", "name", "phone"]

[fields."group_about/region"]
question = "region"
[fields."group_about/region".choices]
pnts = "declined"
"""
    + REGIONS
    + """

[fields."group_about/race"]
question = "race_ethnicity"
[fields."group_about/race".choices]
white = "white"
black = "black"
indigenous = "indigenous"
multiracial = "multiracial"
asian = "asian"
latinx = "latinx"
immigrant = "immigrant"
pnts = "declined"

[fields.lived]
question = "lived_experience"
choices = { yes = "yes", no = "no", pnts = "declined" }
"""
)

WEBHOOK_MAPPING = (
    """
ignore = ["email"]
[fields.region]
question = "region"
[fields.region.choices]
"""
    + REGIONS
    + """
[fields.gender]
question = "gender"
choices = { f = "female", nb = "non_binary", t = "transgender", x = "declined" }
"""
)


def kobo_submission(uuid: str = "f6c1b6f0-9f4d-4f1e-8a0a-0d3c2a6d9b11", **extra: Any) -> dict[str, Any]:
    """A submission as Kobo's REST Services post it (JSON, flat keys, group paths, metadata)."""
    return {
        "_id": 123456,
        "_uuid": uuid,
        "_submission_time": "2018-03-01T17:30:00",
        "_xform_id_string": "aZxTdFq3nW9",
        "_attachments": [],
        "_geolocation": [None, None],
        "_status": "submitted_via_web",
        "_tags": [],
        "_notes": [],
        "_validation_status": {},
        "_submitted_by": None,
        "formhub/uuid": "3b4e7c2a8f0d4f5b9b6a1c2d3e4f5a6b",
        "__version__": "vQ8n3Xr2uZ7mPcVdYt4kLs",
        "meta/instanceID": f"uuid:{uuid}",
        "start": "2018-03-01T11:20:00.000-06:00",
        "end": "2018-03-01T11:29:00.000-06:00",
        "group_about/region": "ne",  # select_one: the choice's code
        "group_about/race": "indigenous multiracial",  # select_multiple: codes separated by spaces
        "lived": "yes",
        **extra,
    }


@dataclass
class RedcapStandIn:
    """REDCap's API, as far as engage uses it: `content=record` export, flat JSON."""

    records: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    url: str = ""
    down: bool = False

    def app(self) -> FastAPI:
        api = FastAPI()

        @api.post("/api/")
        async def export(request: Request) -> JSONResponse:
            form = dict(parse_qsl((await request.body()).decode()))
            self.requests.append(form)
            if self.down:
                return JSONResponse({"error": "the server is busy"}, status_code=500)
            if form.get("token") != REDCAP_TOKEN:
                return JSONResponse({"error": "You do not have permissions to use the API"}, status_code=403)
            assert (form["content"], form["format"], form["type"]) == ("record", "json", "flat"), form
            rows = self.records.get(form["records[0]"], [])
            instrument = form["forms[0]"]
            return JSONResponse([r for r in rows if r.get(f"{instrument}_complete") is not None])

        return api


@dataclass
class Sources:
    client: httpx.AsyncClient
    redcap: RedcapStandIn
    nats_url: str


def write_sources(tmp_path: Path, redcap_url: str) -> Path:
    (tmp_path / "kobo.toml").write_text(KOBO_MAPPING)
    (tmp_path / "webhook.toml").write_text(WEBHOOK_MAPPING)
    (tmp_path / "redcap.toml").write_text((DOCS / "redcap-example.toml").read_text())
    (tmp_path / "redcap-token").write_text(REDCAP_TOKEN + "\n")
    (tmp_path / "webhook-secret").write_text(WEBHOOK_SECRET)
    file = tmp_path / "sources.toml"
    file.write_text(
        f"""
[sources.kobo]
kind = "kobo"
mapping = "kobo.toml"
username = "kobo"
password = {{ env = "TEST_KOBO_PASSWORD" }}

[sources.redcap]
kind = "redcap"
mapping = "redcap.toml"
project_id = "{PROJECT_ID}"
api_url = "{redcap_url}/api/"
api_token = {{ file = "redcap-token" }}
trigger_secret = {{ env = "TEST_REDCAP_TRIGGER" }}

[sources.forms]
kind = "webhook"
mapping = "webhook.toml"
secret = {{ file = "webhook-secret" }}
"""
    )
    return file


@pytest.fixture
async def sources(
    make_settings: Callable[..., Settings], nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Sources]:
    monkeypatch.setenv("TEST_KOBO_PASSWORD", KOBO_PASSWORD)
    monkeypatch.setenv("TEST_REDCAP_TRIGGER", TRIGGER_SECRET)
    redcap = RedcapStandIn()
    async with serving(redcap.app()) as url:
        redcap.url = url
        app = build_app(make_settings(sources_file=write_sources(tmp_path, url)))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://survey") as client:
                yield Sources(client, redcap, nats_url)


KOBO_AUTH = httpx.BasicAuth("kobo", KOBO_PASSWORD)


async def profiles(nats_url: str) -> list[dict[str, Any]]:
    out = []
    for _, event in await stored_events(nats_url):
        payload = event.payload
        assert isinstance(payload, SurveyCompleted)
        out.append(payload.profile.model_dump(exclude_none=True))
    return out


def problem_fields(r: httpx.Response) -> list[str]:
    return [p.field for p in InvalidAnswer.model_validate(r.json()).problems]


# ---- KoboToolbox ---------------------------------------------------------------------------------


async def test_a_kobo_submission_is_recorded_once_however_often_kobo_retries(sources: Sources) -> None:
    body = kobo_submission()
    answers = [await sources.client.post("/sources/kobo/kobo", json=body, auth=KOBO_AUTH) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4, answers[0].text
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True]
    assert len({a.json()["response_id"] for a in answers}) == 1
    [(subject, event)] = await stored_events(sources.nats_url)
    assert subject.endswith(answers[0].json()["response_id"])
    assert event.occurred_at.isoformat() == "2018-03-01T17:30:00+00:00"
    assert isinstance(event.payload, SurveyCompleted)
    assert event.payload.profile.model_dump(exclude_none=True) == {
        "region": "northeast",
        "lived_experience": "yes",
        "race_ethnicity": ["indigenous", "multiracial"],
    }
    other = await sources.client.post("/sources/kobo/kobo", json=kobo_submission(uuid="another"), auth=KOBO_AUTH)
    assert other.json()["duplicate"] is False and len(await stored_events(sources.nats_url)) == 2


async def test_a_name_and_a_phone_never_reach_the_log_or_the_logs(
    make_settings: Callable[..., Settings],
    nats_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TEST_KOBO_PASSWORD", KOBO_PASSWORD)
    monkeypatch.setenv("TEST_REDCAP_TRIGGER", TRIGGER_SECRET)
    settings = make_settings(sources_file=write_sources(tmp_path, "http://127.0.0.1:9"))
    root = logging.getLogger()
    handlers, level, config = root.handlers[:], root.level, structlog.get_config()
    configure_logging(settings.log_format, "debug")  # as `engage serve` does, and as talkative as it gets
    body = kobo_submission(name="Jordan Quill", phone="612-555-0143")
    try:
        app = build_app(settings)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://survey") as client:
                ok = await client.post("/sources/kobo/kobo", json=body, auth=KOBO_AUTH)
                refused = await client.post(
                    "/sources/kobo/kobo", json={**body, "_uuid": "u2", "lived": "612-555-0143"}, auth=KOBO_AUTH
                )
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.configure(**config)
    assert ok.status_code == 200 and refused.status_code == 422
    assert problem_fields(refused) == ["lived"] and "612" not in refused.text
    raw = b"".join(event.model_dump_json().encode() for _, event in await stored_events(nats_url))
    for word in (b"Jordan", b"Quill", b"612-555", b"0143"):
        assert word not in raw
    assert "source_submission_recorded" in err and "source_submission_refused" in err
    for text in ("Jordan", "Quill", "612-555", "0143", "127.0.0.1", "python-httpx", KOBO_PASSWORD):
        assert text not in err, text


@pytest.mark.parametrize(
    "auth",
    [None, httpx.BasicAuth("kobo", "wrong"), httpx.BasicAuth("someone", KOBO_PASSWORD), httpx.BasicAuth("kobo", "")],
)
async def test_kobo_without_its_credentials_is_401_and_nothing_is_stored(
    sources: Sources, auth: httpx.Auth | None
) -> None:
    r = await sources.client.post("/sources/kobo/kobo", json=kobo_submission(), auth=auth or httpx.USE_CLIENT_DEFAULT)
    assert r.status_code == 401
    UnauthorizedAnswer.model_validate(r.json())
    assert await stored_events(sources.nats_url) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"group_about/region": "atlantis"}, "group_about/region"),  # a choice the mapping does not map
        ({"group_about/race": "white martian"}, "group_about/race"),
        ({"favourite_colour": "teal"}, "favourite_colour"),  # a field the mapping does not know
        ({"_uuid": None}, "_uuid"),
    ],
)
async def test_what_the_mapping_does_not_map_is_refused_naming_the_field(
    sources: Sources, change: dict[str, Any], field: str
) -> None:
    r = await sources.client.post("/sources/kobo/kobo", json=kobo_submission(**change), auth=KOBO_AUTH)
    assert r.status_code == 422, r.text
    assert problem_fields(r) == [field]
    assert "atlantis" not in r.text and "martian" not in r.text and "teal" not in r.text
    assert await stored_events(sources.nats_url) == []


async def test_an_unknown_source_is_404(sources: Sources) -> None:
    for path in ("/sources/nobody/kobo", "/sources/forms/kobo", "/sources/kobo/webhook"):
        r = await sources.client.post(path, json=kobo_submission(), auth=KOBO_AUTH)
        assert r.status_code == 404, path
        NotFoundAnswer.model_validate(r.json())
    assert await stored_events(sources.nats_url) == []


# ---- REDCap --------------------------------------------------------------------------------------

REDCAP_ROW = {
    "record_id": "17",
    "redcap_event_name": "baseline_arm_1",
    "redcap_repeat_instrument": "",
    "redcap_repeat_instance": "",
    "first_name": "Jordan",
    "phone": "612-555-0143",
    "region": "3",
    "lived_experience": "1",
    "race___1": "0",
    "race___2": "1",
    "race___3": "1",
    "race___99": "0",
    "gender": "99",
    "age": "",
    "engage_profile_complete": "2",
}


def trigger(complete: str = "2", record: str = "17", **extra: str) -> dict[str, str]:
    """A Data Entry Trigger as REDCap posts it (form-encoded)."""
    return {
        "redcap_url": "https://redcap.example.org/",
        "project_url": f"https://redcap.example.org/redcap_v14.0.0/index.php?pid={PROJECT_ID}",
        "project_id": PROJECT_ID,
        "username": "coordinator1",
        "record": record,
        "instrument": "engage_profile",
        "redcap_event_name": "baseline_arm_1",
        "engage_profile_complete": complete,
        **extra,
    }


async def test_a_completed_redcap_instrument_is_fetched_mapped_and_recorded_once(sources: Sources) -> None:
    sources.redcap.records["17"] = [REDCAP_ROW]
    url = f"/sources/redcap/redcap?secret={TRIGGER_SECRET}"
    first = await sources.client.post(url, data=trigger())
    again = await sources.client.post(url, data=trigger())
    assert (first.status_code, again.status_code) == (200, 200), first.text
    assert (first.json()["recorded"], first.json()["duplicate"], again.json()["duplicate"]) == (True, False, True)
    assert await profiles(sources.nats_url) == [
        {
            "region": "northeast",
            "lived_experience": "yes",
            "race_ethnicity": ["black", "indigenous"],
            "gender": "declined",
        }
    ]
    asked = sources.redcap.requests[0]
    assert asked == {
        "token": REDCAP_TOKEN,
        "content": "record",
        "format": "json",
        "type": "flat",
        "records[0]": "17",
        "forms[0]": "engage_profile",
    }
    raw = b"".join(e.model_dump_json().encode() for _, e in await stored_events(sources.nats_url))
    assert b"Jordan" not in raw and b"612-555" not in raw


@pytest.mark.parametrize(
    "form", [trigger(complete="0"), trigger(complete="1"), {**trigger(), "instrument": "consent_form"}]
)
async def test_a_trigger_that_is_not_a_completed_instrument_is_ignored(sources: Sources, form: dict[str, str]) -> None:
    sources.redcap.records["17"] = [REDCAP_ROW]
    r = await sources.client.post(f"/sources/redcap/redcap?secret={TRIGGER_SECRET}", data=form)
    assert r.status_code == 200 and r.json()["recorded"] is False, r.text
    assert sources.redcap.requests == [] and await stored_events(sources.nats_url) == []


@pytest.mark.parametrize(
    ("query", "form"),
    [
        ("", trigger()),
        ("?secret=wrong", trigger()),
        (f"?secret={TRIGGER_SECRET}", {**trigger(), "project_id": "999"}),
        (f"?secret={TRIGGER_SECRET}", {k: v for k, v in trigger().items() if k != "project_id"}),
    ],
)
async def test_a_trigger_without_the_secret_or_from_another_project_is_401(
    sources: Sources, query: str, form: dict[str, str]
) -> None:
    sources.redcap.records["17"] = [REDCAP_ROW]
    r = await sources.client.post(f"/sources/redcap/redcap{query}", data=form)
    assert r.status_code == 401, r.text
    assert sources.redcap.requests == [] and await stored_events(sources.nats_url) == []


async def test_a_redcap_record_with_an_unmapped_code_is_refused_naming_the_field(sources: Sources) -> None:
    sources.redcap.records["17"] = [{**REDCAP_ROW, "region": "42", "shoe_size": "9"}]
    r = await sources.client.post(f"/sources/redcap/redcap?secret={TRIGGER_SECRET}", data=trigger())
    assert r.status_code == 422 and sorted(problem_fields(r)) == ["region", "shoe_size"]
    missing = await sources.client.post(f"/sources/redcap/redcap?secret={TRIGGER_SECRET}", data=trigger(record="18"))
    assert missing.status_code == 422 and problem_fields(missing) == ["record"]
    assert await stored_events(sources.nats_url) == []


# ---- Standard Webhooks ---------------------------------------------------------------------------


def sign(body: bytes, msg_id: str, stamp: int | None = None, key: bytes = WEBHOOK_KEY) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    mac = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": f"v1,{mac}",
        "content-type": "application/json",
    }


async def test_a_signed_webhook_is_recorded_once_per_id(sources: Sources) -> None:
    body = b'{"region": "c", "gender": ["nb", "t"], "email": "someone@example.org"}'
    first = await sources.client.post("/sources/forms/webhook", content=body, headers=sign(body, "msg_2Yx"))
    replay = await sources.client.post("/sources/forms/webhook", content=body, headers=sign(body, "msg_2Yx"))
    assert (first.status_code, replay.status_code) == (200, 200), first.text
    assert (first.json()["duplicate"], replay.json()["duplicate"]) == (False, True)
    assert await profiles(sources.nats_url) == [{"region": "central", "gender": ["non_binary", "transgender"]}]
    raw = b"".join(e.model_dump_json().encode() for _, e in await stored_events(sources.nats_url))
    assert b"someone@" not in raw


async def test_a_webhook_with_a_bad_signature_or_an_old_timestamp_is_401(sources: Sources) -> None:
    body = b'{"region": "c"}'
    now = int(time.time())
    cases = [
        sign(body, "msg_a", key=b"another-key"),
        {**sign(body, "msg_a"), "webhook-signature": "v1,AAAA"},
        sign(body, "msg_a", stamp=now - 301),  # older than the window
        sign(body, "msg_a", stamp=now + 301),  # from the future
        {k: v for k, v in sign(body, "msg_a").items() if k != "webhook-signature"},
        {"content-type": "application/json"},
    ]
    for headers in cases:
        r = await sources.client.post("/sources/forms/webhook", content=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
    tampered = await sources.client.post("/sources/forms/webhook", content=b'{"region": "ne"}', headers=sign(body, "b"))
    assert tampered.status_code == 401
    assert await stored_events(sources.nats_url) == []


async def test_a_webhook_replayed_with_other_answers_is_409(sources: Sources) -> None:
    body, other = b'{"region": "c"}', b'{"region": "ne"}'
    assert (await sources.client.post("/sources/forms/webhook", content=body, headers=sign(body, "m"))).is_success
    r = await sources.client.post("/sources/forms/webhook", content=other, headers=sign(other, "m"))
    assert r.status_code == 409
    assert await profiles(sources.nats_url) == [{"region": "central"}]


# ---- the contract, the start, the fuzz -----------------------------------------------------------


async def test_the_source_routes_document_what_they_answer(sources: Sources) -> None:
    openapi = (await sources.client.get("/openapi.json")).json()
    for kind in ("kobo", "redcap", "webhook"):
        operation = openapi["paths"][f"/sources/{{name}}/{kind}"]["post"]
        for status, model in (
            ("401", "UnauthorizedAnswer"),
            ("404", "NotFoundAnswer"),
            ("409", "ConflictAnswer"),
            ("422", "InvalidAnswer"),
            ("429", "TooManyAnswer"),
            ("503", "UnavailableAnswer"),
        ):
            ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
            assert ref == f"#/components/schemas/{model}", (kind, status)
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("SourceReceipt")
        assert "requestBody" in operation


async def test_redcap_not_answering_is_a_documented_503_and_nothing_is_stored(sources: Sources) -> None:
    sources.redcap.records["17"] = [REDCAP_ROW]
    sources.redcap.down = True
    r = await sources.client.post(f"/sources/redcap/redcap?secret={TRIGGER_SECRET}", data=trigger())
    assert r.status_code == 503 and r.headers["Retry-After"], r.text
    UnavailableAnswer.model_validate(r.json())
    assert await stored_events(sources.nats_url) == []


def test_a_bad_sources_file_stops_the_service(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    file = write_sources(tmp_path, "http://127.0.0.1:9")  # TEST_KOBO_PASSWORD is not set here
    with pytest.raises(ConfigError, match=r"sources\.kobo\.password\.env = 'TEST_KOBO_PASSWORD'"):
        build_app(make_settings(sources_file=file))
    (tmp_path / "kobo.toml").write_text(KOBO_MAPPING.replace('"region"', '"regoin"'))
    with pytest.raises(ConfigError, match="regoin"):
        build_app(make_settings(sources_file=file))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=6),
    max_leaves=20,
)
FIELDS = st.sampled_from(["_uuid", "group_about/region", "group_about/race", "lived", "region", "gender", "name"])
BODIES = JSON | st.dictionaries(FIELDS, JSON, max_size=6)


async def test_random_bodies_never_5xx_and_store_nothing_unless_valid(sources: Sources) -> None:
    """Random JSON to every source route, with and without valid credentials: never a 5xx, and an
    event is stored only for an answer that says it recorded one."""
    loop = asyncio.get_running_loop()

    def on_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    sources.redcap.records["17"] = [REDCAP_ROW]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=BODIES, route=st.sampled_from(["kobo", "redcap", "webhook"]), valid=st.booleans())
    def send(body: Any, route: str, valid: bool) -> None:
        raw = json.dumps(body).encode()
        headers = {"content-type": "application/json"}
        auth: httpx.Auth | None = None
        path = f"/sources/{'forms' if route == 'webhook' else route}/{route}"
        if route == "kobo" and valid:
            auth = KOBO_AUTH
        if route == "webhook" and valid:
            headers = sign(raw, f"fuzz-{hashlib.sha256(raw).hexdigest()[:16]}")
        if route == "redcap" and valid:
            path += f"?secret={TRIGGER_SECRET}"
        before = len(on_loop(stored_events(sources.nats_url)))
        r = on_loop(sources.client.post(path, content=raw, headers=headers, auth=auth or httpx.USE_CLIENT_DEFAULT))
        assert r.status_code < 500, r.text
        if not valid:
            assert r.status_code == 401, r.text
        recorded = r.status_code == 200 and r.json()["recorded"] and not r.json()["duplicate"]
        assert len(on_loop(stored_events(sources.nats_url))) == before + (1 if recorded else 0), r.text

    await asyncio.to_thread(send)
