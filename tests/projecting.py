"""Running analytics' live projector in a test, as analytics runs it, until it has counted enough."""

from __future__ import annotations

import asyncio

from services.analytics.engine.projector import Projector
from services.analytics.store import reads
from tests.polling import eventually


async def project_until(projector: Projector, sequence: int, timeout: float = 30.0) -> None:
    """Run ``projector`` until its checkpoint reaches ``sequence``, then stop it."""
    running = asyncio.create_task(projector.run())
    try:
        await eventually(
            lambda: reads.checkpoint(projector.pool, projector.settings.consumer_name),
            lambda seq: seq >= sequence,
            what=f"the projector to reach sequence {sequence}",
            timeout=timeout,
        )
    finally:
        assert await projector.stop(running), "the projector did not stop when cancelled"
