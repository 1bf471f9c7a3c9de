"""The projector: log -> validated events -> one Postgres transaction per batch -> ack.

Each message is validated on its own. One that cannot be read is parked on
``deadletter.<its subject>`` with the reason and the batch goes on without it. The
batch commits its count changes and the stream sequence it reached together, and only
then is it acknowledged: a crash anywhere loses nothing and counts nothing twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.analytics.engine.announce import judge_and_announce
from services.analytics.engine.batch import BatchEngine
from services.analytics.engine.pulse import Pulse
from services.analytics.reading.decode import Skipped, decode_batch
from services.analytics.reading.reader import GapError, PullReader, attach_consumer, stream_sequence
from services.analytics.store import reads
from shared.logging import get_logger
from shared.plan import Plan
from shared.settings import Settings

log = get_logger("engage.analytics.projector")


@dataclass
class Progress:
    checkpoint: int = 0
    projected: int = 0
    parked: int = 0


class Projector:
    JUDGE_EVERY = 1.0  # seconds: while catching up, judge statuses at most this often

    def __init__(
        self, settings: Settings, nc: Client, pool: asyncpg.Pool, plans: Mapping[str, Plan] | None = None
    ) -> None:
        self.settings, self.nc, self.pool, self.plans = settings, nc, pool, dict(plans or {})
        self._judged_at = 0.0
        self.js = nc.jetstream()
        self.progress = Progress()
        self.pulse = Pulse()  # beats after every commit: the dashboard shows fresh numbers at once
        self._reader: PullReader | None = None
        self.engine = BatchEngine(pool, settings.consumer_name, settings.tz)

    async def run(self) -> None:
        s = self.settings
        self.progress.checkpoint = await reads.checkpoint(self.pool, s.consumer_name)
        await attach_consumer(self.js, s.stream_name, s.consumer_name, self.progress.checkpoint, s.batch_size)
        self._reader = PullReader(self.nc, s.stream_name, s.consumer_name, s.batch_size)
        await self._reader.start()
        log.info("projector_started", checkpoint=self.progress.checkpoint)
        try:
            while True:
                msgs = await self._reader.next_batch()
                if msgs:
                    await self.handle(msgs)
        finally:
            await self._reader.stop()

    async def handle(self, msgs: list[Msg]) -> None:
        raw: list[tuple[int, str, bytes]] = []
        reached = self.progress.checkpoint
        for msg in msgs:
            seq = stream_sequence(msg)
            if seq <= reached:
                continue  # a redelivery of something already handled
            if seq != reached + 1:
                # Never skip ahead: the checkpoint would pass events not yet projected.
                raise GapError(f"expected sequence {reached + 1}, got {seq}")
            reached = seq
            raw.append((seq, msg.subject, msg.data))
        events, unreadable = decode_batch(raw)
        if unreadable:
            data_of = {seq: data for seq, _, data in raw}
            for skipped in unreadable:
                await self.park(skipped, data_of[skipped.sequence])
        if reached <= self.progress.checkpoint:
            await msgs[-1].ack()
            return
        delay = 0.2
        while True:
            try:
                fresh = await self.engine.apply(events, reached)
                break
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as exc:
                log.warning("batch_retry", error_type=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
        self.progress.checkpoint = reached
        self.progress.projected += fresh
        self.pulse.beat()
        log.debug("batch_committed", events=fresh, checkpoint=reached)
        caught_up = msgs[-1].metadata.num_pending == 0
        if self.plans and (caught_up or time.monotonic() - self._judged_at >= self.JUDGE_EVERY):
            await self.judge()

    async def judge(self) -> None:
        """Judge every targeted category; announce status changes. Never stops the projection."""
        self._judged_at = time.monotonic()
        try:
            await judge_and_announce(self.js, self.pool, self.plans, self.settings)
        except Exception as exc:  # noqa: BLE001 - counting goes on; the next judgement retries
            log.warning("judging_failed", error_type=type(exc).__name__, error=str(exc)[:300])

    async def park(self, skipped: Skipped, data: bytes | None) -> None:
        """Put an unreadable message on the dead-letter stream, with its reason."""
        stream = self.settings.stream_name
        headers = {
            "Nats-Msg-Id": f"dlq-{stream}-{skipped.sequence}",  # a redelivery parks it once
            "Engage-Reason": skipped.reason.replace("\n", " ")[:1000],
            "Engage-Original-Subject": skipped.subject,
            "Engage-Original-Sequence": str(skipped.sequence),
        }
        await self.js.publish(
            f"deadletter.{skipped.subject}", data or b"", headers=headers, timeout=self.settings.publish_timeout_seconds
        )
        self.progress.parked += 1
        log.warning("event_parked", sequence=skipped.sequence, reason=skipped.reason)
