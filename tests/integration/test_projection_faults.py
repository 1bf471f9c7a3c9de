"""The projection never stalls silently: faults injected under a live projector, against real servers.

Each fault is either healed (the durable consumer deleted or reset; a second projector
waiting as a hot standby) or stops the projector loudly, not ready with the reason and the
operator command (a message deleted under it; the stream deleted and recreated). In every
case the counts stay exactly right: nothing counted twice, nothing skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import pytest
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from services.analytics.app import build_app
from services.analytics.engine.projector import Projector
from services.analytics.engine.rebuild import rebuild
from services.analytics.store import reads, schema
from shared.bus import apply_streams, ensure_streams, make_broker, publish_event, stream_configs
from shared.settings import Settings
from tests import factories as f
from tests.polling import eventually
from tests.projecting import project_until

pytestmark = [pytest.mark.integration, pytest.mark.fault]
PROCESS = "shfa-2018"


@dataclasses.dataclass
class Rig:
    settings: Settings
    broker: NatsBroker
    js: JetStreamContext
    pool: asyncpg.Pool

    def projector(self, pool: asyncpg.Pool | None = None) -> Projector:
        projector = Projector(self.settings, self.broker.connection, pool or self.pool)
        projector.WATCH_EVERY, projector.STALL_AFTER, projector.LOCK_POLL, projector.RECHECK_EVERY = 0.2, 1.5, 0.2, 0.2
        return projector

    async def publish(self, n: int) -> int:
        last = 0
        for _ in range(n):
            last, _ = await publish_event(self.broker, f.survey(region="northeast"), self.settings)
        return last

    async def checkpoint(self) -> int:
        return await reads.checkpoint(self.pool, self.settings.consumer_name)

    async def counted(self) -> tuple[int, int, int]:
        """(sequence reached, participants, northeast): what the read models say."""
        c = await reads.counts(self.pool, PROCESS, self.settings.consumer_name, None)
        return c.sequence, c.participants, c.categories.get(("region", "northeast"), 0)


@pytest.fixture
async def rig(make_settings: Callable[..., Settings]) -> AsyncIterator[Rig]:
    """The servers, with the event log as an old deployment may have it: messages can be deleted."""
    settings = make_settings(batch_size=10)
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    js = broker.connection.jetstream()
    log_config = next(c for c in stream_configs(settings) if c.name == settings.stream_name)
    await js.add_stream(dataclasses.replace(log_config, deny_delete=False, deny_purge=False))
    for config in stream_configs(settings):  # a service would refuse this log: the projector is run directly
        if config.name != settings.stream_name:
            await js.add_stream(config)
    pool = await schema.open_pool(settings.database_url or "")
    await schema.migrate(pool)
    yield Rig(settings, broker, js, pool)
    await pool.close()
    await broker.stop()


def faults(kind: str) -> float:
    return REGISTRY.get_sample_value("engage_projector_faults_total", {"fault": kind}) or 0.0


async def reaches(rig: Rig, sequence: int) -> None:
    await eventually(rig.checkpoint, lambda seq: seq >= sequence, what=f"the checkpoint at {sequence}", timeout=20)


@pytest.fixture
async def another_pool(rig: Rig) -> AsyncIterator[Callable[[], Awaitable[asyncpg.Pool]]]:
    """More pools on the same database, as another analytics instance has."""
    pools: list[asyncpg.Pool] = []

    async def make() -> asyncpg.Pool:
        pools.append(await schema.open_pool(rig.settings.database_url or ""))
        return pools[-1]

    yield make
    for pool in pools:
        await pool.close()


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Projector], asyncio.Task[None]]]:
    """Start projectors; each is cancelled at the end of the test (before the pools they use are closed)."""
    tasks: list[tuple[Projector, asyncio.Task[None]]] = []

    def start(projector: Projector) -> asyncio.Task[None]:
        tasks.append((projector, asyncio.create_task(projector.run())))
        return tasks[-1][1]

    yield start
    for projector, task in tasks:
        assert await projector.stop(task), "a projector did not stop when cancelled"


async def test_a_message_deleted_under_the_projector_stops_it_loudly_until_a_rebuild(rig: Rig) -> None:
    """Not ready, naming the sequence and `engage rebuild`; nothing past the hole is counted until the rebuild."""
    await rig.publish(20)
    await project_until(rig.projector(), 20)
    last = await rig.publish(10)
    assert await rig.js.delete_msg(rig.settings.stream_name, 26)  # not yet counted: the projector needs it next
    await apply_streams(rig.js, rig.settings)  # the operator's `engage streams`: no more deletes, the hole stays
    before = faults("gap")
    app = build_app(rig.settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
            ready = await eventually(
                lambda: client.get("/health/ready"),
                lambda r: r.json()["projection"]["state"] == "stalled",
                what="the projection to stop at the hole",
            )
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "not_ready"
            assert body["checks"] == {"nats": True, "database": True, "projection": False}
            assert body["projection"]["reason"] == (
                "events missing from the log at sequence 26; rebuild from the log: `engage rebuild`"
            )
            assert body["projection"]["behind"] == last - 25
            assert (await client.get("/health")).status_code == 503  # the shared /health says so too
            assert (await client.get("/health/live")).status_code == 200  # the process itself is fine
            assert faults("gap") == before + 1
            await asyncio.sleep(1.0)  # and it stays stopped, counted up to the event before the hole, exactly
            assert await rig.counted() == (25, 25, 25)

            await rebuild(rig.settings)  # the operator's command: the read models agree with what the log holds
            await reaches(rig, last)
            await eventually(
                lambda: client.get("/health/ready"), lambda r: r.status_code == 200, what="readiness once rebuilt"
            )
            assert await rig.counted() == (last, last - 1, last - 1)
            more = await rig.publish(3)
            await reaches(rig, more)
            assert await rig.counted() == (more, more - 1, more - 1)


async def test_the_durable_consumer_deleted_is_recreated_and_counting_goes_on(rig: Rig, running) -> None:
    """The pull response says the consumer is gone: recreated from checkpoint+1, nothing lost or doubled."""
    projector = rig.projector()
    running(projector)
    await reaches(rig, await rig.publish(10))
    before = faults("consumer_lost")
    await rig.js.delete_consumer(rig.settings.stream_name, rig.settings.consumer_name)
    last = await rig.publish(15)
    await reaches(rig, last)
    assert await rig.counted() == (last, 25, 25)
    assert faults("consumer_lost") >= before + 1
    assert projector.readiness().ready and projector.progress.projected == 25


async def test_a_consumer_that_delivers_nothing_while_events_wait_is_recreated(rig: Rig, running) -> None:
    """No message arrives while the log holds more than the checkpoint (here: the consumer paused): recreated."""
    projector = rig.projector()
    running(projector)
    await reaches(rig, await rig.publish(10))
    stream, durable = rig.settings.stream_name, rig.settings.consumer_name
    until = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    paused = await rig.broker.connection.request(
        f"$JS.API.CONSUMER.PAUSE.{stream}.{durable}", orjson.dumps({"pause_until": until}), timeout=2
    )
    assert orjson.loads(paused.data)["paused"] is True
    before = faults("consumer_lost")
    last = await rig.publish(5)
    await reaches(rig, last)
    assert await rig.counted() == (last, 15, 15)
    assert faults("consumer_lost") == before + 1
    assert projector.readiness().ready and projector.progress.projected == 15


async def test_the_stream_deleted_and_recreated_stops_the_projector_loudly(rig: Rig, running) -> None:
    """A new, shorter log under the checkpoint is never counted from the old sequence: not ready, naming the command."""
    projector = rig.projector()
    running(projector)
    await reaches(rig, await rig.publish(10))
    before = faults("log_behind")
    await rig.js.delete_stream(rig.settings.stream_name)  # the admin user can
    await ensure_streams(rig.js, rig.settings)
    await rig.publish(3)
    behind = "the log is behind the read models (stream at 3, counted up to 10): `engage rebuild`"
    # (While the stream was gone, or still empty, the reason said so; it follows the log as it is now.)
    now = await eventually(
        lambda: asyncio.sleep(0, projector.readiness()),
        lambda r: r.reason == behind,
        what="the projector to say the log is behind",
    )
    assert not now.ready and now.state == "stalled"
    assert faults("log_behind") >= before + 1
    await asyncio.sleep(1.0)
    assert await rig.counted() == (10, 10, 10)  # nothing of the new log was counted on top of the old


async def test_a_second_projector_waits_as_a_standby_and_takes_over_when_the_first_stops(
    rig: Rig, another_pool, running
) -> None:
    """Two instances on one database: one counts, the other waits on the lock, then counts on from the checkpoint."""
    first = rig.projector()
    first_task = running(first)
    await reaches(rig, await rig.publish(10))
    second = rig.projector(await another_pool())
    running(second)
    await eventually(
        lambda: asyncio.sleep(0, second.readiness().state), lambda s: s == "standby", what="the second to stand by"
    )
    assert not second.readiness().ready and "standby" in (second.readiness().reason or "")
    await reaches(rig, await rig.publish(10))
    await asyncio.sleep(0.5)
    assert second.progress.projected == 0 and second.readiness().state == "standby"

    assert await first.stop(first_task)  # the first dies: its connection goes back, and the lock with it
    await eventually(lambda: asyncio.sleep(0, second.readiness().ready), what="the second to take over", timeout=10)
    last = await rig.publish(10)
    await reaches(rig, last)
    assert await rig.counted() == (30, 30, 30)
    assert (first.progress.projected, second.progress.projected) == (20, 10)
