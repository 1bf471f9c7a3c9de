"""POST /exports and `engage export` against real servers: who may export what, every export recorded
once on the log (and none that was refused or failed), what coordinators get is what /coverage shows
them, a log that cannot record the export sends nothing, and the risk figures hold in the files."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest
from nats.js.api import DiscardPolicy

from services.analytics.app import build_app
from services.analytics.export.risk import SEPARATOR, quasi_identifiers
from services.analytics.export.run import unpack
from services.analytics.state import AnalyticsState
from shared.bus import attach_streams, make_broker, publish_event
from shared.events import DataExported, Envelope
from shared.plan import shipped_plans
from shared.settings import Settings
from shared.upcasting import decode_event
from tests.conftest import TOKENS
from tests.integration import test_http_contract as contract
from tests.integration.test_export_and_replay import outreach
from tests.polling import eventually
from tests.servers import serving

pytestmark = pytest.mark.integration

stoppable_nats = contract.stoppable_nats  # a nats-server of the test's own, to stop under analytics
PLAN = shipped_plans()["shfa-2018"]
QIS = quasi_identifiers(PLAN)
CLI = [sys.executable, "-m", "services.cli.main"]
ALL = ["engagements", "participants", "coverage", "totals"]


@dataclass
class Analytics:
    client: httpx.AsyncClient
    settings: Settings
    last: int  # the log's last sequence once the outreach is published
    state: AnalyticsState


async def publish_outreach(settings: Settings, seed: int = 2018) -> int:
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    events, _ = outreach(random.Random(seed))
    last = 0
    for ev in events:
        last, _ = await publish_event(broker, ev, settings)
    await broker.stop()
    return last


async def coverage(client: httpx.AsyncClient, who: str) -> dict[str, Any]:
    answer = await client.get("/coverage", headers={"Authorization": f"Bearer {TOKENS[who].token}"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture
async def analytics(make_settings: Callable[..., Settings]) -> AsyncIterator[Analytics]:
    """analytics over the demo-like outreach, projected up to the end of the log."""
    settings = make_settings()
    last = await publish_outreach(settings)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://analytics") as client:
            await eventually(
                lambda: coverage(client, "analyst"),
                lambda body: body["as_of"]["sequence"] == last,
                what=f"the projection to reach {last}",
                timeout=30,
            )
            yield Analytics(client, settings, last, app.state.analytics)


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who].token}"}


async def post(a: Analytics, who: str | None, body: dict[str, Any]) -> httpx.Response:
    return await a.client.post("/exports", json=body, headers=bearer(who) if who else {})


async def log_messages(nats_url: str, stream: str) -> list[tuple[int, str, bytes, bytes]]:
    """(sequence, subject, headers, data) of every message on the event log."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq or 1, (info.state.last_seq or 0) + 1):
            msg = await js.get_msg(stream, seq)
            out.append((seq, msg.subject, repr(msg.headers).encode(), msg.data or b""))
        return out
    finally:
        await nc.close()


async def audits(settings: Settings) -> list[tuple[int, Envelope, bytes]]:
    """Every export's record on the log: sequence, event, raw bytes."""
    found = []
    for seq, subject, headers, data in await log_messages(settings.nats_url or "", settings.stream_name):
        if ".export." in subject:
            found.append((seq, decode_event(data), headers + data))
    return found


def table(files: dict[str, bytes], name: str) -> list[dict[str, str | None]]:
    rows = csv.DictReader(io.StringIO(files[name].decode("utf-8")))
    return [{k: (v if v != "" else None) for k, v in row.items()} for row in rows]


def classes(rows: list[dict[str, str | None]]) -> Counter[tuple[Any, ...]]:
    """Quasi-identifier classes of participant rows, a multi-select answer as a set."""
    return Counter(tuple(frozenset((r[q] or "").split(SEPARATOR)) if r[q] else None for q in QIS) for r in rows)


async def test_an_analysts_export_is_sent_once_recorded_with_the_tokens_name_and_counts_no_one(
    analytics: Analytics,
) -> None:
    """The archive holds every table, the dictionary and the manifest; the log holds one DataExported
    naming the token (never the token itself), and the projector counts it without counting anyone."""
    before = await coverage(analytics.client, "analyst")
    answer = await post(analytics, "analyst", {"tables": ALL, "formats": ["csv", "parquet"]})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["cache-control"] == "no-store"
    files = unpack(answer.content)
    expected = {f"{t}.{fmt}" for t in ALL for fmt in ("csv", "parquet")}
    assert set(files) == expected | {"data_dictionary.json", "data_dictionary.md", "manifest.json"}
    about = orjson.loads(files["manifest.json"])

    (seq, event, raw), *more = await audits(analytics.settings)
    assert not more
    p = event.payload
    assert isinstance(p, DataExported) and event.source == "analytics"
    assert (p.requested_by, p.scope, p.tables, p.formats) == ("analyst", "analyst:read", ALL, ["csv", "parquet"])
    assert p.reflects_sequence == analytics.last and seq == analytics.last + 1
    assert (
        p.rows == {t: len(table(files, f"{t}.csv")) for t in ALL} == {t: v["rows"] for t, v in about["tables"].items()}
    )
    assert p.participants == before["participants"] == len(table(files, "participants.csv"))
    assert p.sample_uniques == about["reidentification"]["as_released"]["sample_uniques"] > 0
    assert TOKENS["analyst"].token.encode() not in raw
    assert answer.headers["export-id"] == p.export_id == about["export_id"]
    assert answer.headers["export-audit-sequence"] == str(seq) == str(about["audit"]["sequence"])
    assert answer.headers["export-reflects-sequence"] == str(analytics.last)
    assert answer.headers["export-sample-uniques"] == str(p.sample_uniques)

    after = await eventually(
        lambda: coverage(analytics.client, "analyst"),
        lambda body: body["as_of"]["sequence"] == seq,
        what="the projector to pass the export's record",
    )
    assert analytics.state.projector.progress.parked == 0  # read, not parked
    assert (after["participants"], after["engagements"]) == (before["participants"], before["engagements"])
    assert after["dimensions"] == before["dimensions"]


async def test_a_coordinator_asking_for_microdata_gets_403_and_nothing_is_made_or_recorded(
    analytics: Analytics,
) -> None:
    for tables in (["engagements"], ["participants", "coverage"], ALL):
        answer = await post(analytics, "coordinator", {"tables": tables})
        assert answer.status_code == 403, answer.text
        assert "analyst role" in answer.json()["reason"] and "'analyst:read'" in answer.json()["reason"]
        assert "cache-control" not in answer.headers or answer.headers["content-type"] == "application/json"
        await contract.check_contract(analytics.client, "post", "/exports", answer)
    assert await audits(analytics.settings) == []
    assert len(await log_messages(analytics.settings.nats_url or "", analytics.settings.stream_name)) == analytics.last


def coverage_cells(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (d["dimension"], c["category"], str(c["count"]), None if c["alone"] is None else str(c["alone"]), c["status"])
        for d in body["dimensions"]
        for c in d["categories"]
    ]


async def test_a_coordinators_aggregate_export_is_what_coverage_shows_them(analytics: Analytics) -> None:
    """Every count of the coverage and totals tables is the coordinator's /coverage number, protected alike."""
    shown = await coverage(analytics.client, "coordinator")
    answer = await post(analytics, "coordinator", {"tables": ["coverage", "totals"], "formats": ["csv", "parquet"]})
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store" and "export-sample-uniques" not in answer.headers
    files = unpack(answer.content)
    assert "engagements.csv" not in files and "participants.csv" not in files
    rows = table(files, "coverage.csv")
    assert [(r["dimension"], r["category"], r["count"], r["alone"], r["status"]) for r in rows] == coverage_cells(shown)
    protected = [r["count"] for r in rows if not (r["count"] or "").isdigit()]
    assert protected, "the outreach has small cells a coordinator must not see as they are"
    totals = {(r["measure"], r["dimension"], r["channel"]): r["count"] for r in table(files, "totals.csv")}
    assert totals[("participants", None, None)] == str(shown["participants"])
    assert {c: totals[("engagements", None, c)] for c in shown["engagements_by_channel"]} == {
        c: str(n) for c, n in shown["engagements_by_channel"].items()
    }
    about = orjson.loads(files["data_dictionary.json"])
    assert about["view"] == "coordinator" and "reidentification" not in about
    ((_, event, _),) = await audits(analytics.settings)
    assert isinstance(event.payload, DataExported)
    assert (event.payload.requested_by, event.payload.scope) == ("coordinator", "coverage:read")
    assert event.payload.participants == 0 and event.payload.sample_uniques is None


async def test_no_token_or_a_wrong_one_is_401_and_bad_requests_are_422_naming_the_field(analytics: Analytics) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token-of-ours-at-all"}):
        answer = await analytics.client.post("/exports", json={}, headers=headers)
        assert answer.status_code == 401, answer.text
        await contract.check_contract(analytics.client, "post", "/exports", answer)
    for body, field in (
        ({"process_id": "another-process"}, "process_id"),
        ({"k_anonymity": 1}, "k_anonymity"),
        ({"tables": ["everything"]}, "tables.0"),
        ({"generalise": {"drop": ["favourite_colour"]}}, "generalise.drop"),
        ({"formats": ["xlsx"]}, "formats.0"),
    ):
        answer = await post(analytics, "analyst", body)
        assert answer.status_code == 422, answer.text
        assert [p["field"] for p in answer.json()["problems"]] == [field]
        await contract.check_contract(analytics.client, "post", "/exports", answer)
    assert await audits(analytics.settings) == []


async def test_k_anonymity_holds_in_the_files_and_the_risk_figures_are_the_files_own(analytics: Analytics) -> None:
    """As recorded, the figures equal a count made from the participants file; with k = 5 every
    participant's answers are shared by at least four others in the file itself."""
    plain = await post(analytics, "analyst", {"tables": ["participants"]})
    assert plain.status_code == 200, plain.text
    recorded = classes(table(unpack(plain.content), "participants.csv"))
    uniques = sum(1 for n in recorded.values() if n == 1)
    assert uniques > 100  # most people are unique on their answers
    assert plain.headers["export-sample-uniques"] == str(uniques)
    assert plain.headers["export-smallest-class"] == "1"

    k = 5
    safe = await post(analytics, "analyst", {"tables": ["participants", "engagements"], "k_anonymity": k})
    assert safe.status_code == 200, safe.text
    files = unpack(safe.content)
    released = classes(table(files, "participants.csv"))
    assert min(released.values()) >= k
    assert safe.headers["export-sample-uniques"] == "0" and int(safe.headers["export-smallest-class"]) >= k
    about = orjson.loads(files["manifest.json"])["reidentification"]
    assert about["as_recorded"]["sample_uniques"] == uniques and about["k_anonymity"] == k
    assert {g["name"] for g in about["generalised"]} == {"multi_select", "age_top_code"}
    assert safe.headers["export-suppressed-values"] == str(about["suppressed_values"]) != "0"
    people = {r["participant"]: r for r in table(files, "participants.csv")}
    for row in table(files, "engagements.csv"):  # every row shows its participant's answers as released
        assert all(row[q] == people[row["participant"]][q] for q in QIS)
    dictionary = orjson.loads(files["data_dictionary.json"])
    assert dictionary["reidentification"] == about
    assert "Re-identification risk" in files["data_dictionary.md"].decode()
    assert len(await audits(analytics.settings)) == 2


async def test_nats_down_when_exporting_is_a_503_and_nothing_is_sent(
    stoppable_nats: Any, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(nats_url=stoppable_nats.url, publish_timeout_seconds=1.0)
    app = build_app(settings)
    async with contract.running(app, "analytics") as client:
        stoppable_nats.stop()
        for who, tables in (("analyst", ALL), ("coordinator", ["coverage"])):
            answer = await client.post("/exports", json={"tables": tables}, headers=bearer(who))
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "1" and "nothing was exported" in answer.json()["reason"]
            await contract.check_contract(client, "post", "/exports", answer)


async def test_a_log_that_does_not_store_the_record_means_no_export(analytics: Analytics) -> None:
    """Reading works but the log refuses new events (full, discard new): 503, no record, nothing sent."""
    nc = await nats.connect(analytics.settings.nats_url or "")
    js = nc.jetstream()
    info = await js.stream_info(analytics.settings.stream_name)
    config = info.config
    config.max_msgs, config.discard = analytics.last, DiscardPolicy.NEW
    await js.update_stream(config)
    try:
        answer = await post(analytics, "analyst", {"tables": ALL})
        assert answer.status_code == 503, answer.text
        assert "did not store the export's record" in answer.json()["reason"]
        assert answer.headers["content-type"] == "application/json"
        await contract.check_contract(analytics.client, "post", "/exports", answer)
        assert (await js.stream_info(analytics.settings.stream_name)).state.last_seq == analytics.last
    finally:
        config.max_msgs = -1
        await js.update_stream(config)
        await nc.close()
    assert await audits(analytics.settings) == []


def engage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env={**clean, "COLUMNS": "200", **env}, timeout=180
    )


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


async def test_engage_export_goes_through_analytics_with_the_tokens_role(analytics: Analytics, tmp_path: Path) -> None:
    """The analyst's token from the tokens file exports microdata into --out; a coordinator's is refused
    microdata with one line naming the analyst role but may export the aggregate tables; a wrong token is
    refused (401). A refused export writes nothing and records nothing."""
    data = tmp_path / "up"
    data.mkdir()
    (data / "tokens.json").write_text(orjson.dumps({n: s.model_dump() for n, s in TOKENS.items()}).decode())
    async with serving(build_app(analytics.settings)) as url:

        async def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(engage, "export", "--url", url, "--data-dir", str(data), *args, **env)

        done = await run("--out", str(tmp_path / "analyst"), "--k-anonymity", "5")
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        written = {p.name for p in (tmp_path / "analyst").iterdir()}
        assert {"engagements.csv", "participants.parquet", "manifest.json", "data_dictionary.md"} <= written
        assert not [n for n in written if n.startswith(".")]
        assert f"reflects the log up to sequence {analytics.last}" in done.stderr
        assert "requested by analyst" in done.stderr and "as released (k = 5) 0 sample uniques" in done.stderr
        assert "suppressed" in done.stderr and str(tmp_path / "analyst" / "engagements.csv") in done.stderr

        coordinator = TOKENS["coordinator"].token
        refused = await run("--out", str(tmp_path / "refused"), ENGAGE_TOKEN=coordinator)
        line = one_line_error(refused)
        assert "(403)" in line and "analyst role" in line and "--tables coverage,totals" in line
        assert not (tmp_path / "refused").exists()

        allowed = await run(
            "--out", str(tmp_path / "coordinator"), "--tables", "coverage,totals", "--token", coordinator
        )
        assert allowed.returncode == 0, allowed.stderr
        assert "requested by coordinator, scope coverage:read" in allowed.stderr
        assert not (tmp_path / "coordinator" / "engagements.csv").exists()

        wrong = await run("--out", str(tmp_path / "wrong"), "--token", "not-a-token-of-ours-at-all")
        assert "the token was refused (401)" in one_line_error(wrong)
        assert not (tmp_path / "wrong").exists()

        bad = await run("--out", str(tmp_path / "bad"), "--generalise", "drop:favourite_colour")
        assert "(422)" in (line := one_line_error(bad)) and "--generalise" in line

    records = [e.payload for _, e, _ in await audits(analytics.settings)]
    assert [(r.requested_by, r.scope) for r in records if isinstance(r, DataExported)] == [
        ("analyst", "analyst:read"),
        ("coordinator", "coverage:read"),
    ]
    gone = await asyncio.to_thread(
        engage, "export", "--url", url, "--data-dir", str(data), "--out", str(tmp_path / "x")
    )
    assert f"analytics is not reachable at {url}" in one_line_error(gone)


async def test_engage_export_when_nats_is_down_says_so_in_one_line_and_writes_nothing(
    stoppable_nats: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(nats_url=stoppable_nats.url, publish_timeout_seconds=1.0)
    async with serving(build_app(settings)) as url:
        stoppable_nats.stop()
        run = await asyncio.to_thread(
            engage, "export", "--url", url, "--out", str(tmp_path / "out"), ENGAGE_TOKEN=TOKENS["analyst"].token
        )
    line = one_line_error(run)
    assert "(503)" in line and "nothing was exported" in line
    assert not (tmp_path / "out").exists()
