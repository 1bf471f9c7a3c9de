"""`engage report` against a live analytics: the 2018 population published on the log, the report's figures printed.

The 294 participants of the 2018 report's summary (288 who gave a profile, 6 who did not)
are published as survey responses and advisory members; analytics counts them; then the
command, run as a user runs it, fetches its answers over HTTP and prints the table.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from services.analytics.app import build_app
from shared.bus import attach_streams, make_broker, publish_event
from shared.events import AdvisoryMemberJoined, Envelope
from shared.settings import Settings
from tests import factories as f
from tests.conftest import TOKENS
from tests.polling import eventually
from tests.privacy import small_counts_in
from tests.servers import serving
from tests.unit.test_report import population_2018

pytestmark = pytest.mark.integration

K = 5
REGIONS_PROFILED = [
    ("Twin Cities West Metro", 90, "31.3"),
    ("Twin Cities East Metro", 76, "26.4"),
    ("Northeast", 36, "12.5"),
    ("Southwest", 28, "9.7"),
    ("Northwest", 19, "6.6"),
    ("Central", 14, "4.9"),
    ("Southeast", 13, "4.5"),
    ("West Central", 7, "2.4"),
    ("Did not provide a location", 5, "1.7"),  # "just under 2%"
]
# Of the 283 who gave a location, and the 281 who answered the lived experience question.
REGIONS_ANSWERED = ["31.8", "26.9", "12.7", "9.9", "6.7", "4.9", "4.6", "2.5"]


async def engage(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in a clean environment (no ENGAGE_* of this machine), off the event loop that serves."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli.main", "report", *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )


def rows_of(run: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict[str, str]]:
    assert run.returncode == 0, run.stderr
    return {(r["section"], r["item"]): r for r in csv.DictReader(io.StringIO(run.stdout))}


def event_of(profile, channel: str) -> Envelope:
    if channel == "advisory":
        return Envelope.wrap(
            AdvisoryMemberJoined(participant_ref=f.ref(), profile=profile), process_id="shfa-2018", source="intake"
        )
    return f.survey(profile)


async def test_the_report_prints_the_2018_figures_on_both_bases_and_rounded_for_coordinators(
    make_settings: Callable[..., Settings], auth_headers, tmp_path: Path
) -> None:
    settings = make_settings()
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    for profile, channel in population_2018():
        await publish_event(broker, event_of(profile, channel), settings)
    await broker.stop()
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({name: spec.model_dump() for name, spec in TOKENS.items()}))

    app = build_app(settings)
    async with serving(app) as url:
        async with httpx.AsyncClient(base_url=url) as client:

            async def coverage() -> dict:
                return (await client.get("/coverage", headers=auth_headers("analyst"))).json()

            await eventually(coverage, lambda b: b["participants"] == 294, what="294 participants", timeout=30)
        common = ("--url", url, "--tokens-file", str(tokens))
        profiled, answered, coordinator, coordinator_csv, refused = await asyncio.gather(
            engage(*common),
            engage(*common, "--base", "answered", "--format", "csv"),
            engage(*common, "--scope", "coordinator"),
            engage(*common, "--scope", "coordinator", "--format", "csv"),
            engage(*common, "--scope", "coordinator", "--as-of", datetime.now(UTC).isoformat()),
        )
        as_of = await engage(*common, "--as-of", datetime.now(UTC).isoformat(), "--format", "html")

    # The report's bases: shares of the 288 who gave a profile.
    assert profiled.returncode == 0, profiled.stderr
    text = profiled.stdout
    assert "| Participants | 294 |" in text and "| Gave a profile | 288 |" in text
    for label, people, share in REGIONS_PROFILED:
        assert f"| {label} | {people} | {share}% |" in text
    assert "| People with lived experience | 111 | 38.5% |" in text
    assert "| Did not identify any lived experience | 177 | 61.5% |" in text
    assert "| White/European American | 55 | 49.5% |" in text and "| Identified only as white | 42 | 37.8% |" in text
    assert "| Transgender or gender non-binary | 10 | 9% |" in text  # people who chose either, not 7 + 5
    assert "| “prostitute” | 21 | 19% |" in text and "| “survivor of trafficking” | 50 | 45% |" in text
    assert "Exact numbers (analyst view)." in text

    # Shares of those who answered each question.
    rows = rows_of(answered)
    for (label, people, _), share in zip(REGIONS_PROFILED, REGIONS_ANSWERED, strict=False):
        assert (rows[("Region", label)]["people"], rows[("Region", label)]["percent"]) == (str(people), share)
    assert rows[("Region", "Did not provide a location")]["percent"] == ""  # outside that base
    lived = rows[("Lived experience in transactional sex", "People with lived experience")]
    assert (lived["people"], lived["percent"], lived["of_people"]) == ("111", "39.5", "281")
    assert rows[("Gender of people with lived experience", "Female")]["percent"] == "95"

    # Coordinators: rounded to multiples of k, said so, and no count from 1 to k-1.
    assert coordinator.returncode == 0, coordinator.stderr
    assert f"Numbers rounded to multiples of {K} (coordinator view, base k = {K})" in coordinator.stdout
    people = [r["people"] for r in rows_of(coordinator_csv).values()]
    counted = [int(p) for p in people if p.isdigit()]
    assert small_counts_in({"rows": [{"count": n} for n in counted]}, K) == []
    assert all(n % K == 0 for n in counted) and set(people) - {str(n) for n in counted} <= {f"<{K}", "—"}
    assert f"<{K}" in people  # the zero and small rows
    assert {r["rounded_to"] for r in rows_of(coordinator_csv).values()} == {str(K)}

    # As of a moment: analysts only, and said plainly.
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().startswith("error: --as-of ")
    assert "needs the analyst token" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert as_of.returncode == 0, as_of.stderr
    page = as_of.stdout
    assert page.startswith("<!doctype html>") and "withdrawals always apply" in page
    assert '<th scope="row">Twin Cities West Metro</th><td>90</td><td>31.3%</td>' in page
    assert '<th scope="row">Did not identify any lived experience</th><td>177</td><td>61.5%</td>' in page
