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

The projection never stalls silently. One projector counts per consumer and database: it
holds a PostgreSQL advisory lock (session-level, on a connection it keeps), and a second
one waits for it as a hot standby, taking over when the first stops or dies (its
connection closes and the lock is freed). A consumer that is deleted, reset or stops
delivering while the log holds more than the checkpoint is recreated from checkpoint+1.
What cannot heal by itself stops the projector loudly, naming the operator command: an
event missing from the log where counting must go on (deleted from a stream that allowed
it), a log behind the checkpoint, recreated or gone. The projector does not skip a
missing event: a deleted event was acknowledged to whoever wrote it, and counting on past
it would make the loss invisible. ``engage rebuild`` makes the read models agree with what
the log holds; the stalled projector sees the checkpoint move and goes on from there.

Each fault is a log line, a count in ``engage_projector_faults`` and, while it lasts, a
readiness that is not ready with the reason (:meth:`Projector.readiness`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from services.analytics.engine.announce import judge_and_announce
from services.analytics.engine.batch import BatchEngine
from services.analytics.engine.pulse import Pulse
from services.analytics.reading.decode import Skipped, decode_batch, unprojectable
from services.analytics.reading.reader import ConsumerLost, GapError, PullReader, attach_consumer, stream_sequence
from services.analytics.store import reads
from shared.events import Envelope
from shared.logging import get_logger
from shared.metrics import (
    BATCH_SECONDS,
    DEAD_LETTERS,
    LAG_EVENTS,
    LAG_SECONDS,
    PROJECTED,
    PROJECTOR_FAULTS,
    PROJECTOR_READY,
)
from shared.plan import Plan
from shared.settings import Settings

log = get_logger("engage.analytics.projector")

# Errors of the database or the connection to it: the batch is not at fault, so it is retried
# as it is until it goes through. (A data exception or a broken constraint is the batch's own:
# trying again cannot help, so those are handled like any other error of an event.)
RETRIED = (asyncpg.PostgresError, OSError, asyncpg.InterfaceError)
EVENTS_FAULT = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

# The advisory lock's class (its first key); the second key is the consumer's name, hashed.
PROJECTION_LOCK = 7_310_001
REBUILD = "`engage rebuild`"


@dataclass
class Progress:
    checkpoint: int = 0
    projected: int = 0
    parked: int = 0


@dataclass(frozen=True)
class Readiness:
    """What the projection is doing, for ``/health/ready``: counting, or why not."""

    state: str  # starting | counting | standby | recovering | stalled | stopped
    reason: str | None = None
    behind: int | None = None  # events on the log not yet counted, as last seen
    oldest_waiting_seconds: float | None = None  # how long the oldest of them has waited

    @property
    def ready(self) -> bool:
        return self.state == "counting"


class Stalled(Exception):
    """The projection cannot go on by itself; ``reason`` names the operator command that resolves it."""

    def __init__(self, fault: str, reason: str) -> None:
        super().__init__(reason)
        self.fault, self.reason = fault, reason


class Reattach(Exception):
    """The consumer must be recreated from the checkpoint (it is gone, reset or out of order)."""

    def __init__(self, fault: str, reason: str) -> None:
        super().__init__(reason)
        self.fault, self.reason = fault, reason


class LockLost(RuntimeError):
    """The connection holding the projection lock broke: another projector may count now."""


class Projector:
    JUDGE_EVERY = 1.0  # seconds: judge statuses at most this often while events arrive
    BATCH_TRIES = 2  # a batch failing otherwise than on the database is tried this often before splitting it
    EVENT_TRIES = 2  # and each of its events this often before it is parked
    WATCH_EVERY = 1.0  # seconds: how often the log, the consumer and the lock are checked
    STALL_AFTER = 5.0  # seconds without a message while the log holds more: the consumer is recreated
    LOCK_POLL = 1.0  # seconds: how often a standby tries the lock
    RECHECK_EVERY = 2.0  # seconds: how often a stalled projector looks whether it was resolved

    def __init__(
        self, settings: Settings, nc: Client, pool: asyncpg.Pool, plans: Mapping[str, Plan] | None = None
    ) -> None:
        self.settings, self.nc, self.pool, self.plans = settings, nc, pool, dict(plans or {})
        self._judged_at = 0.0
        self._judging: asyncio.Task[None] | None = None
        self.js = nc.jetstream()
        self.progress = Progress()
        self.pulse = Pulse()  # beats after every commit: the dashboard shows fresh numbers at once
        self._reader: PullReader | None = None
        self.engine = BatchEngine(pool, settings.consumer_name, settings.tz, plans=self.plans)
        self._judged_all = False  # the first judgement of a run judges every category
        self._state: str = "starting"
        self._reason: str | None = "the projector is starting"
        self._behind: int | None = None
        self._oldest_at: datetime | None = None  # when the oldest event not yet counted was stored
        self._watched_at = 0.0
        self._stream_created: datetime | None = None  # the stream counted from, to notice it recreated
        self._lock: asyncpg.pool.PoolConnectionProxy | None = None
        self.settled = asyncio.Event()  # set once it counts, or knows why not (standby, stalled, failing)

    def readiness(self) -> Readiness:
        waited = None
        if self._oldest_at is not None:
            waited = round(max(0.0, (datetime.now(UTC) - self._oldest_at).total_seconds()), 3)
        return Readiness(self._state, self._reason, self._behind, waited)

    def _set(self, state: str, reason: str | None = None) -> None:
        self._state, self._reason = state, reason
        PROJECTOR_READY.set(1 if state == "counting" else 0)
        if state != "starting":
            self.settled.set()

    def _fault(self, fault: str, reason: str, *, stalled: bool = False) -> None:
        PROJECTOR_FAULTS.labels(fault=fault).inc()
        event = (
            "projection_stalled" if stalled else "projection_standby" if fault == "standby" else "projection_healing"
        )
        (log.error if stalled else log.warning)(
            event, fault=fault, reason=reason, checkpoint=self.progress.checkpoint, behind=self._behind
        )

    async def stop(self, task: asyncio.Task[None], within: float = 10.0) -> bool:
        """Cancel ``task`` (running this projector) until it ends, at most ``within`` seconds; whether it ended.

        Cancelled once, a task can go on: on Python 3.11, ``asyncio.wait_for`` (which nats-py and
        asyncpg use for their timeouts) swallows a cancellation that lands as its wait completes.
        """
        deadline = asyncio.get_running_loop().time() + within
        while not task.done() and asyncio.get_running_loop().time() < deadline:
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        return task.done()

    async def run(self) -> None:
        """Count the log until cancelled: as the one projector holding the lock, or waiting to be."""
        try:
            async with self._projection_lock():
                while True:
                    try:
                        await self._count()
                    except Reattach as heal:
                        self._fault(heal.fault, heal.reason)
                        self._set("recovering", f"recreating the consumer from the checkpoint: {heal.reason}")
                    except Stalled as stall:
                        await self._stay_stalled(stall)
        except asyncio.CancelledError:
            self._set("stopped", "the projector stopped")
            raise
        except Exception as exc:
            self._set("recovering", f"the projector failed ({type(exc).__name__}) and starts again from the checkpoint")
            raise

    @contextlib.asynccontextmanager
    async def _projection_lock(self) -> AsyncIterator[None]:
        """Hold the consumer's advisory lock while counting; wait for it as a hot standby meanwhile."""
        consumer = self.settings.consumer_name
        conn = await self.pool.acquire()
        try:
            announced = False
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", PROJECTION_LOCK, consumer):
                if not announced:
                    reason = (
                        f"standby: another projector counts for {consumer} (it holds the projection lock); "
                        "this one takes over when that one stops"
                    )
                    self._fault("standby", reason)
                    self._set("standby", reason)
                    announced = True
                await asyncio.sleep(self.LOCK_POLL)
            if announced:
                log.warning("projection_taken_over", consumer=consumer)
            self._lock = conn
            yield
        finally:
            self._lock = None
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", PROJECTION_LOCK, consumer)
            with contextlib.suppress(Exception):
                await self.pool.release(conn)  # a connection that broke is dropped, and the lock with it

    async def _check_lock(self) -> None:
        try:
            if self._lock is not None:
                async with asyncio.timeout(5):  # not asyncpg's timeout=: its wait_for can swallow a cancel on 3.11
                    await self._lock.fetchval("SELECT 1")
        except Exception as exc:
            reason = f"the connection holding the projection lock broke ({type(exc).__name__})"
            self._fault("lock_lost", reason)
            raise LockLost(reason) from exc

    async def _count(self) -> None:
        """Attach the consumer right after the checkpoint and count until something is wrong."""
        s = self.settings
        self.progress.checkpoint = await reads.checkpoint(self.pool, s.consumer_name)
        await self._diagnose()
        await attach_consumer(self.js, s.stream_name, s.consumer_name, self.progress.checkpoint, s.batch_size)
        reader = self._reader = PullReader(self.nc, s.stream_name, s.consumer_name, s.batch_size)
        await reader.start()
        self._set("counting")
        log.info("projector_started", checkpoint=self.progress.checkpoint, behind=self._behind)
        arrived = time.monotonic()
        try:
            while True:
                try:
                    msgs = await reader.next_batch()
                except ConsumerLost as exc:
                    raise Reattach("consumer_lost", str(exc)) from exc
                if msgs:
                    try:
                        await self.handle(msgs)
                    except GapError as gap:
                        await self._diagnose(gap.expected)  # Stalled when the log no longer holds it
                        raise Reattach("out_of_order", str(gap)) from gap
                    arrived = time.monotonic()
                elif self.plans and (self.engine.touched or not self._judged_all):  # quiet: judge what moved
                    self._judge_soon()
                if time.monotonic() - self._watched_at >= self.WATCH_EVERY:
                    await self._watch(idle=time.monotonic() - arrived)
        finally:
            await self._stop_judging()
            await reader.stop()

    async def _watch(self, idle: float) -> None:
        """Check the lock and the log; a consumer that delivers nothing while events wait is recreated."""
        self._watched_at = time.monotonic()
        await self._check_lock()
        await self._diagnose()
        if self._behind and idle >= self.STALL_AFTER:
            raise Reattach(
                "consumer_lost", f"no message arrived for {idle:.0f} s while {self._behind} events wait on the log"
            )

    async def _diagnose(self, expected: int | None = None) -> None:
        """Measure the lag; raise Stalled if the log cannot go on from the checkpoint (or from ``expected``)."""
        name, checkpoint = self.settings.stream_name, self.progress.checkpoint
        try:
            info = await self.js.stream_info(name)
        except NotFoundError:
            raise Stalled(
                "log_missing",
                f"the log is gone (stream {name} does not exist, counted up to {checkpoint}): "
                f"restore it, then {REBUILD}",
            ) from None
        last = info.state.last_seq
        if last < checkpoint:
            self._behind, self._oldest_at = 0, None
            raise Stalled(
                "log_behind",
                f"the log is behind the read models (stream at {last}, counted up to {checkpoint}): {REBUILD}",
            )
        if self._stream_created is None:
            self._stream_created = info.created
        elif info.created != self._stream_created:
            raise Stalled(
                "log_recreated",
                f"the log was recreated under the read models (stream {name} is not the one counted up to "
                f"{checkpoint}): {REBUILD}",
            )
        self._behind = last - checkpoint
        LAG_EVENTS.set(self._behind)
        wanted = expected or checkpoint + 1
        if wanted <= last:
            try:
                msg = await self.js.get_msg(name, wanted)
            except NotFoundError:
                self._oldest_at = None
                raise Stalled(
                    "gap", f"events missing from the log at sequence {wanted}; rebuild from the log: {REBUILD}"
                ) from None
            if wanted == checkpoint + 1:
                self._oldest_at = msg.time
        else:
            self._oldest_at = None
        LAG_SECONDS.set(self.readiness().oldest_waiting_seconds or 0.0)

    async def _stay_stalled(self, stall: Stalled) -> None:
        """Report the stall, then wait until an operator resolved it (the checkpoint moved)."""
        self._fault(stall.fault, stall.reason, stalled=True)
        self._set("stalled", stall.reason)
        LAG_SECONDS.set(self.readiness().oldest_waiting_seconds or 0.0)
        mark = await reads.reached(self.pool, self.settings.consumer_name)
        while True:
            await asyncio.sleep(self.RECHECK_EVERY)
            await self._check_lock()
            if await reads.reached(self.pool, self.settings.consumer_name) != mark:
                log.info("projection_resuming", fault=stall.fault, checkpoint_was=mark[0])
                self._stream_created = None  # the read models now reflect the log as it is
                return
            # Still stalled, for the first reason or a newer one (a stream that was gone now exists,
            # behind the checkpoint); a log that looks whole again is not trusted until a rebuild.
            try:
                await self._diagnose()
            except Stalled as now:
                if now.reason != stall.reason:
                    stall = now
                    self._fault(stall.fault, stall.reason, stalled=True)
                    self._set("stalled", stall.reason)

    async def handle(self, msgs: list[Msg]) -> None:
        started = time.perf_counter()
        raw: list[tuple[int, str, bytes]] = []
        reached = self.progress.checkpoint
        for i, msg in enumerate(msgs):
            seq = stream_sequence(msg)
            if seq <= reached:
                continue  # a redelivery of something already handled
            if seq != reached + 1:
                # Never skip ahead: the checkpoint would pass events not yet projected. Count what
                # came before the gap, then let the caller find out whether the log still holds it.
                if i:
                    await self.handle(msgs[:i])
                raise GapError(reached + 1, seq)
            reached = seq
            raw.append((seq, msg.subject, msg.data))
        events, unreadable = decode_batch(raw)
        subject_of = {seq: subject for seq, subject, _ in raw}
        data_of = {seq: data for seq, _, data in raw}
        for skipped in unreadable:
            await self.park(skipped, data_of[skipped.sequence], why="unreadable")
        if reached <= self.progress.checkpoint:
            await msgs[-1].ack()
            return
        parked = self.progress.parked
        try:
            fresh = await self.apply(events, reached, tries=self.BATCH_TRIES)
        except Exception as exc:  # noqa: BLE001 - not the database's fault: find the event(s) at fault
            log.warning("batch_split", error_type=type(exc).__name__, first=raw[0][0], last=reached)
            fresh = await self.apply_one_by_one(events, reached, subject_of, data_of)
        await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
        self.progress.checkpoint = reached
        self.progress.projected += fresh
        PROJECTED.inc(fresh)
        BATCH_SECONDS.observe(time.perf_counter() - started)
        self._behind = msgs[-1].metadata.num_pending
        LAG_EVENTS.set(self._behind)
        if not self._behind:
            self._oldest_at = None
            LAG_SECONDS.set(0.0)
        self.pulse.beat()
        log.info(
            "batch_committed",
            first=raw[0][0],
            last=reached,
            messages=len(raw),
            counted=fresh,
            parked=len(unreadable) + self.progress.parked - parked,
            behind=self._behind,
            seconds=round(time.perf_counter() - started, 4),
        )
        # Statuses are judged at most every JUDGE_EVERY, caught up or not, so that a steady live
        # stream does not pay a judgement per batch; what the last batches moved is judged once
        # the stream goes quiet (``_count``). The judgement runs beside the next batches.
        if self.plans and time.monotonic() - self._judged_at >= self.JUDGE_EVERY:
            self._judge_soon()

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
                await self.park(Skipped(seq, subject_of[seq], unprojectable(exc)), data_of[seq], why="unprojectable")
                await self.apply([], seq, tries=self.EVENT_TRIES)
        return fresh + await self.apply([], reached, tries=self.EVENT_TRIES)

    def _judge_soon(self) -> None:
        """Judge in the background, beside the counting: a batch never waits for a judgement.
        One judgement runs at a time; what moves meanwhile is judged by the next one."""
        if self._judging is None or self._judging.done():
            self._judged_at = time.monotonic()
            self._judging = asyncio.create_task(self.judge(), name="judge")

    async def _stop_judging(self) -> None:
        """Cancel a judgement under way; what it took to judge is judged next time (``judge``)."""
        if self._judging is not None:
            self._judging.cancel()
            with contextlib.suppress(asyncio.CancelledError):  # judge() keeps its own errors
                await self._judging
            self._judging = None

    async def judge(self) -> None:
        """Judge the categories whose counts or base moved since the last judgement (every one,
        the first time); announce status changes. Never stops the projection."""
        self._judged_at = time.monotonic()
        touched = self.engine.take_touched() if self._judged_all else None
        try:
            await judge_and_announce(self.js, self.pool, self.plans, self.settings, touched)
            self._judged_all = True
        except BaseException as exc:  # counting goes on; the next judgement judges this one's again
            for proc, moved in (touched or {}).items():  # judged again next time, with what moved since
                self.engine.touched.setdefault(proc, set()).update(moved)
            if not isinstance(exc, Exception):
                raise  # cancelled: the projector stops or starts again
            log.warning("judging_failed", error_type=type(exc).__name__, error=str(exc)[:300])

    async def park(self, skipped: Skipped, data: bytes | None, why: str) -> None:
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
        DEAD_LETTERS.labels(why=why).inc()
        log.warning("event_parked", sequence=skipped.sequence, reason=skipped.reason)
