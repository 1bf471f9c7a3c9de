"""Alerts against real servers: hysteresis on a seeded outreach, and delivery to an SMTP server
(aiosmtpd) and a webhook receiver started here, through failures, restarts and hangs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import nats
import orjson
import pytest
from aiosmtpd.controller import Controller

from services.analytics.alerts.delivery import Deliverer
from services.analytics.app import build_app
from services.analytics.engine import announce
from services.analytics.engine.projector import Projector
from services.analytics.store import reads, schema
from services.cli.demo import feed
from services.intake.app import build_app as intake_app
from services.survey.app import build_app as survey_app
from shared.bus import attach_streams, make_broker, publish_event
from shared.plan import Announce, shipped_plans
from shared.profile import Profile
from shared.settings import Settings
from shared.status_events import Status
from tests import factories as f
from tests.polling import eventually
from tests.projecting import project_until
from tests.servers import serving

pytestmark = pytest.mark.integration


async def publish(settings: Settings, events: list) -> None:
    broker = make_broker(settings.nats_url, settings, "admin")
    await broker.connect()
    await attach_streams(broker.connection, settings)
    for ev in events:
        await publish_event(broker, ev, settings)
    await broker.stop()


async def demo_outreach(settings: Settings) -> int:
    """Feed the demo's synthetic outreach (``engage demo``: advisory group, interviews, gatherings,
    surveys) through real intake and survey apps; returns the log's last sequence."""
    async with serving(intake_app(settings)) as intake, serving(survey_app(settings)) as survey:
        await feed({"intake": intake, "survey": survey}, None, settings, pace=0, seed=2018)
    nc = await nats.connect(settings.nats_url or "")
    try:
        last = (await nc.jetstream().stream_info(settings.stream_name)).state.last_seq
    finally:
        await nc.close()
    return int(last or 0)


# ---- hysteresis on the demo's outreach --------------------------------------------------------


async def count_announcements(
    settings: Settings, plan_rule: Announce, judged: list[tuple[int, tuple[str, str], Status, int]], total: int
) -> tuple[int, list[dict[str, Any]]]:
    plan = shipped_plans()["shfa-2018"]
    plan = plan.model_copy(update={"announce": plan_rule})
    pool = await schema.open_pool(settings.database_url or "")
    await schema.migrate(pool)
    broker = make_broker(settings.nats_url, settings, "analytics")
    await broker.connect()
    projector = Projector(settings, broker.connection, pool, {"shfa-2018": plan})
    projector.JUDGE_EVERY = 0.0  # judge after every batch, as a live outreach trickling in is judged
    await project_until(projector, total)
    await projector.judge()
    events = [orjson.loads(r["event"]) for r in await pool.fetch("SELECT event::text FROM alert_outbox")]
    await broker.stop()
    await pool.close()
    return len(events), events


async def test_hysteresis_announces_fewer_changes_and_each_one_held(
    make_settings: Callable[..., Settings], another_database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's outreach, as `engage demo` sends it, judged every 5 events: fewer announcements
    with the shipped plan's hysteresis than without, and each one announced held by the rule."""
    settings = make_settings(batch_size=5)
    total = await demo_outreach(settings)
    judged: list[tuple[int, tuple[str, str], Status, int]] = []
    decide = announce.decide

    def watching(now, before, pending, rule, sequence):  # type: ignore[no-untyped-def]  # the same as decide
        judged.extend((sequence, key, status, base) for key, (status, base) in now.items())
        return decide(now, before, pending, rule, sequence)

    monkeypatch.setattr(announce, "decide", watching)
    without, _ = await count_announcements(settings, Announce(min_participants=0, hold_participants=0), [], total)
    judged.clear()
    rule = shipped_plans()["shfa-2018"].announce
    other = make_settings(batch_size=5, database_url=await another_database())
    with_, events = await count_announcements(other, rule, judged, total)
    print(f"\nannouncements on the demo's {total} events: without hysteresis {without}, with {rule} {with_}")
    assert 0 < with_ < without

    seen: dict[tuple[str, str], list[tuple[int, Status, int]]] = {}
    for sequence, key, status, base in judged:
        seen.setdefault(key, []).append((sequence, status, base))
    for e in events:
        key = (e["dimension"], e["category"])
        history = [h for h in seen[key] if h[0] <= e["sequence"]]
        _, status, base = history[-1]
        assert status == e["status"] and base >= rule.min_participants
        if e["previous"] is None:
            continue  # the baseline: a first judgement, under-reached
        # The new status held at every judgement while the base grew by hold_participants.
        run = [h for h in reversed(history) if h[2] >= rule.min_participants]
        start = next((i for i, h in enumerate(run) if h[1] != status), len(run))
        assert base - run[start - 1][2] >= rule.hold_participants, (e, run[:start])


# ---- delivery -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """A webhook receiver: answers each POST with the next of ``answers`` (then 200), or hangs."""

    def __init__(self, answers: list[int] | None = None, hang: bool = False) -> None:
        self.answers, self.hang = list(answers or []), hang
        self.got: list[tuple[str, dict[str, Any]]] = []  # (Idempotency-Key, body) of every accepted POST
        self.tried = 0
        self.port = free_port()
        self.hold: asyncio.Event | None = None  # set: the next accepted POST waits for it before answering
        self.closing = asyncio.Event()  # ends every wait when the receiver stops

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            self.closing.set()
            await asyncio.sleep(0.2)  # the waiting handlers answer and close
            server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/T0/B0/SECRETPART"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.tried += 1
            if self.hang:
                await self.closing.wait()
            status = self.answers.pop(0) if self.answers else 200
            if status == 200:
                self.got.append((headers.get("idempotency-key", ""), orjson.loads(body)))
                if self.hold is not None:
                    self.hold = None
                    await self.closing.wait()
            writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class Mailbox:
    """aiosmtpd's handler: refuses the first ``refuse`` messages (451), keeps the rest."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse, self.got = refuse, []

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]  # noqa: N802 - aiosmtpd's hook, named by aiosmtpd
        if self.refuse:
            self.refuse -= 1
            return "451 try again later"
        self.got.append(envelope.content.decode())
        return "250 OK"


PLAN = """
process_id = "test-alerts"
name = "Test alerts"
announce = { min_participants = 10, hold_participants = 0 }

[dimensions.region]
label = "Region"
multi_select = false
[dimensions.region.categories.northeast]
label = "Northeast"
target = { share = 0.5, kind = "goal", source = "test goal" }
[dimensions.region.categories.southwest]
label = "Southwest"
target = { share = 0.3, kind = "goal", source = "test goal" }
[dimensions.region.categories.central]
label = "Central"
"""


def people(region: str, n: int) -> list:
    return [f.survey(Profile(region=region), process_id="test-alerts") for _ in range(n)]


@contextlib.asynccontextmanager
async def analytics(settings: Settings) -> AsyncIterator[None]:
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        yield


async def outbox(settings: Settings) -> list[str]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return [r[0] for r in await conn.fetch("SELECT event_id FROM analytics.alert_outbox ORDER BY 1")]
    finally:
        await conn.close()


async def test_each_alert_reaches_each_destination_once_through_failures_and_restarts(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Deliverer, "BACKOFF_FIRST", 0.2)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    hook = Receiver(answers=[500])
    mailbox = Mailbox(refuse=1)
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        settings = make_settings(
            plans=[plan],
            process_id="test-alerts",
            alert_webhooks=hook.url,
            smtp_url=f"smtp://127.0.0.1:{smtp.port}",
            alert_email_from="engage@example.org",
            alert_email_to="coordinators@example.org",
            public_url="https://engage.example.org",
        )
        # Two under-reached regions at the first judgement: two alerts.
        await publish(settings, people("central", 34) + people("northeast", 4) + people("southwest", 2))
        async with hook.running():
            async with analytics(settings):
                await eventually(lambda: outbox(settings), lambda ids: len(ids) == 2, what="two alerts")
                await eventually(lambda: asyncio.sleep(0, len(hook.got)), lambda n: n == 2, what="two webhooks")
                await eventually(lambda: asyncio.sleep(0, len(mailbox.got)), lambda n: n == 2, what="two e-mails")
                assert hook.tried == 3  # the first was refused (500) and tried again
            # Restarted: nothing is sent again.
            async with analytics(settings):
                await asyncio.sleep(2)
            assert len(hook.got) == 2 and len(mailbox.got) == 2
            before_restart = await outbox(settings)

            # A third alert: the receiver accepts it, and analytics stops before it hears so (restarted
            # between delivery and recording). It is sent again, with the same Idempotency-Key.
            hook.hold = asyncio.Event()
            await publish(settings, people("central", 30))  # southwest and northeast: fall further, and
            await publish(settings, people("southwest", 30))  # southwest recovers: CommunityReached
            async with analytics(settings):
                await eventually(lambda: asyncio.sleep(0, hook.hold), lambda h: h is None, what="a held POST")
            async with analytics(settings):
                ids = await outbox(settings)
                await eventually(
                    lambda: asyncio.sleep(0, len(mailbox.got)), lambda n: n == len(ids), what="every e-mail"
                )
                await eventually(
                    lambda: asyncio.sleep(0, {k for k, _ in hook.got}), lambda keys: keys == set(ids), what="hooks"
                )
                await asyncio.sleep(1)
        keys = Counter(k for k, _ in hook.got)
        print(f"\nalerts {len(ids)}; webhook POSTs accepted {len(hook.got)}; e-mails {len(mailbox.got)}")
        assert len(ids) >= 3
        assert sorted(keys) == ids and sorted(keys.values()) == [1] * (len(ids) - 1) + [2]  # the held one twice
        mails = Counter(m.split("Message-ID: <")[1].split("@")[0] for m in mailbox.got)
        # Each e-mail once, but for one sent while analytics stopped (the same window as the held POST):
        # under load its SMTP exchange can be cut off too, and it is sent again with the same Message-ID.
        assert sorted(mails) == ids and all(mails[first] == 1 for first in before_restart)
        assert all(n <= 2 for n in mails.values())
        assert all("/dashboard/group?group=region:" in body["text"] for _, body in hook.got)
        assert any("Southwest is reached" in body["text"] for _, body in hook.got)
    finally:
        smtp.stop()


async def test_a_hanging_or_down_receiver_does_not_delay_the_projection(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Deliverer, "BACKOFF_FIRST", 0.2)
    monkeypatch.setattr(Deliverer, "SEND_TIMEOUT", 2.0)
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    hanging = Receiver(hang=True)
    down = f"http://127.0.0.1:{free_port()}/hook"
    settings = make_settings(
        plans=[plan], process_id="test-alerts", alert_webhooks=f"{hanging.url},{down}", batch_size=5
    )
    await publish(settings, people("central", 34) + people("northeast", 4) + people("southwest", 2))
    async with hanging.running(), analytics(settings):
        await eventually(lambda: outbox(settings), lambda ids: len(ids) == 2, what="two alerts")
        pool = await schema.open_pool(settings.database_url or "")
        try:
            # Deliveries are failing: one receiver holds its request open, the other refuses to connect.
            await eventually(lambda: asyncio.sleep(0, hanging.tried), lambda n: n >= 1, what="a hanging POST")
            await eventually(
                lambda: pool.fetchval("SELECT count(*) FROM alert_deliveries WHERE attempts >= 2"),
                lambda n: n >= 2,
                what="the down receiver's alerts tried twice",
            )
            await publish(settings, people("central", 200))
            reached = await eventually(
                lambda: reads.checkpoint(pool, settings.consumer_name),
                lambda seq: seq == 240,
                what="the projection to reach the end of the log",
                timeout=10,
            )
            delivered = await pool.fetchval("SELECT count(*) FROM alert_deliveries WHERE delivered_at IS NOT NULL")
        finally:
            await pool.close()
    assert reached == 240 and delivered == 0
