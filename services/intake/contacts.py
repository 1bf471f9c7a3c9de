"""intake's own tables: the interviews it scheduled, and contact details for scheduling.

Contact details (name, phone, e-mail) exist only here, never on the event log or in a
log line, and are deleted as soon as they are no longer needed: when the interview ends
(completed, cancelled, no-show), when the participant withdraws, or on request.
``intake.interviews`` keeps only opaque ids, so completing a one-on-one interview can
default to the participant reference issued when it was scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from shared.database import ensure_schema

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

SCHEMA = "intake"

MIGRATION = """
CREATE TABLE IF NOT EXISTS intake.interviews (
    interview_id    text PRIMARY KEY,
    process_id      text NOT NULL,
    format          text NOT NULL,
    participant_ref text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS intake.contacts (
    interview_id    text PRIMARY KEY,
    participant_ref text NOT NULL,
    name            text,
    phone           text,
    email           text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS contacts_participant_ref ON intake.contacts (participant_ref);
"""

# Two intake processes starting together must not race on CREATE ... IF NOT EXISTS
# (Postgres can still raise a unique violation on its catalogue), so migrate under a lock.
_MIGRATION_LOCK = 0x1A7A_0001


@dataclass(frozen=True)
class Contact:
    """How to reach someone to schedule an interview. Never leaves this table."""

    name: str | None = None
    phone: str | None = None
    email: str | None = None

    def is_empty(self) -> bool:
        return not (self.name or self.phone or self.email)


@dataclass(frozen=True)
class InterviewRow:
    interview_id: str
    process_id: str
    format: str
    participant_ref: str


async def migrate(pool: asyncpg.Pool) -> None:
    """Create intake's schema and tables if missing; safe to run on every start."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await ensure_schema(conn, SCHEMA)
        await conn.execute(MIGRATION)


async def remember_interview(conn: Connection, row: InterviewRow) -> None:
    """Record the ids issued at scheduling; a retry leaves the first row as it is."""
    await conn.execute(
        "INSERT INTO intake.interviews (interview_id, process_id, format, participant_ref)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (interview_id) DO NOTHING",
        row.interview_id,
        row.process_id,
        row.format,
        row.participant_ref,
    )


async def find_interview(conn: asyncpg.Pool | Connection, interview_id: str) -> InterviewRow | None:
    rec = await conn.fetchrow(
        "SELECT interview_id, process_id, format, participant_ref FROM intake.interviews WHERE interview_id = $1",
        interview_id,
    )
    return InterviewRow(**dict(rec)) if rec else None


async def save_contact(conn: Connection, interview_id: str, participant_ref: str, contact: Contact) -> None:
    """Keep contact details for scheduling this interview (a retry does not overwrite them)."""
    if contact.is_empty():
        return
    await conn.execute(
        "INSERT INTO intake.contacts (interview_id, participant_ref, name, phone, email)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (interview_id) DO NOTHING",
        interview_id,
        participant_ref,
        contact.name,
        contact.phone,
        contact.email,
    )


async def forget_interview_contact(conn: asyncpg.Pool | Connection, interview_id: str) -> int:
    """Delete the contact details kept for one interview; returns how many rows went."""
    status = await conn.execute("DELETE FROM intake.contacts WHERE interview_id = $1", interview_id)
    return int(status.split()[-1])


async def forget_participant_contacts(conn: asyncpg.Pool | Connection, participant_ref: str) -> int:
    """Delete every contact detail kept for one participant (on withdrawal)."""
    status = await conn.execute("DELETE FROM intake.contacts WHERE participant_ref = $1", participant_ref)
    return int(status.split()[-1])
