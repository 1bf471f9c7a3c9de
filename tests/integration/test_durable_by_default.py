"""Durable by default: an acknowledged event is on disk, the log only grows, and services
never change how a stream keeps its events.

- the embedded nats-server (``engage up``, these tests) fsyncs every write before its PubAck;
- the streams refuse a message delete and a purge, and a full stream refuses a new write
  instead of dropping its oldest events;
- attaching to an existing stream never changes it (a difference is reported; a stream that
  would lose stored events is refused, naming the operator's command);
- the analytics pool's connections commit synchronously.
"""

from __future__ import annotations

import dataclasses
import json
import random
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, StreamConfig
from nats.js.errors import ServerError

from services.analytics.store import schema
from services.cli.embedded import EmbeddedNats, free_port
from shared.bus import apply_streams, attach_streams, ensure_streams, make_broker, publish_event, stream_configs
from shared.errors import ConfigError, PublishError
from shared.settings import Settings
from tests import factories as f

pytestmark = [pytest.mark.integration, pytest.mark.fault]


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


def test_the_embedded_nats_server_fsyncs_every_write(tmp_path: Path) -> None:
    monitor = free_port()
    server = EmbeddedNats(tmp_path / "nats", monitor_port=monitor)  # as `engage up` makes it
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as answer:
            varz = json.load(answer)
    finally:
        server.stop()
    assert varz["jetstream"]["config"]["sync_always"] is True  # what the running server does
    assert "sync_interval: always" in server.config_file.read_text()  # what it was started with


async def test_the_event_log_refuses_a_delete_and_a_purge(nc: Client, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    js = nc.jetstream()
    await ensure_streams(js, settings)
    event = f.survey(f.random_profile(random.Random(1)))
    await js.publish(event.subject, event.model_dump_json().encode(), stream=settings.stream_name)
    with pytest.raises(ServerError, match="message delete not permitted"):
        await js.delete_msg(settings.stream_name, 1)
    with pytest.raises(ServerError, match="stream purge not permitted"):
        await js.purge_stream(settings.stream_name)
    assert (await js.stream_info(settings.stream_name)).state.messages == 1


async def test_a_full_stream_refuses_a_write_and_keeps_its_oldest_events(
    nc: Client, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    js = nc.jetstream()
    tiny = dataclasses.replace(stream_configs(settings)[0], max_msgs=3)  # engage's log, but with room for three
    await js.add_stream(tiny)
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    try:
        stored = [
            (await publish_event(broker, f.survey(f.random_profile(random.Random(i))), settings))[0] for i in range(3)
        ]
        with pytest.raises(PublishError, match=r"could not store the event.*nothing was stored"):
            await publish_event(broker, f.survey(f.random_profile(random.Random(4))), settings)
    finally:
        await broker.stop()
    state = (await js.stream_info(settings.stream_name)).state
    assert stored == [1, 2, 3]
    assert (state.first_seq, state.last_seq, state.messages) == (1, 3, 3)


async def test_a_service_refuses_a_stream_configured_otherwise_and_never_changes_it(
    nc: Client, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(stream_replicas=1)
    js = nc.jetstream()
    # As streams were created before engage was durable by default, with a shorter dedupe window.
    old = StreamConfig(
        name=settings.stream_name, subjects=["engagement.>"], discard=DiscardPolicy.OLD, duplicate_window=60.0
    )
    await js.add_stream(old)
    with pytest.raises(ConfigError) as refused:
        await attach_streams(nc, settings)
    reason = str(refused.value)
    for difference in (
        "discard: the stream has old, engage expects new",
        "deny_delete: the stream has False, engage expects True",
        "deny_purge: the stream has False, engage expects True",
        "allow_direct: the stream has False, engage expects True",
        "duplicate_window: the stream has 60.0, engage expects 86400.0",
    ):
        assert difference in reason
    assert "`engage streams`" in reason
    kept = (await js.stream_info(settings.stream_name)).config
    assert (kept.discard, kept.deny_delete, kept.deny_purge, kept.duplicate_window) == (
        DiscardPolicy.OLD,
        False,
        False,
        60.0,
    )


async def test_a_service_refuses_fewer_replicas_than_its_setting_and_accepts_more(
    nc: Client, make_settings: Callable[..., Settings]
) -> None:
    js = nc.jetstream()
    await ensure_streams(js, make_settings(stream_replicas=1))  # a single server holds R1 only
    with pytest.raises(ConfigError, match=r"num_replicas: the stream has 1, engage expects 3"):
        await attach_streams(nc, make_settings(stream_replicas=3))
    await attach_streams(nc, make_settings(stream_replicas=1))  # as configured: accepted


async def test_engage_streams_brings_an_old_stream_to_engages_configuration(
    nc: Client, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=settings.stream_name, subjects=["engagement.>"], duplicate_window=60.0))
    done = await apply_streams(js, settings)
    assert (
        done[0] == f"{settings.stream_name}: changed deny_delete, deny_purge, allow_direct, duplicate_window, discard"
    )
    assert [line.split(": ", 1)[1] for line in done[1:]] == ["created with 1 replica(s)"] * 2
    await attach_streams(nc, settings)  # now a service accepts it
    assert await apply_streams(js, settings) == [
        f"{c.name}: already as engage expects" for c in stream_configs(settings)
    ]


async def test_attaching_refuses_a_stream_that_drops_its_oldest_events(
    nc: Client, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    js = nc.jetstream()
    dropping = StreamConfig(
        name=settings.stream_name, subjects=["engagement.>"], discard=DiscardPolicy.OLD, max_age=3600
    )
    await js.add_stream(dropping)
    with pytest.raises(ConfigError, match=rf"can lose stored events.*`nats stream edit {settings.stream_name}"):
        await attach_streams(nc, settings)
    kept = (await js.stream_info(settings.stream_name)).config
    assert (kept.discard, kept.max_age) == (DiscardPolicy.OLD, 3600)


async def test_the_analytics_pool_commits_synchronously(database_url: str) -> None:
    admin = await asyncpg.connect(database_url)
    try:  # a database whose default would let a commit return before it is on disk
        name = await admin.fetchval("SELECT current_database()")
        await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await admin.close()
    pool = await schema.open_pool(database_url, max_size=2)
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            assert [await c.fetchval("SHOW synchronous_commit") for c in (first, second)] == ["on", "on"]
    finally:
        await pool.close()


class _Connection:
    """A connection that went through a pooler which dropped the start-up settings."""

    async def fetchval(self, _query: str) -> str:
        return "off"


async def test_a_connection_without_synchronous_commit_is_refused() -> None:
    with pytest.raises(ConfigError, match="synchronous_commit=off"):
        await schema.require_synchronous_commit(_Connection())  # type: ignore[arg-type]  # a stand-in connection
