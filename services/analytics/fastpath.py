"""Projecting a long stretch of the log fast: for rebuilds, where one writer owns the tables.

The live projector takes a batch, locks the checkpoint, loads, projects, writes and
commits before it reads on. Here the next batch is read and decoded while the previous
one is still being written (Postgres works on its own core meanwhile); the projection
itself is the very same pure function, and each batch still commits its changes with
the checkpoint in one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import tzinfo

import asyncpg

from services.analytics import store
from services.analytics.projection import keys_of, project
from shared.events import Envelope
from shared.logging import get_logger
from shared.upcasting import decode_event

log = get_logger("engage.analytics.fastpath")


class BatchProjector:
    """Projects batches of raw (sequence, subject, data) into the tables ``pool`` points at."""

    def __init__(self, pool: asyncpg.Pool, consumer: str, tz: tzinfo) -> None:
        self.pool, self.consumer, self.tz = pool, consumer, tz
        self.unreadable = 0
        self._writing: asyncio.Task[None] | None = None

    def decode(self, raw: Sequence[tuple[int, str, bytes]]) -> list[tuple[int, Envelope]]:
        events = []
        for seq, subject, data in raw:
            try:
                events.append((seq, decode_event(data)))
            except ValueError as exc:
                # The live projector parks these on the dead-letter stream; a rebuild only skips them.
                self.unreadable += 1
                log.warning("event_skipped", sequence=seq, subject=subject, reason=str(exc)[:300])
        return events

    async def submit(self, raw: Sequence[tuple[int, str, bytes]]) -> None:
        if not raw:
            return
        events = self.decode(raw)
        await self.flush()  # the previous batch's rows must be in before this one's are loaded
        envelopes = [ev for _, ev in events]
        async with self.pool.acquire() as conn:
            known = await store.load(conn, keys_of(envelopes))
        changes = project(envelopes, known, self.tz)
        self._writing = asyncio.create_task(self._write(changes, events, raw[-1][0]))

    async def _write(self, changes: object, events: list[tuple[int, Envelope]], reached: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await store.write(conn, changes)  # type: ignore[arg-type]
            await store.write_activity(conn, events)
            await conn.execute(
                "INSERT INTO checkpoint (consumer, stream_seq) VALUES ($1, $2) ON CONFLICT (consumer) "
                "DO UPDATE SET stream_seq = EXCLUDED.stream_seq, updated_at = now()", self.consumer, reached)

    async def flush(self) -> None:
        if self._writing is not None:
            task, self._writing = self._writing, None
            await task
