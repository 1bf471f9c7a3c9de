"""intake's idempotency records: the first answer to each (token, key), replayed to every retry.

A write runs inside one transaction that first claims its (token, key) row, locked until the
write is answered: a concurrent retry waits for it, then finds the answer. The row holds the
request's fingerprint (route, path and body), the answer's status and body, and when it
expires (``dedupe_window_seconds``, like the log's dedupe window). Within the window:

- the same key with the same request gets the original status and body back, whatever has
  happened to the record since (e.g. a reschedule retried after the interview was completed);
- the same key with a different request is a 409 naming ``Idempotency-Key``.

Only successful answers are kept; a refused or failed write (409, 404, 422, 503) leaves no
row, so its retry runs again. After the window the key starts afresh, and the event log
itself still refuses to store an event id twice (``EventLog.find``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.intake.context import IntakeState
from shared.errors import ConflictError
from shared.idempotency import Key, conflicting_key

if TYPE_CHECKING:
    from services.intake.contacts import Connection

MIGRATION = """
CREATE TABLE IF NOT EXISTS intake.idempotency (
    token       text NOT NULL,
    key         text NOT NULL,
    request     text NOT NULL,
    status      integer,
    body        jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (token, key)
);
DELETE FROM intake.idempotency WHERE expires_at < now();
"""

REPLAYED = "Idempotent-Replayed"
_MIGRATION_LOCK = 0x1A7A_0002


async def migrate(pool: asyncpg.Pool) -> None:
    """Create the table if missing and drop expired records; safe to run on every start."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(MIGRATION)


async def once(
    intake: IntakeState,
    key: Key,
    request: str,
    status: int,
    work: Callable[[Connection], Awaitable[BaseModel]],
) -> Any:
    """Run ``work`` for this (token, key) once; a retry with the same request gets its answer again."""
    async with intake.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO intake.idempotency (token, key, request, expires_at)"
            " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
            " ON CONFLICT (token, key) DO UPDATE"
            " SET request = EXCLUDED.request, status = NULL, body = NULL,"
            " created_at = now(), expires_at = EXCLUDED.expires_at"
            " WHERE intake.idempotency.expires_at <= now()",
            key.token,
            key.value,
            request,
            float(intake.settings.dedupe_window_seconds),
        )
        row = await conn.fetchrow(
            "SELECT request, status, body FROM intake.idempotency WHERE token = $1 AND key = $2 FOR UPDATE",
            key.token,
            key.value,
        )
        assert row is not None  # inserted or kept above, and locked
        if row["status"] is not None:
            if row["request"] != request:
                raise ConflictError(conflicting_key(key))
            return JSONResponse(json.loads(row["body"]), status_code=row["status"], headers={REPLAYED: "true"})
        answer = await work(conn)
        await conn.execute(
            "UPDATE intake.idempotency SET status = $3, body = $4 WHERE token = $1 AND key = $2",
            key.token,
            key.value,
            status,
            answer.model_dump_json(),
        )
        return answer
