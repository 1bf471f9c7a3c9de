"""Reading the read models: what the answers are made of, each read in one snapshot.

``counts`` is the SQL twin of the one count builder (:func:`projection.counts.counts_of`):
it reads the running counters the batches keep, and counts the plan's derived groups with
the plan's own rule (:meth:`shared.plan.Plan.derived_rules`) in SQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from services.analytics.projection.counts import Counts
from services.analytics.projection.fold import ParticipantState
from shared.events import Channel
from shared.plan import Plan
from shared.profile import Profile

if TYPE_CHECKING:
    from services.analytics.store.schema import Connection


async def checkpoint(conn: Connection | asyncpg.Pool, consumer: str) -> int:
    return (await reached(conn, consumer))[0]


async def reached(conn: Connection | asyncpg.Pool, consumer: str) -> tuple[int, datetime | None]:
    """The stream sequence the read models reflect, and when they last moved."""
    mark = await conn.fetchrow("SELECT stream_seq, updated_at FROM checkpoint WHERE consumer = $1", consumer)
    return (mark["stream_seq"], mark["updated_at"]) if mark else (0, None)


async def recent_activity(pool: asyncpg.Pool, process_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest feed items of a process, newest first."""
    rows = await pool.fetch(
        "SELECT kind, channel, region, topic, occurred_at, recorded_at FROM activity WHERE process_id = $1 "
        "ORDER BY sequence DESC LIMIT $2",
        process_id,
        limit,
    )
    return [dict(r) for r in rows]


async def counts(pool: asyncpg.Pool, process_id: str, consumer: str, plan: Plan | None) -> Counts:
    """The whole process's counts from the counters, in one snapshot with the sequence they reflect,
    with the plan's derived groups (e.g. the mandated stakeholder groups) counted by its rule."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sequence, projected_at = await reached(conn, consumer)
        total = await conn.fetchrow("SELECT * FROM totals WHERE process_id = $1", process_id)
        cats = await conn.fetch(
            "SELECT dimension, category, participants FROM category_counts WHERE process_id = $1 AND participants <> 0",
            process_id,
        )
        chans = await conn.fetch(
            "SELECT channel, engagements FROM engagement_counts WHERE process_id = $1 AND engagements <> 0", process_id
        )
        categories = {(r["dimension"], r["category"]): r["participants"] for r in cats}
        derived = await _derived_counts(conn, process_id, plan.derived_rules() if plan else {})
        profiled = derived.pop(_PROFILED, 0)
        people = {c[len(_CHANNEL) :]: n for (_, c), n in list(derived.items()) if c.startswith(_CHANNEL)}
        categories.update({key: n for key, n in derived.items() if not key[1].startswith(_CHANNEL)})
    return Counts(
        sequence=sequence,
        projected_at=projected_at,
        participants=total["participants"] if total else 0,
        engagements=total["engagements"] if total else 0,
        channels={r["channel"]: r["engagements"] for r in chans},
        categories=categories,
        profiled=profiled,
        people_by_channel=people,
        first_event=total["first_event"] if total else None,
        last_event=total["last_event"] if total else None,
    )


_PROFILED = ("", "profiled")
_CHANNEL = "\x00channel:"  # a name no plan category can have


async def _derived_counts(
    conn: Connection, process_id: str, derived: Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]]
) -> dict[tuple[str, str], int]:
    """In one pass over the participants: the derived groups, those who gave a profile, and the
    participants per channel (keys ``_PROFILED`` and ``("", _CHANNEL + channel)``)."""
    filters: list[str] = ["count(*) FILTER (WHERE profile <> '{}'::jsonb)"]
    args: list[object] = [process_id]
    names: list[tuple[str, str]] = [_PROFILED]
    for channel in Channel:
        args.append(channel.value)
        filters.append(f"count(*) FILTER (WHERE coalesce((channels ->> ${len(args)})::int, 0) > 0)")
        names.append(("", _CHANNEL + channel.value))
    for dimension, categories in derived.items():
        for category, when in categories.items():
            ors = []
            for source, wanted in when.items():
                args.extend([source, list(wanted)])
                ors.append(f"(profile -> ${len(args) - 1}) ?| ${len(args)}::text[]")
            filters.append(f"count(*) FILTER (WHERE {' OR '.join(ors) or 'false'})")
            names.append((dimension, category))
    row = await conn.fetchrow(
        f"SELECT {', '.join(filters)} FROM participants WHERE process_id = $1 AND NOT withdrawn", *args
    )
    assert row is not None  # an aggregate always answers one row
    return {name: row[i] for i, name in enumerate(names) if row[i]}


async def states_in(
    pool: asyncpg.Pool, process_id: str, consumer: str, narrow: tuple[str, str] | None
) -> tuple[int, datetime | None, list[ParticipantState]]:
    """The sequence reached and when, and the state of every counted participant whose answer to
    ``narrow``'s dimension includes its category (all of them if None), read in one snapshot.
    Segments narrow here and decide with :func:`answers.segments.in_segment`."""
    where = "" if narrow is None else " AND (profile -> $2) ? $3"
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sequence, projected_at = await reached(conn, consumer)
        rows = await conn.fetch(
            "SELECT profile::text AS profile, channels::text AS channels, days::text AS days, first_channel, "
            f"first_seen, last_seen FROM participants WHERE process_id = $1 AND NOT withdrawn{where}",
            process_id,
            *(narrow or ()),
        )
    return (
        sequence,
        projected_at,
        [
            ParticipantState(
                profile=Profile.model_validate_json(r["profile"]),
                channels=orjson.loads(r["channels"]),
                days=orjson.loads(r["days"]),
                first_channel=r["first_channel"],
                first_seen=r["first_seen"],
                last_seen=r["last_seen"],
            )
            for r in rows
        ],
    )


async def daily(
    pool: asyncpg.Pool, process_id: str, consumer: str
) -> tuple[int, datetime | None, list[tuple[date, str, int, int]]]:
    """The sequence reached and when, and (day, channel, engagements, participants first reached), oldest first."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sequence, projected_at = await reached(conn, consumer)
        rows = await conn.fetch(
            "SELECT day, channel, engagements, participants FROM daily_counts "
            "WHERE process_id = $1 AND (engagements <> 0 OR participants <> 0) ORDER BY day, channel",
            process_id,
        )
    return (sequence, projected_at, [(r["day"], r["channel"], r["engagements"], r["participants"]) for r in rows])


async def statuses(pool: asyncpg.Pool, process_id: str) -> dict[tuple[str, str], str]:
    rows = await pool.fetch("SELECT dimension, category, status FROM category_status WHERE process_id = $1", process_id)
    return {(r["dimension"], r["category"]): r["status"] for r in rows}


async def rounding_secret(pool: asyncpg.Pool) -> bytes:
    """The rounding secret, made on first use (two instances starting at once agree on one)."""
    await pool.execute(
        "INSERT INTO rounding_secret (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING", secrets.token_bytes(32)
    )
    secret: bytes = await pool.fetchval("SELECT secret FROM rounding_secret WHERE id = 1")
    return secret
