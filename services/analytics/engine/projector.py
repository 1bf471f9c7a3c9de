"""The projector: log -> validated events -> one Postgres transaction per batch -> ack.

Each message is validated on its own. One that cannot be read is parked on
``deadletter.<its subject>`` with the reason and the batch goes on without it. The
batch commits its count changes and the stream sequence it reached together, and only
then is it acknowledged: a crash anywhere loses nothing and counts nothing twice.

No event can stop the counting. A batch that fails on the database or the connection is
retried until it goes through. A batch that fails otherwise (the fold raised on
something an event carries) is tried again once, then applied one event at a time, each
in its own transaction with the checkpoint moving along: an event that still fails is
parked with the reason, and the rest are counted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.analytics.engine.announce import judge_and_announce
from services.analytics.engine.batch import BatchEngine
from services.analytics.engine.pulse import Pulse
from services.analytics.reading.decode import Skipped, decode_batch, unprojectable
from services.analytics.reading.reader import GapError, PullReader, attach_consumer, stream_sequence
from services.analytics.store import reads
from shared.events import Envelope
from shared.logging import get_logger
from shared.plan import Plan
from shared.settings import Settings

log = get_logger("engage.analytics.projector")

# Errors of the database or the connection to it: the batch is not at fault, so it is retried
# as it is until it goes through. (A data exception or a broken constraint is the batch's own:
# trying again cannot help, so those are handled like any other error of an event.)
RETRIED = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError)
EVENTS_FAULT = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


@dataclass
class Progress:
    checkpoint: int = 0
    projected: int = 0
    parked: int = 0


class Projector:
    JUDGE_EVERY = 1.0  # seconds: while catching up, judge statuses at most this often
    BATCH_TRIES = 2  # a batch failing otherwise than on the database is tried this often before splitting it
    EVENT_TRIES = 2  # and each of its events this often before it is parked

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
        subject_of = {seq: subject for seq, subject, _ in raw}
        data_of = {seq: data for seq, _, data in raw}
        for skipped in unreadable:
            await self.park(skipped, data_of[skipped.sequence])
        if reached <= self.progress.checkpoint:
            await msgs[-1].ack()
            return
        try:
            fresh = await self.apply(events, reached, tries=self.BATCH_TRIES)
        except Exception as exc:  # noqa: BLE001 - not the database's fault: find the event(s) at fault
            log.warning("batch_split", error_type=type(exc).__name__, first=raw[0][0], last=reached)
            fresh = await self.apply_one_by_one(events, reached, subject_of, data_of)
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
        self.progress.checkpoint = reached
        self.progress.projected += fresh
        self.pulse.beat()
        log.debug("batch_committed", events=fresh, checkpoint=reached)
        caught_up = msgs[-1].metadata.num_pending == 0
        if self.plans and (caught_up or time.monotonic() - self._judged_at >= self.JUDGE_EVERY):
            await self.judge()

    async def apply(self, events: Sequence[tuple[int, Envelope]], reached: int, tries: int) -> int:
        """Apply through the engine: retried while the database fails, up to ``tries`` times for any other error."""
        delay, failures = 0.2, 0
        while True:
            try:
                return await self.engine.apply(events, reached)
            except Exception as exc:
                if isinstance(exc, RETRIED) and not isinstance(exc, EVENTS_FAULT):
                    log.warning("batch_retry", error_type=type(exc).__name__, retry_in=delay)
                else:
                    failures += 1
                    if failures >= tries:
                        raise
                    log.warning("batch_failed", error_type=type(exc).__name__, tries=failures, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def apply_one_by_one(
        self,
        events: Sequence[tuple[int, Envelope]],
        reached: int,
        subject_of: Mapping[int, str],
        data_of: Mapping[int, bytes],
    ) -> int:
        """Apply a failed batch an event at a time; park each event that still fails, count the rest.

        Every event commits with the checkpoint at its own sequence, so a crash here resumes
        right after the last event handled; an event is parked before the checkpoint passes it.
        """
        fresh = 0
        for seq, event in events:
            try:
                fresh += await self.apply([(seq, event)], seq, tries=self.EVENT_TRIES)
            except Exception as exc:  # noqa: BLE001 - this event's own failure: parked, and counting goes on
                await self.park(Skipped(seq, subject_of[seq], unprojectable(exc)), data_of[seq])
                await self.apply([], seq, tries=self.EVENT_TRIES)
        return fresh + await self.apply([], reached, tries=self.EVENT_TRIES)

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
