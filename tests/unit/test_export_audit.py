"""An export's record on the log, and `engage export`'s options and answers, without servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
from nats.aio.client import Client
from pydantic import ValidationError

from services.analytics.export.run import audit_event, manifest, package, record, unpack
from services.analytics.export.tables import build, files_of, safe_name
from services.analytics.projection.engages import keys_of, touches
from services.analytics.projection.memory import MemoryProjection
from services.analytics.reading.decode import Unreadable, decode
from services.cli.embedded import free_port
from services.cli.export import formats_of, generalise_of, k_of, refusal, summary, tables_of
from shared.errors import EngageError, PublishError
from shared.events import DataExported, Envelope
from shared.plan import shipped_plans
from shared.settings import Settings
from shared.upcasting import encode_event
from tests import factories as f
from tests.conftest import TOKENS
from tests.unit.test_export import recorded

PLAN = shipped_plans()["shfa-2018"]


def made_export() -> tuple[Any, Envelope]:
    export = build(recorded([f.survey(region="central"), f.interview(region="northeast")]), PLAN)
    event = audit_event(
        export,
        export_id="ex-0123456789abcdef",
        process_id="shfa-2018",
        requested_by="analyst",
        scope="analyst:read",
        tables=["engagements", "participants", "coverage", "totals"],
        formats=["csv"],
        k_anonymity=None,
        participants=2,
    )
    return export, event


def test_the_record_says_who_what_and_which_point_of_the_log_never_the_token() -> None:
    export, event = made_export()
    p = event.payload
    assert isinstance(p, DataExported)
    assert event.subject == "engagement.shfa-2018.export.ex-0123456789abcdef" and event.source == "analytics"
    assert (p.requested_by, p.scope, p.reflects_sequence, p.participants) == ("analyst", "analyst:read", 2, 2)
    assert p.rows == {name: len(rows) for name, (_, rows) in export.tables.items()}
    assert (p.rows["engagements"], p.rows["participants"]) == (2, 2)
    assert p.sample_uniques == 2 and p.smallest_class == 1 and p.suppressed_values == 0
    raw = encode_event(event)
    assert not any(spec.token.encode() in raw for spec in TOKENS.values())
    with pytest.raises(ValidationError):
        DataExported.model_validate({**p.model_dump(), "k_anonymity": 1})
    with pytest.raises(ValidationError):
        DataExported.model_validate({**p.model_dump(), "tables": ["contacts"]})


def test_the_record_engages_no_one_and_the_projection_reads_it_without_parking_it() -> None:
    """touches() gives nobody, the fold counts nobody, and the reader decodes it (an unreadable event is parked)."""
    _, event = made_export()
    assert touches(event) == [] and keys_of([event]) == set()
    assert not isinstance(decode(encode_event(event)), Unreadable)
    with_it, without = MemoryProjection(), MemoryProjection()
    people = [f.survey(region="central"), f.interview(region="northeast")]
    with_it.feed(enumerate([*people, event], start=1))
    without.feed(enumerate(people, start=1))
    a, b = with_it.counts("shfa-2018", PLAN), without.counts("shfa-2018", PLAN)
    assert (a.participants, a.engagements, a.categories, a.channels) == (
        b.participants,
        b.engagements,
        b.categories,
        b.channels,
    )


def test_the_record_leaves_the_span_of_the_outreach_as_it_was() -> None:
    _, event = made_export()
    outreach = f.survey(region="central").model_copy(update={"occurred_at": datetime(2018, 3, 1, tzinfo=UTC)})
    live = MemoryProjection()
    live.feed(enumerate([outreach, event], start=1))
    assert live.counts("shfa-2018", PLAN).last_event == outreach.occurred_at


class Ack:
    seq, duplicate = 42, False


class FakeNats:
    """A nats-py client whose JetStream stores, times out, or that is not connected."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.published: list[tuple[str, dict[str, str]]] = []

    @property
    def is_connected(self) -> bool:
        return self.mode != "disconnected"

    def jetstream(self) -> FakeNats:
        return self

    async def publish(self, subject: str, data: bytes, **kw: Any) -> Ack:
        if self.mode == "timeout":
            raise TimeoutError
        self.published.append((subject, kw["headers"]))
        return Ack()


def test_a_record_the_log_does_not_store_is_a_503_and_one_it_stores_gives_its_sequence() -> None:
    _, event = made_export()
    settings = Settings()
    for mode in ("disconnected", "timeout"):
        with pytest.raises(PublishError, match="nothing was exported"):
            asyncio.run(record(cast(Client, FakeNats(mode)), event, settings))
    stored = FakeNats("ok")
    assert asyncio.run(record(cast(Client, stored), event, settings)) == 42
    assert stored.published == [(event.subject, {"Nats-Msg-Id": event.event_id, "Engage-Type": "DataExported"})]


def test_a_package_unpacks_to_its_files_and_a_damaged_one_is_refused() -> None:
    export, event = made_export()
    files = files_of(export, ("csv", "parquet"), {"manifest.json": {"export_id": "ex-0123456789abcdef"}})
    assert unpack(package(files, event.occurred_at)) == files
    with pytest.raises(ValueError, match="not a zip archive"):
        unpack(b"PK\x03\x04 not really")
    assert orjson.loads(files["manifest.json"]) == {"export_id": "ex-0123456789abcdef"}
    for name in ("../engagements.csv", "/etc/passwd", ".hidden", "a/b.csv", "", "a\\b.csv"):
        assert not safe_name(name), name
    assert safe_name("engagements.csv")


def test_the_commands_options_are_checked_with_the_option_named() -> None:
    assert tables_of("coverage, ENGAGEMENTS") == ("engagements", "coverage")
    assert formats_of("parquet,csv") == ("csv", "parquet")
    for call, option in (
        (lambda: tables_of("contacts"), "--tables"),
        (lambda: formats_of(""), "--format"),
        (lambda: generalise_of("blur"), "--generalise"),
        (lambda: k_of(1), "--k-anonymity"),
        (lambda: k_of(101), "--k-anonymity"),
    ):
        with pytest.raises(EngageError, match=f"^{option}"):
            call()
    assert generalise_of(None) is None and generalise_of("none") == {}
    assert generalise_of("multi_select,age_wide,region_metro,drop:gender") == {
        "multi_select": True,
        "age_band": "wide",
        "region": "metro",
        "drop": ["gender"],
    }


def answer(status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(status, json=body)


def test_each_refusal_is_one_line_that_says_what_to_do() -> None:
    micro = ("engagements", "coverage")
    wrong = refusal(answer(401, {"error": "unauthorized", "reason": "unknown token"}), micro)
    assert str(wrong).startswith("the token was refused (401): unknown token")
    forbidden = refusal(
        answer(403, {"error": "forbidden", "reason": "engagements is microdata: ... the analyst role"}), micro
    )
    assert "(403)" in str(forbidden) and "analyst role" in str(forbidden)
    assert "--tables coverage,totals" in str(forbidden)
    bad = refusal(answer(422, {"error": "invalid", "problems": [{"field": "k_anonymity", "reason": "too few"}]}), micro)
    assert str(bad) == "analytics refused the request (422): --k-anonymity: too few"
    down = refusal(answer(503, {"error": "unavailable", "reason": "the event log did not answer"}), micro)
    assert "(503)" in str(down) and "nothing was exported" in str(down)
    for error in (wrong, forbidden, bad, down):
        assert "\n" not in str(error)


def test_the_summary_gives_the_risk_figures() -> None:
    export, event = made_export()
    text = summary(manifest(export, event, 3))
    assert "export ex-0123456789abcdef: shfa-2018" in text and "recorded on the log at sequence 3" in text
    assert "as recorded 2 sample uniques, smallest class 1" in text and "requested by analyst" in text


def engage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "80", **env},
        timeout=60,
    )


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


def test_engage_export_finds_analytics_and_the_analyst_token_in_the_data_dir_or_says_why_not(tmp_path: Path) -> None:
    """No tokens file: the line names it; analytics not answering: the line names its URL; a bad option:
    the line names the option. Nothing is written in any case."""
    data, out = tmp_path / "up", tmp_path / "out"
    data.mkdir()
    line = one_line_error(engage("export", "--out", str(out), "--data-dir", str(data)))
    assert f"{data / 'tokens.json'}: no token named 'analyst'" in line
    (data / "tokens.json").write_text(orjson.dumps({"analyst": TOKENS["analyst"].model_dump()}).decode())
    port = free_port()
    line = one_line_error(engage("export", "--out", str(out), "--data-dir", str(data), ENGAGE_ANALYTICS_PORT=str(port)))
    assert f"analytics is not reachable at http://127.0.0.1:{port}" in line and "is `engage up` running?" in line
    line = one_line_error(engage("export", "--out", str(out), "--k-anonymity", "1", "--data-dir", str(data)))
    assert line == "error: --k-anonymity: 1 is not from 2 to 100"
    assert not out.exists()
