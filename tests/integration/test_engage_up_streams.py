"""`engage up` is the operator of its own nats-server: a data dir whose streams an older engage
made (no direct gets, no deny flags) is brought to today's configuration before the services
start, since the services themselves only check and would refuse it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from services.cli.embedded import EmbeddedNats, free_port
from services.cli.stack import Stack
from shared.bus import attach_streams
from shared.settings import Settings

pytestmark = pytest.mark.integration


def test_engage_up_brings_an_older_data_dirs_streams_to_todays_configuration(tmp_path: Path, postgres_url: str) -> None:
    port = free_port()
    old = EmbeddedNats(tmp_path / "nats", port=port)
    url = old.start()

    async def as_an_older_engage_made_it() -> None:
        nc = await nats.connect(url)
        await nc.jetstream().add_stream(StreamConfig(name="ENGAGEMENT", subjects=["engagement.>"]))
        await nc.close()

    asyncio.run(as_an_older_engage_made_it())
    old.stop()
    settings = Settings(data_dir=tmp_path, embedded_nats_port=port, database_url=postgres_url)
    stack = Stack(settings)
    try:
        stack.start_servers()

        async def check() -> StreamConfig:
            nc = await nats.connect(stack.env["ENGAGE_NATS_URL"])
            try:
                await attach_streams(nc, settings)  # what a service does: accepted now
                return (await nc.jetstream().stream_info("ENGAGEMENT")).config
            finally:
                await nc.close()

        config = asyncio.run(check())
    finally:
        stack.stop()
    assert (config.allow_direct, config.deny_delete, config.deny_purge) == (True, True, True)
