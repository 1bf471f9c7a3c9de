"""The one batch engine: a batch of events and the stream sequence it reached, in one transaction.

The live projector and the rebuild both project through :class:`BatchEngine`, and it is the
only writer of the checkpoint. Each batch locks the checkpoint row first and skips events at
or below it, so a redelivered message, a retried batch or a second projector counts
nothing twice; the count changes and the new checkpoint commit together.

With ``overlap`` (the rebuild), :meth:`BatchEngine.submit` returns while the batch is
being written, so the caller reads and decodes the next batch meanwhile (PostgreSQL works
on its own core); the next submit waits for the previous write first, so batches still
apply in log order, one at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import tzinfo

import asyncpg
import orjson

from services.analytics.projection.engages import keys_of
from services.analytics.projection.fold import DEFAULT_TZ, Changes, project
from services.analytics.store import writes
from shared.events import Envelope
from shared.plan import DerivedRules, Plan

# The checkpoint, locked for the batch, and the rules the derived groups' counters were made by.
_LOCK_CHECKPOINT = """
SELECT stream_seq,
       (SELECT coalesce(json_object_agg(process_id, rules), '{}')::text FROM derived_rules) AS rules
  FROM checkpoint WHERE consumer = $1 FOR UPDATE
"""
EVERYTHING = "*"  # in ``BatchEngine.touched``: every count of the process may have moved


class BatchEngine:
    """Projects batches of (stream sequence, event) into the tables ``pool`` points at."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        consumer: str,
        tz: tzinfo = DEFAULT_TZ,
        *,
        overlap: bool = False,
        plans: Mapping[str, Plan] | None = None,
        single_writer: bool = False,
    ) -> None:
        self.pool, self.consumer, self.tz, self.overlap = pool, consumer, tz, overlap
        # The rebuild is the one writer of its fresh tables, and starts again from nothing if it
        # stops: it sums the counters' changes in memory (their size is the plan's times the
        # days, not the log's) and writes them once, at ``flush``.
        self.single_writer = single_writer
        self._counted = Changes()
        self.derived: dict[str, DerivedRules] = {p: plan.derived_rule_list() for p, plan in (plans or {}).items()}
        self._writing: asyncio.Task[int] | None = None
        # What the committed batches changed since the caller last took it: process -> the
        # dimensions whose counts moved, and the totals (participants, profiled) that moved
        self.touched: dict[str, set[str]] = {}

    async def apply(self, events: Sequence[tuple[int, Envelope]], reached: int) -> int:
        """Project ``events`` and move the checkpoint to ``reached``, in one transaction.

        ``reached`` may lie past the last event (unreadable events are parked, not projected).
        Returns how many events were new (above the checkpoint).

        A batch costs a few round trips to PostgreSQL, whatever it holds: the checkpoint
        locked (with the plans' rules the counters were made by), the batch's participants
        loaded, and every write in one statement (``writes.write``); the feed's regions of
        interviews scheduled earlier are read only when it has some.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_CHECKPOINT, self.consumer)
            if row is None:  # the first batch of these read models
                await conn.execute(
                    "INSERT INTO checkpoint (consumer) VALUES ($1) ON CONFLICT DO NOTHING", self.consumer
                )
                row = await conn.fetchrow(_LOCK_CHECKPOINT, self.consumer)
                if row is None:
                    raise RuntimeError(f"the checkpoint of {self.consumer!r} could not be made")
            done: int = row["stream_seq"]
            fresh = [(seq, ev) for seq, ev in events if seq > done]
            changes = None
            if fresh:
                recounted = await writes.ensure_derived(conn, self.derived, orjson.loads(row["rules"]))
                envelopes = [ev for _, ev in fresh]
                known = await writes.load(conn, keys_of(envelopes))
                changes = project(envelopes, known, self.tz, self.derived, dated=True)
                changes.touches = [
                    (key, fresh[i][0] if i >= 0 else 0, at, channel, profile)
                    for key, i, at, channel, profile in changes.touches
                ]
                feed = await writes.activity_of(conn, fresh)
                await writes.write(
                    conn,
                    changes,
                    counters=not self.single_writer,
                    feed=feed,
                    checkpoint=(self.consumer, reached),
                )
            elif reached > done:
                await conn.execute(
                    "UPDATE checkpoint SET stream_seq = $2, updated_at = now() WHERE consumer = $1",
                    self.consumer,
                    reached,
                )
        if changes is not None:  # committed: remember what moved, for judging statuses
            if self.single_writer:  # and add its count changes to those written at ``flush``
                _add_counts(self._counted, changes)
            for proc in recounted:
                self.touched.setdefault(proc, set()).add(EVERYTHING)
            for proc, dimension, _ in changes.categories:
                self.touched.setdefault(proc, set()).add(dimension)
            for proc, total in changes.totals:
                self.touched.setdefault(proc, set()).add(total)
        return len(fresh)

    def take_touched(self) -> dict[str, set[str]]:
        """What moved since the last call (see ``touched``), and forget it."""
        touched, self.touched = self.touched, {}
        return touched

    async def submit(self, events: Sequence[tuple[int, Envelope]], reached: int) -> None:
        """Apply a batch: at once, or with ``overlap`` while the caller goes on to the next one."""
        await self._written()  # the previous batch's rows must be in before this one's are loaded
        if self.overlap:
            self._writing = asyncio.create_task(self.apply(events, reached))
        else:
            await self.apply(events, reached)

    async def _written(self) -> None:
        """Wait for the batch being written, if any (and raise what it raised)."""
        if self._writing is not None:
            task, self._writing = self._writing, None
            await task

    async def flush(self) -> None:
        """Wait for the batch being written; a single writer then writes the counters it summed."""
        await self._written()
        if self.single_writer:
            counted, self._counted = self._counted, Changes()
            async with self.pool.acquire() as conn, conn.transaction():
                await writes.write(conn, counted)


def _add_counts(into: Changes, more: Changes) -> None:
    """Add the count changes of ``more`` to ``into``."""
    for name in ("categories", "engagements", "people", "totals", "daily", "firsts", "dated"):
        getattr(into, name).update(getattr(more, name))
    for proc, (first, last) in more.event_times.items():
        was = into.event_times.get(proc)
        into.event_times[proc] = (first, last) if was is None else (min(was[0], first), max(was[1], last))
