"""Postgres for analytics: migrations, the batch transaction, and the coverage reads.

A batch's read-model changes and the stream sequence it reached commit in one
transaction. The checkpoint row is locked first and events at or below it are skipped,
so a redelivered message, a retried batch or a second projector counts nothing twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import asyncpg
import orjson

from services.analytics.projection import Changes, Key, ParticipantState, keys_of, project
from shared.events import Envelope
from shared.profile import Profile

SCHEMA = "analytics"
_MIGRATION_LOCK = 7_310_001


async def open_pool(dsn: str, schema: str = SCHEMA) -> asyncpg.Pool:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        await admin.close()
    return await asyncpg.create_pool(dsn, min_size=1, max_size=8, server_settings={"search_path": schema})


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the SQL files in ``migrations/`` not yet applied, in name order; return them."""
    files = sorted(
        (f for f in resources.files("services.analytics").joinpath("migrations").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
                           "applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for f in files:
            if f.name not in done:
                await conn.execute(f.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", f.name)
                applied.append(f.name)
    return applied


async def checkpoint(conn: asyncpg.Connection | asyncpg.Pool, consumer: str) -> int:
    return await conn.fetchval("SELECT stream_seq FROM checkpoint WHERE consumer = $1", consumer) or 0


async def _load(conn: asyncpg.Connection, keys: set[Key]) -> dict[Key, ParticipantState]:
    if not keys:
        return {}
    procs, parts = zip(*keys, strict=True)
    rows = await conn.fetch(
        "SELECT p.process_id, p.participant, p.profile::text AS profile, p.channels::text AS channels, "
        "p.withdrawn, p.first_seen, p.last_seen FROM participants p "
        "JOIN unnest($1::text[], $2::text[]) AS k(process_id, participant) USING (process_id, participant)",
        list(procs), list(parts),
    )
    return {
        (r["process_id"], r["participant"]): ParticipantState(
            profile=Profile.model_validate_json(r["profile"]),
            channels=orjson.loads(r["channels"]),
            withdrawn=r["withdrawn"],
            first_seen=r["first_seen"],
            last_seen=r["last_seen"],
        )
        for r in rows
    }


async def apply_batch(
    pool: asyncpg.Pool, consumer: str, events: Sequence[tuple[int, Envelope]], reached: int
) -> int:
    """Project ``events`` (stream sequence, event) and move the checkpoint to ``reached``.

    One transaction. Returns how many events were new (above the checkpoint).
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO checkpoint (consumer) VALUES ($1) ON CONFLICT DO NOTHING", consumer)
        done = await conn.fetchval(
            "SELECT stream_seq FROM checkpoint WHERE consumer = $1 FOR UPDATE", consumer)
        fresh = [ev for seq, ev in events if seq > done]
        if fresh:
            changes = project(fresh, await _load(conn, keys_of(fresh)))
            await _write(conn, changes)
        if reached > done:
            await conn.execute(
                "UPDATE checkpoint SET stream_seq = $2, updated_at = now() WHERE consumer = $1", consumer, reached)
        return len(fresh)


async def _write(conn: asyncpg.Connection, changes: Changes) -> None:
    if changes.participants:
        keys, states = zip(*changes.participants.items(), strict=True)
        await conn.execute(
            """
            INSERT INTO participants (process_id, participant, profile, channels, withdrawn, first_seen, last_seen)
            SELECT p, k, pr::jsonb, ch::jsonb, w, f, l
              FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[],
                          $6::timestamptz[], $7::timestamptz[]) AS t(p, k, pr, ch, w, f, l)
            ON CONFLICT (process_id, participant) DO UPDATE
               SET profile = EXCLUDED.profile, channels = EXCLUDED.channels, withdrawn = EXCLUDED.withdrawn,
                   first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen
            """,
            [k[0] for k in keys], [k[1] for k in keys],
            [s.profile.model_dump_json(exclude_none=True) for s in states],
            [orjson.dumps(s.channels).decode() for s in states],
            [s.withdrawn for s in states], [s.first_seen for s in states], [s.last_seen for s in states],
        )
    if changes.categories:
        (procs, dims, cats), deltas = _columns(changes.categories, 3)
        await conn.execute(
            """
            INSERT INTO category_counts AS c (process_id, dimension, category, participants)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
            ON CONFLICT (process_id, dimension, category) DO UPDATE
               SET participants = c.participants + EXCLUDED.participants
            """,
            procs, dims, cats, deltas,
        )
    if changes.engagements:
        (procs, channels), deltas = _columns(changes.engagements, 2)
        await conn.execute(
            """
            INSERT INTO engagement_counts AS e (process_id, channel, engagements)
            SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
            ON CONFLICT (process_id, channel) DO UPDATE SET engagements = e.engagements + EXCLUDED.engagements
            """,
            procs, channels, deltas,
        )
    for proc, (first, last) in changes.event_times.items():
        await conn.execute(
            """
            INSERT INTO totals AS t (process_id, participants, engagements, first_event, last_event)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (process_id) DO UPDATE
               SET participants = t.participants + EXCLUDED.participants,
                   engagements = t.engagements + EXCLUDED.engagements,
                   first_event = LEAST(t.first_event, EXCLUDED.first_event),
                   last_event = GREATEST(t.last_event, EXCLUDED.last_event)
            """,
            proc, changes.totals[(proc, "participants")], changes.totals[(proc, "engagements")], first, last,
        )


def _columns(counter: Any, width: int) -> tuple[list[list[str]], list[int]]:
    items = sorted(counter.items())  # a fixed order keeps concurrent writers from deadlocking
    return [[k[i] for k, _ in items] for i in range(width)], [v for _, v in items]


async def coverage_rows(pool: asyncpg.Pool, process_id: str, consumer: str) -> dict[str, Any]:
    """Raw, unsuppressed counts for one process, and the stream sequence they reflect.

    One snapshot, so the sequence and the counts always belong together.
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sequence = await checkpoint(conn, consumer)
        total = await conn.fetchrow("SELECT * FROM totals WHERE process_id = $1", process_id)
        cats = await conn.fetch(
            "SELECT dimension, category, participants FROM category_counts "
            "WHERE process_id = $1 AND participants <> 0 ORDER BY dimension, category", process_id)
        chans = await conn.fetch(
            "SELECT channel, engagements FROM engagement_counts WHERE process_id = $1 AND engagements <> 0 "
            "ORDER BY channel", process_id)
    return {
        "sequence": sequence,
        "participants": total["participants"] if total else 0,
        "engagements": total["engagements"] if total else 0,
        "first_event": total["first_event"] if total else None,
        "last_event": total["last_event"] if total else None,
        "categories": [(r["dimension"], r["category"], r["participants"]) for r in cats],
        "channels": {r["channel"]: r["engagements"] for r in chans},
    }


async def processes(pool: asyncpg.Pool) -> list[str]:
    return [r["process_id"] for r in await pool.fetch("SELECT process_id FROM totals ORDER BY process_id")]

