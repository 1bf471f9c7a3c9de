"""Exports (POST /exports and `engage export`) and `engage replay` against real servers: the export's
rows add up to the analyst's /coverage, and replay windows give exactly the events they should."""

from __future__ import annotations

import asyncio
import csv
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pyarrow.parquet as pq
import pytest

from services.analytics.app import build_app
from services.analytics.export.run import unpack
from services.analytics.export.tables import write_files
from services.analytics.reading.replay import replay
from shared.bus import attach_streams, make_broker, publish_event
from shared.events import (
    AdvisoryFeedbackLogged,
    AdvisoryMemberJoined,
    Attendee,
    Envelope,
    FeedbackTopic,
    InterviewCompleted,
    InterviewFormat,
    InterviewScheduled,
)
from shared.profile import Profile
from shared.settings import Settings
from tests import factories as f
from tests.conftest import TOKENS
from tests.polling import eventually
from tests.servers import serving

pytestmark = pytest.mark.integration

START = datetime(2018, 2, 1, 15, 0, tzinfo=UTC)
CLI = [sys.executable, "-m", "services.cli.main"]


def at(ev: Envelope, hours: float) -> Envelope:
    return ev.model_copy(update={"occurred_at": START + timedelta(hours=hours)})


def intake(payload: object) -> Envelope:
    return Envelope.wrap(payload, process_id="shfa-2018", source="intake")


def outreach(rng: random.Random) -> tuple[list[Envelope], str]:
    """Surveys, interviews (some returning, some small groups), a gathering, advisory work and a withdrawal."""
    events = [f.survey(f.random_profile(rng)) for _ in range(200)]
    people = [f.ref() for _ in range(45)]
    for person in people:
        iv = f.agg("iv")
        events.append(
            intake(
                InterviewScheduled(
                    interview_id=iv, format=InterviewFormat.in_person, scheduled_for=START, region=rng.choice(f.REGIONS)
                )
            )
        )
        events.append(
            intake(
                InterviewCompleted(
                    interview_id=iv,
                    format=InterviewFormat.in_person,
                    participants=[Attendee(participant_ref=person, profile=f.random_profile(rng))],
                )
            )
        )
    for person in people[:15]:  # returning: a second interview that answers more
        events.append(
            f.interview(
                person,
                lived_experience=rng.choice(["yes", "no"]),
                race_ethnicity=rng.sample(["black", "indigenous", "latinx"], 2),
            )
        )
    for _ in range(8):
        group = rng.sample(people[10:], 2) + [f.ref() for _ in range(rng.randint(1, 3))]
        events.append(
            intake(
                InterviewCompleted(
                    interview_id=f.agg("iv"),
                    format=InterviewFormat.small_group,
                    participants=[Attendee(participant_ref=p, profile=f.random_profile(rng)) for p in group],
                )
            )
        )
    events.append(f.gathering(14, [f.random_profile(rng) for _ in range(6)]))
    members = [f.ref() for _ in range(5)]
    events += [
        intake(
            AdvisoryMemberJoined(
                participant_ref=m,
                profile=Profile(
                    lived_experience="yes", professional_roles=[rng.choice(["police", "advocate", "judge"])]
                ),
            )
        )
        for m in members
    ]
    events.append(
        intake(
            AdvisoryFeedbackLogged(feedback_id=f.agg("fb"), topic=FeedbackTopic.outreach_gaps, member_refs=members[:3])
        )
    )
    rng.shuffle(events)
    leaving = people[0]  # interviewed twice (returning), then withdraws
    events.append(f.withdrawn(leaving))
    return [at(ev, i) for i, ev in enumerate(events)], leaving


def counted_from(rows: list[dict]) -> dict:
    """What /coverage says, computed from engagement rows alone (empty cells as None)."""
    profile = {r["participant"]: r for r in rows}

    def categories(dim: str) -> Counter:
        return Counter(c for r in profile.values() if r[dim] not in (None, "declined") for c in r[dim].split(";"))

    race = [r["race_ethnicity"].split(";") for r in profile.values() if r["race_ethnicity"] not in (None, "declined")]
    return {
        "participants": len(profile),
        "engagements": len(rows),
        "channels": dict(Counter(r["channel"] for r in rows)),
        "region": dict(categories("region")),
        "lived_experience": dict(categories("lived_experience")),
        "race_ethnicity": dict(categories("race_ethnicity")),
        "mandated_group": dict(categories("mandated_group")),
        "race_alone": dict(Counter(r[0] for r in race if len(r) == 1)),
        "region_declined": sum(r["region"] == "declined" for r in profile.values()),
    }


def counted_by_coverage(body: dict) -> dict:
    def counts(dim: str, key: str = "count") -> dict:
        d = next(d for d in body["dimensions"] if d["dimension"] == dim)
        return {c["category"]: c[key] for c in d["categories"] if c[key]}

    region = next(d for d in body["dimensions"] if d["dimension"] == "region")
    return {
        "participants": body["participants"],
        "engagements": body["engagements"],
        "channels": body["engagements_by_channel"],
        "region": counts("region"),
        "lived_experience": counts("lived_experience"),
        "race_ethnicity": counts("race_ethnicity"),
        "mandated_group": counts("mandated_group"),
        "race_alone": counts("race_ethnicity", "alone"),
        "region_declined": region["declined"],
    }


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: (v if v != "" else None) for k, v in row.items()} for row in csv.DictReader(fh)]


def coverage_of(body: dict) -> list[tuple]:
    return [
        (
            d["dimension"],
            c["category"],
            c["label"],
            c["count"],
            c["alone"],
            c["share"],
            *(c["interval"] or (None, None)),
            c["ratio"],
            c["status"],
            c["needed"],
            (c["target"] or {}).get("kind"),
            (c["target"] or {}).get("vintage"),
        )
        for d in body["dimensions"]
        for c in d["categories"]
    ]


def coverage_from_table(rows: list[dict]) -> list[tuple]:
    def num(value, kind=float):
        return None if value is None else kind(value)

    return [
        (
            r["dimension"],
            r["category"],
            r["label"],
            num(r["count"], int),
            num(r["alone"], int),
            num(r["share"]),
            num(r["interval_low"]),
            num(r["interval_high"]),
            num(r["ratio"]),
            r["status"],
            num(r["needed"], int),
            r["target_kind"],
            r["target_vintage"],
        )
        for r in rows
    ]


async def test_an_export_adds_up_to_the_analysts_coverage(
    make_settings: Callable[..., Settings], auth_headers, tmp_path: Path
) -> None:
    """Participants, engagements per channel and category counts computed from the exported rows (CSV and
    Parquet, from the function and from the command) equal /coverage's; so does the coverage table."""
    settings = make_settings()
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    events, leaving = outreach(random.Random(2018))
    for ev in events:
        last, _ = await publish_event(broker, ev, settings)
    await broker.stop()

    app = build_app(settings)
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:

        async def coverage() -> dict:
            return (await client.get("/coverage", headers=auth_headers("analyst"))).json()

        body = await eventually(
            coverage,
            lambda body: body["as_of"]["sequence"] == last,
            what=f"the projection to reach {last}",
            timeout=30,
        )
        answer = await client.post(
            "/exports", json={"formats": ["csv", "parquet"]}, headers=auth_headers("analyst"), timeout=120
        )
        assert answer.status_code == 200, answer.text
        made = orjson.loads(unpack(answer.content)["manifest.json"])
        write_files(tmp_path / "py", unpack(answer.content))
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}, "ENGAGE_LOG_FORMAT": "json"}
        cli = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "export", "--out", str(tmp_path / "cli"), "--url", url],
            capture_output=True,
            text=True,
            env={**env, "ENGAGE_TOKEN": TOKENS["analyst"].token},
            timeout=120,
        )
    assert cli.returncode == 0, cli.stderr
    # The first export's record is on the log now (and counts no one): the second reflects one more event.
    reflects = {"py": last, "cli": last + 1}
    assert f"up to sequence {reflects['cli']}" in cli.stderr and "Traceback" not in cli.stderr

    at_last = max(ev.occurred_at for ev in events).isoformat()
    expected = counted_by_coverage(body)
    assert made["reflects_sequence"] == last and made["participants"] == body["participants"]
    assert expected["participants"] > 250 and expected["race_alone"] and expected["mandated_group"]
    outputs = {}
    for where in ("py", "cli"):
        from_csv = read_csv(tmp_path / where / "engagements.csv")
        from_parquet = pq.read_table(tmp_path / where / "engagements.parquet").to_pylist()
        assert counted_from(from_csv) == counted_from(from_parquet) == expected
        outputs[where] = {r["participant"] for r in from_csv}
        table = read_csv(tmp_path / where / "coverage.csv")
        assert (
            coverage_from_table(table)
            == coverage_from_table(pq.read_table(tmp_path / where / "coverage.parquet").to_pylist())
            == coverage_of(body)
        )
        totals = {
            (r["measure"], r["channel"]): int(r["count"])
            for r in read_csv(tmp_path / where / "totals.csv")
            if r["dimension"] is None
        }
        assert totals[("participants", None)] == body["participants"]
        assert totals[("engagements", "survey")] == body["engagements_by_channel"]["survey"]
        about = orjson.loads((tmp_path / where / "data_dictionary.json").read_bytes())
        assert about["stream_sequence"] == reflects[where] and body["as_of"]["sequence"] == last
        # An export's record is no outreach: the events span as it did before anything was exported.
        assert (about["first_event"], about["last_event"]) == (events[0].occurred_at.isoformat(), at_last)
    assert not outputs["py"] & outputs["cli"], "each export has its own pseudonyms"
    for where in ("py", "cli"):  # the per-participant table agrees with the engagement rows
        people = read_csv(tmp_path / where / "participants.csv")
        engaged = Counter(r["participant"] for r in read_csv(tmp_path / where / "engagements.csv"))
        assert {r["participant"]: int(r["engagements"]) for r in people} == dict(engaged)
    gone = {
        seq
        for seq, ev in enumerate(events, 1)
        if isinstance(ev.payload, InterviewCompleted)
        and leaving in {a.participant_ref for a in ev.payload.participants}
        and len(ev.payload.participants) == 1
    }
    assert len(gone) == 2 and not gone & {int(r["sequence"]) for r in read_csv(tmp_path / "py" / "engagements.csv")}
    leftovers = [p.name for p in (tmp_path / "py").iterdir() if p.name.startswith(".")]
    assert not leftovers


async def test_replay_windows_give_exactly_their_events(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """--from-seq/--to-seq and --since/--until select exactly the expected sequences, an unreadable event
    is reported and skipped, and the Python replay() iterator yields the same events."""
    settings = make_settings()
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    js = await attach_streams(broker.connection, settings)
    published: dict[int, Envelope] = {}
    for i in range(30):
        if i == 7:
            await js.publish(
                "engagement.shfa-2018.survey-response.sr-unreadable",
                b'{"type": "SurveyCompleted"}',
                stream=settings.stream_name,
            )
            continue
        ev = at(f.survey(f.random_profile(random.Random(i))) if i % 3 else f.interview(region="central"), 10 * i)
        seq, _ = await publish_event(broker, ev, settings)
        published[seq] = ev
    await broker.stop()
    bad = 8  # the unreadable message's sequence

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}, "ENGAGE_NATS_URL": settings.nats_url}

    async def engage_replay(*options: str) -> tuple[list[dict], str]:
        out = tmp_path / f"replay-{len(list(tmp_path.iterdir()))}.jsonl"
        done = await asyncio.to_thread(
            subprocess.run,
            [*CLI, "replay", "--out", str(out), *options],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return [orjson.loads(line) for line in out.read_bytes().splitlines()], done.stderr

    lines, report = await engage_replay("--from-seq", "5", "--to-seq", "12")
    assert [line["sequence"] for line in lines] == [s for s in range(5, 13) if s != bad]
    assert [line["event"] for line in lines] == [published[s].model_dump(mode="json") for s in range(5, 13) if s != bad]
    assert f"sequence {bad} on engagement.shfa-2018.survey-response.sr-unreadable" in report
    assert "7 events written, 1 unreadable" in report

    since, until = START + timedelta(hours=100), START + timedelta(hours=200)
    lines, report = await engage_replay("--since", since.isoformat(), "--until", until.isoformat())
    wanted = [s for s, ev in published.items() if since <= ev.occurred_at < until]
    assert [line["sequence"] for line in lines] == wanted and len(wanted) == 10
    assert (await engage_replay("--process", "another-process"))[0] == []
    assert len((await engage_replay("--to-seq", "1000"))[0]) == len(published)

    same = await asyncio.to_thread(lambda: list(replay(settings.nats_url, from_seq=5, to_seq=12)))
    assert [(s, ev) for s, ev in same] == [(s, published[s]) for s in range(5, 13) if s != bad]
    timed = await asyncio.to_thread(lambda: [s for s, _ in replay(settings.nats_url, since=since, until=until)])
    assert timed == wanted

    bad_option = await asyncio.to_thread(
        subprocess.run, [*CLI, "replay", "--since", "last tuesday"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad_option.returncode == 2 and "--since" in bad_option.stderr and "Traceback" not in bad_option.stderr
