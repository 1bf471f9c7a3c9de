"""Reading the read models: what the answers are made of, each read in one snapshot.

``counts`` is the SQL twin of the one count builder (:func:`projection.counts.counts_of`):
it reads the running counters the batches keep, and counts the plan's derived groups with
the plan's own rule (:meth:`shared.plan.Plan.derived_rules`) in SQL.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from services.analytics.projection.counts import Counts
from services.analytics.projection.fold import ParticipantState, category_item, state_as_of, utc_day
from shared.errors import ConflictError
from shared.logging import get_logger
from shared.plan import NO_RULES, DerivedRules, Plan
from shared.profile import Profile

if TYPE_CHECKING:
    from services.analytics.store.schema import Connection

log = get_logger("engage.analytics.reads")


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
    """The whole process's counts from the counters, in one snapshot with the sequence they reflect.

    Every read is of counters whose size depends on the plan, never on the people: the plan's
    derived groups are among the category counters, kept by its rules (``writes.ensure_derived``).
    Counters kept by another plan's rules (a projector with another plan file) are not trusted:
    those groups are counted from the participants instead, slowly, and a warning says why.
    """
    rules = plan.derived_rule_list() if plan else NO_RULES
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        sequence, projected_at = await reached(conn, consumer)
        total = await conn.fetchrow("SELECT * FROM totals WHERE process_id = $1", process_id)
        cats = await conn.fetch(
            "SELECT dimension, category, participants FROM category_counts WHERE process_id = $1 AND participants <> 0",
            process_id,
        )
        chans = await conn.fetch(
            "SELECT channel, engagements, participants FROM engagement_counts WHERE process_id = $1 "
            "AND (engagements <> 0 OR participants <> 0)",
            process_id,
        )
        categories = {(r["dimension"], r["category"]): r["participants"] for r in cats}
        others = await _counted_by_other_rules(conn, process_id, rules)
        if others is not None:
            categories = {key: n for key, n in categories.items() if key[0] not in others}
            categories.update((await derived_scan(conn, process_id, rules))[0])
    return Counts(
        sequence=sequence,
        projected_at=projected_at,
        participants=total["participants"] if total else 0,
        engagements=total["engagements"] if total else 0,
        channels={r["channel"]: r["engagements"] for r in chans if r["engagements"]},
        categories=categories,
        profiled=total["profiled"] if total else 0,
        people_by_channel={r["channel"]: r["participants"] for r in chans if r["participants"]},
        first_event=total["first_event"] if total else None,
        last_event=total["last_event"] if total else None,
    )


def rules_text(rules: DerivedRules) -> str:
    """Derived rules as canonical JSON: what ``derived_rules`` holds, to compare with a plan's."""
    return orjson.dumps([[d, c, [[src, sorted(codes)] for src, codes in when]] for d, c, when in rules.rules]).decode()


async def _counted_by_other_rules(conn: Connection, process_id: str, rules: DerivedRules) -> set[str] | None:
    """None if the derived counters were kept by ``rules``; else the derived dimensions they
    were kept by (not to be trusted: the caller counts ``rules`` from the participants)."""
    stored = await conn.fetchval("SELECT rules FROM derived_rules WHERE process_id = $1", process_id)
    if stored == rules_text(rules) or (stored is None and not rules):
        return None
    if stored is not None:
        log.warning("derived_counted_from_participants", process_id=process_id, reason="other rules")
    return {d for d, _, _ in orjson.loads(stored)} if stored else set()


async def derived_scan(
    conn: Connection, process_id: str, rules: DerivedRules
) -> tuple[Counter[tuple[str, str]], Counter[tuple[int, str, str]]]:
    """The plan's derived groups counted from every counted participant (inside a transaction):
    (dimension, category) -> participants, and the same under the UTC day of each one's last
    engagement. Only for rules the counters were not kept by: this reads every participant."""
    now: Counter[tuple[str, str]] = Counter()
    dated: Counter[tuple[int, str, str]] = Counter()
    if not rules:
        return now, dated
    query = (
        "SELECT profile::text AS profile, last_seen FROM participants "
        "WHERE process_id = $1 AND NOT withdrawn AND profile <> '{}'::jsonb"
    )
    async for r in conn.cursor(query, process_id, prefetch=5000):
        day = utc_day(r["last_seen"])
        for dimension, category in rules.groups(Profile.model_validate_json(r["profile"]).categories):
            now[(dimension, category)] += 1
            dated[(day, dimension, category)] += 1
    return now, dated


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


class AsOfNeedsRebuild(ConflictError):
    """The read models were projected before they kept what as-of answers need (HTTP 409)."""


@dataclass(frozen=True)
class Dated:
    """What the counts as of a moment are made of, read in one snapshot (``answers.asof``)."""

    sequence: int
    projected_at: datetime | None
    base: dict[str, int]  # the dated counters of the days before the moment's UTC day
    # Rows, as plain tuples (they go to another process to be folded, ``answers.asof``):
    whole: list[tuple[Any, ...]]  # participants as they are now (``_PARTICIPANT``'s columns)
    between: list[tuple[Any, ...]]  # (participant, at, channel, profile) of those engaged on both sides
    first_event: datetime | None
    last_event: datetime | None


# An as-of answer is the counts of one moment: the participants' days (for over-time answers) are not read.
_PARTICIPANT = (
    "SELECT participant, profile::text AS profile, channels::text AS channels, "
    "first_channel, first_seen, last_seen FROM participants WHERE process_id = $1 AND NOT withdrawn"
)


async def dated(
    pool: asyncpg.Pool,
    process_id: str,
    consumer: str,
    moment: datetime,
    tz: tzinfo,
    rules: DerivedRules,
    *,
    everyone: tuple[str, str] | bool = False,
) -> Dated:
    """The dated counters before ``moment``'s UTC day and the states of the participants seen since,
    as of ``moment``; with ``everyone`` (True, or a (dimension, category) a segment narrows to)
    the states of all participants as of ``moment`` instead, and no counters.

    A participant last seen by ``moment`` is as they are now; one seen before and after it is
    folded from their engagements up to it. Withdrawn participants are in nothing, whatever
    the moment. Reads counters, one day's participants and the few engaged on both sides of
    ``moment``: never every participant, unless ``everyone``.
    """
    day = utc_day(moment)
    day_start = datetime.fromtimestamp(day * 86_400, UTC)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM as_of_needs_rebuild)"):
            raise AsOfNeedsRebuild(
                "these read models were made before they kept what as-of answers need: run `engage rebuild` once"
            )
        sequence, projected_at = await reached(conn, consumer)
        base: dict[str, int] = {}
        if everyone is False:
            rows = await conn.fetch(
                "SELECT item, sum(n)::bigint AS n FROM dated_counts WHERE process_id = $1 AND day < $2 "
                "GROUP BY item HAVING sum(n) <> 0",
                process_id,
                day,
            )
            base = {r["item"]: r["n"] for r in rows}
            others = await _counted_by_other_rules(conn, process_id, rules)
            if others is not None:
                base = {k: n for k, n in base.items() if not k.startswith(tuple(map(category_item, others)))}
                for (d_day, dimension, category), n in (await derived_scan(conn, process_id, rules))[1].items():
                    if d_day < day:
                        item = category_item(dimension, category)
                        base[item] = base.get(item, 0) + n
            whole = await conn.fetch(
                f"{_PARTICIPANT} AND last_seen >= $2 AND last_seen <= $3", process_id, day_start, moment
            )
        else:
            narrow = "" if everyone is True else " AND (profile -> $3) ? $4"
            args = () if everyone is True else everyone
            whole = await conn.fetch(f"{_PARTICIPANT} AND last_seen <= $2{narrow}", process_id, moment, *args)
        # Engaged before and after the moment: their state then, from their engagements.
        between = await conn.fetch(
            # Each one's engagements looked up by their key (OFFSET 0 keeps the planner from
            # turning the look-ups into a scan of every engagement kept).
            "SELECT p.participant, t.at, t.channel, t.profile::text AS profile FROM participants p "
            "CROSS JOIN LATERAL (SELECT at, channel, profile, sequence FROM touches "
            "  WHERE touches.process_id = p.process_id AND touches.participant = p.participant AND at <= $2 "
            "  OFFSET 0) AS t "
            "WHERE p.process_id = $1 AND NOT p.withdrawn AND p.first_seen < p.last_seen "
            "AND tstzrange(p.first_seen, p.last_seen, '[)') @> $2::timestamptz ORDER BY p.participant, t.sequence",
            process_id,
            moment,
        )
        span = await conn.fetchrow(
            "SELECT min(at) AS first, max(at) AS last FROM event_times WHERE process_id = $1 AND at <= $2",
            process_id,
            moment,
        )
    assert span is not None  # an aggregate always answers one row
    now: list[tuple[Any, ...]] = [tuple(r) for r in whole]
    then: list[tuple[Any, ...]] = [tuple(r) for r in between]
    return Dated(sequence, projected_at, base, now, then, span["first"], span["last"])


def states_as_of(found: Dated, moment: datetime, tz: tzinfo) -> list[ParticipantState]:
    """The participants' states as of ``moment``, from what ``dated`` read (pure: no I/O)."""
    states = [
        ParticipantState(
            profile=Profile.model_validate_json(profile),
            channels=orjson.loads(channels),
            first_channel=first_channel,
            first_seen=first_seen,
            last_seen=last_seen,
        )
        for _, profile, channels, first_channel, first_seen, last_seen in found.whole
    ]
    grouped: dict[str, list[tuple[datetime, str, Profile | None]]] = {}
    for participant, at, channel, profile in found.between:
        grouped.setdefault(participant, []).append(
            (at, channel, None if profile is None else Profile.model_validate_json(profile))
        )
    for engagements in grouped.values():
        state = state_as_of(engagements, moment, tz)
        if state is not None:
            states.append(state)
    return states
