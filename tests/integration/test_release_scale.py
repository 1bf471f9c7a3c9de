"""A coordinator's first answer reads the whole log into a release: the live projector keeps
counting meanwhile, on a connection of its own, and fails nowhere."""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from structlog.testing import capture_logs

from services.analytics.answers import release as release_module
from services.analytics.answers.release import Releases
from services.analytics.app import build_app
from services.analytics.store import reads
from shared.bus import publish_event
from tests import factories as f
from tests.integration.test_analytics_projection import broker
from tests.integration.test_releases import coordinator_view
from tests.polling import eventually

pytestmark = pytest.mark.integration
__all__ = ["broker"]  # the fixture, shared with the projection tests

LOGGED = 3000


async def test_the_projector_keeps_counting_while_a_first_release_is_read(
    make_settings, broker, auth_headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events published during a coordinator's first refresh are counted before it ends."""
    settings = make_settings()
    rng = random.Random(11)
    events = [f.survey(f.random_profile(rng)) if rng.random() < 0.6 else f.interview() for _ in range(LOGGED)]
    for start in range(0, LOGGED, 200):
        await asyncio.gather(*(publish_event(broker, ev, settings) for ev in events[start : start + 200]))

    # A slow machine: each batch of the refresh holds the loop a while, and there are many.
    reading = asyncio.Event()
    take = Releases.take

    def slow_take(self: Releases, batch: list, read_to: int) -> bool:
        reading.set()
        time.sleep(0.005)
        return take(self, batch, read_to)

    monkeypatch.setattr(Releases, "take", slow_take)
    monkeypatch.setattr(release_module, "BATCH", 20)

    app = build_app(settings)
    async with app.router.lifespan_context(app):
        src = app.state.analytics.sources
        checkpoint = lambda: reads.checkpoint(src.pool, settings.consumer_name)  # noqa: E731 - read twice below
        await eventually(checkpoint, lambda seq: seq >= LOGGED, what="the log counted", timeout=60)
        assert src.releases_nc is not None and src.releases_nc is not src.nc
        with capture_logs() as logged:
            first = asyncio.create_task(coordinator_view(app, auth_headers("coordinator")))
            await asyncio.wait_for(reading.wait(), 30)
            live, _ = await publish_event(broker, f.survey(region="central"), settings)
            await eventually(checkpoint, lambda seq: seq >= live, what="a live event counted", timeout=60)
            assert not first.done(), "the projector counted only once the refresh had ended"
            body = await first
        assert body["suppression"]["release"] >= LOGGED - settings.every
        assert src.releases.of(settings.process_id).cut.number > LOGGED // (2 * settings.every)
        assert app.state.analytics.projector.readiness().state == "counting"
    assert not [e for e in logged if e["event"] == "projector_failed"]
