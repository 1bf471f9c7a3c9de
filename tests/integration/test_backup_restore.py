"""`engage backup` and `engage restore` against real servers: the restore drill.

A log written through the real publish path is backed up, everything is wiped (a new
nats-server with an empty data folder, a new database), the backup is restored, and every
message (sequence, subject, headers, data), every read-model table and the analysts' and
coordinators' answers (live and as of a past moment) come back equal.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from bench.catchup import workload
from services.analytics.app import build_app
from services.cli import backup as backing
from services.cli import backup_file
from services.cli.embedded import EmbeddedNats
from services.intake.app import build_app as build_intake
from shared.bus import attach_streams, make_broker, publish_event
from shared.errors import EngageError
from shared.events import Envelope
from shared.settings import Settings
from tests import factories as f
from tests.polling import eventually

pytestmark = pytest.mark.integration

NAME, PHONE, EMAIL = "Jane Q. Example", "+1 612 555 0142", "jane@example.org"
SECRETS = (NAME, PHONE, EMAIL, "6125550142", "612 555 0142", "Jane", "jane@")
TABLES = {
    "checkpoint": "consumer, stream_seq",
    "participants": "process_id, participant, profile, channels, days, first_channel, withdrawn, first_seen, last_seen",
    "category_counts": "process_id, dimension, category, participants",
    "engagement_counts": "process_id, channel, engagements",
    "totals": "process_id, participants, engagements, first_event, last_event",
    "daily_counts": "process_id, day, channel, engagements, participants",
    "activity": "process_id, sequence, kind, channel, region, topic, occurred_at, recorded_at",
    "interview_regions": "process_id, interview_id, region",
}


async def publish_all(settings: Settings, events: list[Envelope]) -> None:
    """Through the services' own publish path (Nats-Msg-Id, PubAck), 100 at a time."""
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    for i in range(0, len(events), 100):
        await asyncio.gather(*(publish_event(broker, ev, settings) for ev in events[i : i + 100]))
    await broker.stop()


async def stored(url: str, stream: str = "ENGAGEMENT") -> list[tuple[int, str, dict[str, str], bytes]]:
    """Every message of the log: sequence, subject, headers, data."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            out.append((msg.seq or 0, msg.subject, dict(msg.headers or {}), msg.data or b""))
        return out
    finally:
        await nc.close()


async def dump(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    import asyncpg

    conn = await asyncpg.connect(dsn, server_settings={"search_path": "analytics"})
    try:
        return {
            table: [tuple(r) for r in await conn.fetch(f"SELECT {cols} FROM {table} ORDER BY {cols}")]
            for table, cols in TABLES.items()
        }
    finally:
        await conn.close()


def timeless(body: dict[str, Any]) -> dict[str, Any]:
    """An answer without the moments it was made at (when projected, when answered)."""
    as_of = {k: v for k, v in body["as_of"].items() if k not in ("projected_at", "answered_at")}
    return {**body, "as_of": as_of}


async def answers(
    settings: Settings, last: int, moment: str, auth_headers: Callable[[str], dict[str, str]]
) -> dict[str, Any]:
    """Analytics' answers once it has counted up to ``last``: analyst, coordinator, and as of a past moment."""
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:

            async def get(who: str, **params: str) -> dict[str, Any]:
                r = await client.get("/coverage", params=params, headers=auth_headers(who))
                assert r.status_code == 200, r.text
                return dict(r.json())

            await eventually(
                lambda: get("analyst"),
                lambda body: body["as_of"]["sequence"] >= last,
                what=f"analytics to count up to {last}",
                timeout=30,
            )
            return {
                "analyst": timeless(await get("analyst")),
                "coordinator": timeless(await get("coordinator")),
                "as_of": timeless(await get("analyst", as_of=moment)),
                "tables": await dump(settings.database_url or ""),
            }


async def test_the_restore_drill_brings_back_every_event_table_and_answer(
    make_settings: Callable[..., Settings],
    another_database: Callable[[], Awaitable[str]],
    auth_headers: Callable[[str], dict[str, str]],
    tmp_path: Path,
) -> None:
    settings = make_settings()
    events = list(workload(3000, seed=12))
    rng = random.Random(12)
    for ev in rng.sample(events, 30):  # retries: the same event id is stored once
        events.append(ev)
    await publish_all(settings, events)
    before = await stored(settings.nats_url or "")
    assert len(before) == 3000
    moment = (f.when(0) - timedelta(hours=12)).isoformat()
    original = await answers(settings, 3000, moment, auth_headers)
    assert original["analyst"]["participants"] > 100 and original["tables"]["participants"]

    key = tmp_path / "backup.key"
    backup_file.write_key_file(key)
    out = tmp_path / "log.backup"
    result = await asyncio.to_thread(backing.run_backup, settings, out, key, settings.nats_url or "")
    assert (result.trailer.messages, result.trailer.first_seq, result.trailer.last_seq) == (3000, 1, 3000)
    # The records are the stored messages, with the time JetStream stored each.
    records = list(backup_file.read_backup(out, backup_file.read_key_file(key)))
    assert [(r.sequence, r.subject, r.headers, r.data) for r in records] == before
    assert all(r.time_ns > 0 for r in records)

    # Wipe: a nats-server with an empty data folder, and an empty database.
    server = EmbeddedNats(tmp_path / "fresh-nats")
    fresh_url = server.start()
    try:
        fresh = make_settings(nats_url=fresh_url, database_url=await another_database())
        restored_count = await asyncio.to_thread(backing.run_restore, fresh, out, key)
        assert restored_count == 3000
        assert await stored(fresh_url) == before  # every sequence, subject, header and byte of data
        restored = await answers(fresh, 3000, moment, auth_headers)
    finally:
        server.stop()
    for table in TABLES:
        assert restored["tables"][table] == original["tables"][table], table
    for view in ("analyst", "coordinator", "as_of"):
        assert restored[view] == original[view], view


async def test_a_backup_made_while_services_write_holds_the_log_up_to_its_start(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    await publish_all(settings, [f.survey(f.random_profile(random.Random(i))) for i in range(500)])
    writing = asyncio.Event()
    stop = asyncio.Event()

    async def keep_writing() -> None:
        broker = make_broker(settings.nats_url or "", settings, "survey")
        await broker.connect()
        while not stop.is_set():
            await publish_event(broker, f.survey(region="central"), settings)
            writing.set()
        await broker.stop()

    writer = asyncio.create_task(keep_writing())
    await writing.wait()
    key, out = tmp_path / "k", tmp_path / "b"
    backup_file.write_key_file(key)
    result = await asyncio.to_thread(backing.run_backup, settings, out, key, settings.nats_url or "")
    await asyncio.sleep(0.2)
    stop.set()
    await writer
    log = await stored(settings.nats_url or "")
    assert result.trailer.first_seq == 1 and 500 < result.trailer.last_seq < len(log)
    records = list(backup_file.read_backup(out, backup_file.read_key_file(key)))
    assert [(r.sequence, r.subject, r.headers, r.data) for r in records] == log[: result.trailer.last_seq]


def engage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True,
        text=True,
        env={**clean, "COLUMNS": "300", **env},
        timeout=120,
    )


async def test_a_backup_holds_no_contact_detail_given_to_intake(
    make_settings: Callable[..., Settings],
    database_url: str,
    auth_headers: Callable[[str], dict[str, str]],
    tmp_path: Path,
) -> None:
    """A contact saved through intake is in intake's table, and nowhere in the decrypted backup."""
    settings = make_settings()
    app = build_intake(settings)
    soon = (f.when(0) + timedelta(days=2)).isoformat()
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://intake", headers=auth_headers("intake")
        ) as client:
            contact = {"name": NAME, "phone": PHONE, "email": EMAIL}
            r = await client.post("/interviews", json={"format": "phone", "scheduled_for": soon, "contact": contact})
            assert r.status_code == 201, r.text
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM intake.contacts WHERE name = $1", NAME) == 1
    finally:
        await conn.close()
    key, out = tmp_path / "k", tmp_path / "b"
    env = {"ENGAGE_NATS_URL": settings.nats_url or "", "ENGAGE_BACKUP_KEY_FILE": str(key)}
    assert engage("backup-key", "--out", str(key), env=env).returncode == 0
    done = await asyncio.to_thread(engage, "backup", "--out", str(out), env=env)  # the key from the envvar
    assert done.returncode == 0, done.stderr
    assert "backed up 1 events" in done.stderr and "sequences 1-1" in done.stderr
    records = list(backup_file.read_backup(out, backup_file.read_key_file(key)))
    assert [r.subject.split(".")[2] for r in records] == ["interview"]
    plaintext = b"".join(r.subject.encode() + repr(r.headers).encode() + r.data for r in records)
    for secret in SECRETS:
        assert secret.encode() not in plaintext
    assert b"InterviewScheduled" in plaintext  # the event is there, its contact is not


async def test_a_restore_into_a_log_that_holds_events_is_refused_and_writes_nothing(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> None:
    settings = make_settings()
    await publish_all(settings, [f.survey(region="central") for _ in range(5)])
    key, out = tmp_path / "k", tmp_path / "b"
    backup_file.write_key_file(key)
    await asyncio.to_thread(backing.run_backup, settings, out, key, settings.nats_url or "")
    await publish_all(settings, [f.survey(region="northeast") for _ in range(2)])
    before = await stored(settings.nats_url or "")
    env = {"ENGAGE_NATS_URL": settings.nats_url or "", "ENGAGE_DATABASE_URL": database_url}
    done = await asyncio.to_thread(engage, "restore", str(out), "--key-file", str(key), env=env)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds 7 events" in errors[0] and "nothing was written" in errors[0]
    assert "Traceback" not in done.stderr
    assert await stored(settings.nats_url or "") == before
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:  # no read model was made or touched either
        assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'analytics%'") == 0
    finally:
        await conn.close()
    with pytest.raises(EngageError, match="already holds"):
        await asyncio.to_thread(backing.run_restore, settings, out, key, rebuild=False)
    assert await stored(settings.nats_url or "") == before
