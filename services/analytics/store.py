"""Postgres for analytics: migrations, the batch transaction, and the coverage reads.

A batch's read-model changes and the stream sequence it reached commit in one
transaction. The checkpoint row is locked first and events at or below it are skipped,
so a redelivered message, a retried batch or a second projector counts nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, tzinfo
from importlib import resources
from typing import Any

import asyncpg
import orjson

from services.analytics import activity
from services.analytics.projection import DEFAULT_TZ, Changes, Key, ParticipantState, keys_of, project
from shared.events import Envelope
from shared.profile import Profile

SCHEMA = "analytics"
_MIGRATION_LOCK = 7_310_001


async def open_pool(dsn: str, schema: str = SCHEMA, max_size: int = 8) -> asyncpg.Pool:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    finally:
        await admin.close()
    return await asyncpg.create_pool(dsn, min_size=1, max_size=max_size, server_settings={"search_path": schema})


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
    return (await reached(conn, consumer))[0]


async def reached(conn: asyncpg.Connection | asyncpg.Pool, consumer: str) -> tuple[int, datetime | None]:
    """The stream sequence the read models reflect, and when they last moved."""
    mark = await conn.fetchrow("SELECT stream_seq, updated_at FROM checkpoint WHERE consumer = $1", consumer)
    return (mark["stream_seq"], mark["updated_at"]) if mark else (0, None)


async def load(conn: asyncpg.Connection, keys: set[Key]) -> dict[Key, ParticipantState]:
    if not keys:
        return {}
    procs, parts = zip(*keys, strict=True)
    rows = await conn.fetch(
        "SELECT p.process_id, p.participant, p.profile::text AS profile, p.channels::text AS channels, "
        "p.days::text AS days, p.first_channel, p.withdrawn, p.first_seen, p.last_seen FROM participants p "
        "JOIN unnest($1::text[], $2::text[]) AS k(process_id, participant) USING (process_id, participant)",
        list(procs), list(parts),
    )
    return {
        (r["process_id"], r["participant"]): ParticipantState(
            profile=Profile.model_validate_json(r["profile"]),
            channels=orjson.loads(r["channels"]),
            days=orjson.loads(r["days"]),
            first_channel=r["first_channel"],
            withdrawn=r["withdrawn"],
            first_seen=r["first_seen"],
            last_seen=r["last_seen"],
        )
        for r in rows
    }


async def apply_batch(
    pool: asyncpg.Pool, consumer: str, events: Sequence[tuple[int, Envelope]], reached: int,
    tz: tzinfo = DEFAULT_TZ,
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
            changes = project(fresh, await load(conn, keys_of(fresh)), tz)
            await write(conn, changes)
            await write_activity(conn, [(seq, ev) for seq, ev in events if seq > done])
        if reached > done:
            await conn.execute(
                "UPDATE checkpoint SET stream_seq = $2, updated_at = now() WHERE consumer = $1", consumer, reached)
        return len(fresh)


async def write(conn: asyncpg.Connection, changes: Changes) -> None:
    if changes.participants:
        keys, states = zip(*changes.participants.items(), strict=True)
        await conn.execute(
            """
            INSERT INTO participants (process_id, participant, profile, channels, days, first_channel,
                                      withdrawn, first_seen, last_seen)
            SELECT p, k, pr::jsonb, ch::jsonb, d::jsonb, fc, w, f, l
              FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bool[],
                          $8::timestamptz[], $9::timestamptz[]) AS t(p, k, pr, ch, d, fc, w, f, l)
            ON CONFLICT (process_id, participant) DO UPDATE
               SET profile = EXCLUDED.profile, channels = EXCLUDED.channels, days = EXCLUDED.days,
                   first_channel = EXCLUDED.first_channel, withdrawn = EXCLUDED.withdrawn,
                   first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen
            """,
            [k[0] for k in keys], [k[1] for k in keys],
            [s.profile.model_dump_json(exclude_none=True) for s in states],
            [orjson.dumps(s.channels).decode() for s in states],
            [orjson.dumps(s.days).decode() for s in states],
            [s.first_channel for s in states],
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
    if changes.daily or changes.firsts:
        keys = sorted(set(changes.daily) | set(changes.firsts))
        await conn.execute(
            """
            INSERT INTO daily_counts AS d (process_id, day, channel, engagements, participants)
            SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::bigint[], $5::bigint[])
            ON CONFLICT (process_id, day, channel) DO UPDATE
               SET engagements = d.engagements + EXCLUDED.engagements,
                   participants = d.participants + EXCLUDED.participants
            """,
            [k[0] for k in keys], [date.fromisoformat(k[1]) for k in keys], [k[2] for k in keys],
            [changes.daily[k] for k in keys], [changes.firsts[k] for k in keys],
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


async def write_activity(conn: asyncpg.Connection, events: Sequence[tuple[int, Envelope]]) -> None:
    """Remember where interviews take place, add the batch's feed items, keep the latest few."""
    scheduled = activity.regions_scheduled(ev for _, ev in events)
    if scheduled:
        keys = sorted(scheduled)
        await conn.execute(
            """
            INSERT INTO interview_regions (process_id, interview_id, region)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
            ON CONFLICT (process_id, interview_id) DO UPDATE SET region = EXCLUDED.region
            """,
            [k[0] for k in keys], [k[1] for k in keys], [scheduled[k] for k in keys])
    items = activity.items(events, scheduled)
    # Interviews scheduled in earlier batches: their region is in the table.
    wanted = {(i.process_id, i.interview_id) for i in items if i.region is None and i.interview_id}
    if wanted:
        procs, ids = zip(*wanted, strict=True)
        rows = await conn.fetch(
            "SELECT process_id, interview_id, region FROM interview_regions "
            "JOIN unnest($1::text[], $2::text[]) AS k(process_id, interview_id) USING (process_id, interview_id)",
            list(procs), list(ids))
        found = {(r["process_id"], r["interview_id"]): r["region"] for r in rows}
        items = [replace(i, region=found.get((i.process_id, i.interview_id))) if i.region is None else i
                 for i in items]
    if not items:
        return
    await conn.execute(
        """
        INSERT INTO activity (process_id, sequence, kind, channel, region, topic, occurred_at, recorded_at)
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::timestamptz[], $8::timestamptz[])
        ON CONFLICT DO NOTHING
        """,
        [i.process_id for i in items], [i.sequence for i in items], [i.kind for i in items],
        [i.channel for i in items], [i.region for i in items], [i.topic for i in items],
        [i.occurred_at for i in items], [i.recorded_at for i in items])
    for process_id in {i.process_id for i in items}:
        await conn.execute(
            "DELETE FROM activity WHERE process_id = $1 AND sequence < ("
            "SELECT sequence FROM activity WHERE process_id = $1 ORDER BY sequence DESC OFFSET $2 LIMIT 1)",
            process_id, activity.KEEP - 1)


async def recent_activity(pool: asyncpg.Pool, process_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest feed items of a process, newest first."""
    rows = await pool.fetch(
        "SELECT kind, channel, region, topic, occurred_at, recorded_at FROM activity WHERE process_id = $1 "
        "ORDER BY sequence DESC LIMIT $2", process_id, limit)
    return [dict(r) for r in rows]


def _columns(counter: Any, width: int) -> tuple[list[list[str]], list[int]]:
    items = sorted(counter.items())  # a fixed order keeps concurrent writers from deadlocking
    return [[k[i] for k, _ in items] for i in range(width)], [v for _, v in items]


@dataclass
class Counts:
    """Participation counts of one process (or one segment of it), as the read models hold them."""

    sequence: int
    participants: int
    engagements: int
    channels: dict[str, int]
    categories: dict[tuple[str, str], int]  # (dimension, category) -> participants; see projection
    first_event: datetime | None = None
    last_event: datetime | None = None
    projected_at: datetime | None = None


async def counts(pool: asyncpg.Pool, process_id: str, consumer: str,
                 derived: Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]] | None = None) -> Counts:
    """The whole process's counts from the counters, in one snapshot with the sequence they reflect.

    ``derived``: dimension -> category -> {profile dimension: categories}; a participant is in
    a derived category if any listed answer is theirs (e.g. the mandated stakeholder groups).
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sequence, projected_at = await reached(conn, consumer)
        total = await conn.fetchrow("SELECT * FROM totals WHERE process_id = $1", process_id)
        cats = await conn.fetch(
            "SELECT dimension, category, participants FROM category_counts "
            "WHERE process_id = $1 AND participants <> 0", process_id)
        chans = await conn.fetch(
            "SELECT channel, engagements FROM engagement_counts WHERE process_id = $1 AND engagements <> 0",
            process_id)
        categories = {(r["dimension"], r["category"]): r["participants"] for r in cats}
        if derived:
            categories.update(await _derived_counts(conn, process_id, derived))
    return Counts(
        sequence=sequence,
        projected_at=projected_at,
        participants=total["participants"] if total else 0,
        engagements=total["engagements"] if total else 0,
        channels={r["channel"]: r["engagements"] for r in chans},
        categories=categories,
        first_event=total["first_event"] if total else None,
        last_event=total["last_event"] if total else None,
    )


async def _derived_counts(conn: asyncpg.Connection, process_id: str,
                          derived: Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]]) -> dict[tuple[str, str], int]:
    filters, args, names = [], [process_id], []
    for dimension, categories in derived.items():
        for category, when in categories.items():
            ors = []
            for source, wanted in when.items():
                args.extend([source, list(wanted)])
                ors.append(f"(profile -> ${len(args) - 1}) ?| ${len(args)}::text[]")
            filters.append(f"count(*) FILTER (WHERE {' OR '.join(ors) or 'false'})")
            names.append((dimension, category))
    if not filters:
        return {}
    row = await conn.fetchrow(
        f"SELECT {', '.join(filters)} FROM participants WHERE process_id = $1 AND NOT withdrawn", *args)
    return {name: row[i] for i, name in enumerate(names) if row[i]}


async def profiles_in(pool: asyncpg.Pool, process_id: str, consumer: str, dimension: str, category: str
                      ) -> tuple[int, list[tuple[Profile, dict[str, int]]]]:
    """The sequence reached, and every counted participant whose answer to ``dimension``
    includes ``category`` (a segment), read in one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sequence = await checkpoint(conn, consumer)
        rows = await conn.fetch(
            "SELECT profile::text AS profile, channels::text AS channels FROM participants "
            "WHERE process_id = $1 AND NOT withdrawn AND (profile -> $2) ? $3", process_id, dimension, category)
    return sequence, [(Profile.model_validate_json(r["profile"]), orjson.loads(r["channels"])) for r in rows]


async def daily(pool: asyncpg.Pool, process_id: str, consumer: str
                ) -> tuple[int, datetime | None, list[tuple[date, str, int, int]]]:
    """The sequence reached and when, and (day, channel, engagements, participants first reached), oldest first."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sequence, projected_at = await reached(conn, consumer)
        rows = await conn.fetch(
            "SELECT day, channel, engagements, participants FROM daily_counts "
            "WHERE process_id = $1 AND (engagements <> 0 OR participants <> 0) ORDER BY day, channel", process_id)
    return (sequence, projected_at,
            [(r["day"], r["channel"], r["engagements"], r["participants"]) for r in rows])


async def statuses(pool: asyncpg.Pool, process_id: str) -> dict[tuple[str, str], str]:
    rows = await pool.fetch("SELECT dimension, category, status FROM category_status WHERE process_id = $1",
                            process_id)
    return {(r["dimension"], r["category"]): r["status"] for r in rows}


async def save_statuses(pool: asyncpg.Pool, process_id: str, changed: Mapping[tuple[str, str], str],
                        sequence: int) -> None:
    if not changed:
        return
    keys = sorted(changed)
    await pool.execute(
        """
        INSERT INTO category_status AS s (process_id, dimension, category, status, sequence)
        SELECT $1, d, c, st, $5 FROM unnest($2::text[], $3::text[], $4::text[]) AS t(d, c, st)
        ON CONFLICT (process_id, dimension, category) DO UPDATE
           SET status = EXCLUDED.status, sequence = EXCLUDED.sequence, changed_at = now()
        """,
        process_id, [k[0] for k in keys], [k[1] for k in keys], [changed[k] for k in keys], sequence,
    )

