"""Writing the read models: the participants' states and the count changes of a batch.

Only the batch engine (``engine.batch``) calls these, inside the transaction that also
moves the checkpoint; announcing statuses remembers them with ``save_statuses``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from services.analytics.projection import activity
from services.analytics.projection.engages import Key
from services.analytics.projection.fold import (
    ENGAGEMENTS,
    PARTICIPANTS,
    PROFILED,
    Changes,
    ParticipantState,
    category_item,
)
from services.analytics.store import reads
from shared.events import Envelope
from shared.plan import NO_RULES, DerivedRules
from shared.profile import Profile

if TYPE_CHECKING:
    from services.analytics.store.schema import Connection


async def load(conn: Connection, keys: set[Key]) -> dict[Key, ParticipantState]:
    if not keys:
        return {}
    procs, parts = zip(*keys, strict=True)
    rows = await conn.fetch(
        "SELECT p.process_id, p.participant, p.profile::text AS profile, p.channels::text AS channels, "
        "p.days::text AS days, p.first_channel, p.withdrawn, p.first_seen, p.last_seen "
        # Each key looked up by the primary key (a lateral join): a hash join would read every participant.
        "FROM unnest($1::text[], $2::text[]) AS k(process_id, participant) CROSS JOIN LATERAL "
        "(SELECT * FROM participants WHERE process_id = k.process_id AND participant = k.participant LIMIT 1) AS p",
        list(procs),
        list(parts),
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


async def write(conn: Connection, changes: Changes) -> None:
    """Every change of a batch: the participants' states and what as-of answers need of them,
    and the counters."""
    await write_participants(conn, changes)
    await write_counters(conn, changes)


async def write_participants(conn: Connection, changes: Changes) -> None:
    """The participants' states, their engagements (``touches``) and the events' times."""
    if changes.forget:
        gone = sorted(changes.forget)
        await conn.execute(
            "DELETE FROM touches WHERE (process_id, participant) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [k[0] for k in gone],
            [k[1] for k in gone],
        )
    if changes.touches:
        rows = changes.touches  # with stream sequences by now (``engine.batch``)
        await conn.execute(
            """
            INSERT INTO touches (process_id, participant, sequence, at, channel, profile)
            SELECT p, k, s, a, c, pr::jsonb
              FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], $5::text[], $6::text[])
                   AS t(p, k, s, a, c, pr)
            """,
            [key[0] for key, *_ in rows],
            [key[1] for key, *_ in rows],
            [seq for _, seq, *_ in rows],
            [at for _, _, at, _, _ in rows],
            [channel for *_, channel, _ in rows],
            [None if profile is None else profile.model_dump_json(exclude_none=True) for *_, profile in rows],
        )
    if changes.moments:
        moments = sorted(changes.moments)
        await conn.execute(
            "INSERT INTO event_times (process_id, at) SELECT * FROM unnest($1::text[], $2::timestamptz[]) "
            "ON CONFLICT DO NOTHING",
            [m[0] for m in moments],
            [m[1] for m in moments],
        )
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
            [k[0] for k in keys],
            [k[1] for k in keys],
            [s.profile.model_dump_json(exclude_none=True) for s in states],
            [orjson.dumps(s.channels).decode() for s in states],
            [orjson.dumps(s.days).decode() for s in states],
            [s.first_channel for s in states],
            [s.withdrawn for s in states],
            [s.first_seen for s in states],
            [s.last_seen for s in states],
        )


async def write_counters(conn: Connection, changes: Changes) -> None:
    """The count changes: added to the counters (of one batch, or of many summed)."""
    if changes.categories:
        (procs, dims, cats), deltas = _columns(changes.categories, 3)
        await conn.execute(
            """
            INSERT INTO category_counts AS c (process_id, dimension, category, participants)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
            ON CONFLICT (process_id, dimension, category) DO UPDATE
               SET participants = c.participants + EXCLUDED.participants
            """,
            procs,
            dims,
            cats,
            deltas,
        )
    if changes.engagements or changes.people:
        channels = sorted(set(changes.engagements) | set(changes.people))  # a fixed order: no deadlocks
        await conn.execute(
            """
            INSERT INTO engagement_counts AS e (process_id, channel, engagements, participants)
            SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
            ON CONFLICT (process_id, channel) DO UPDATE
               SET engagements = e.engagements + EXCLUDED.engagements,
                   participants = e.participants + EXCLUDED.participants
            """,
            [k[0] for k in channels],
            [k[1] for k in channels],
            [changes.engagements[k] for k in channels],
            [changes.people[k] for k in channels],
        )
    if changes.daily or changes.firsts:
        days = sorted(set(changes.daily) | set(changes.firsts))
        await conn.execute(
            """
            INSERT INTO daily_counts AS d (process_id, day, channel, engagements, participants)
            SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::bigint[], $5::bigint[])
            ON CONFLICT (process_id, day, channel) DO UPDATE
               SET engagements = d.engagements + EXCLUDED.engagements,
                   participants = d.participants + EXCLUDED.participants
            """,
            [k[0] for k in days],
            [date.fromisoformat(k[1]) for k in days],
            [k[2] for k in days],
            [changes.daily[k] for k in days],
            [changes.firsts[k] for k in days],
        )
    for proc, (first, last) in changes.event_times.items():
        await conn.execute(
            """
            INSERT INTO totals AS t (process_id, participants, engagements, profiled, first_event, last_event)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (process_id) DO UPDATE
               SET participants = t.participants + EXCLUDED.participants,
                   engagements = t.engagements + EXCLUDED.engagements,
                   profiled = t.profiled + EXCLUDED.profiled,
                   first_event = LEAST(t.first_event, EXCLUDED.first_event),
                   last_event = GREATEST(t.last_event, EXCLUDED.last_event)
            """,
            proc,
            changes.totals[(proc, PARTICIPANTS)],
            changes.totals[(proc, ENGAGEMENTS)],
            changes.totals[(proc, PROFILED)],
            first,
            last,
        )
    if changes.dated:  # what as-of answers are made of (``projection.fold._dated``)
        (procs, utc_days, items), deltas = _columns(changes.dated, 3)
        await conn.execute(
            """
            INSERT INTO dated_counts AS d (process_id, day, item, n)
            SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[])
            ON CONFLICT (process_id, day, item) DO UPDATE SET n = d.n + EXCLUDED.n
            """,
            procs,
            utc_days,
            items,
            deltas,
        )


async def write_activity(conn: Connection, events: Sequence[tuple[int, Envelope]]) -> None:
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
            [k[0] for k in keys],
            [k[1] for k in keys],
            [scheduled[k] for k in keys],
        )
    items = activity.items(events, scheduled)
    # Interviews scheduled in earlier batches: their region is in the table.
    wanted = {(i.process_id, i.interview_id) for i in items if i.region is None and i.interview_id}
    if wanted:
        procs, ids = zip(*wanted, strict=True)
        rows = await conn.fetch(
            "SELECT process_id, interview_id, region FROM interview_regions "
            "JOIN unnest($1::text[], $2::text[]) AS k(process_id, interview_id) USING (process_id, interview_id)",
            list(procs),
            list(ids),
        )
        found = {(r["process_id"], r["interview_id"]): r["region"] for r in rows}
        items = [replace(i, region=found.get((i.process_id, i.interview_id))) if i.region is None else i for i in items]
    if not items:
        return
    await conn.execute(
        """
        INSERT INTO activity (process_id, sequence, kind, channel, region, topic, occurred_at, recorded_at)
        SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::timestamptz[], $8::timestamptz[])
        ON CONFLICT DO NOTHING
        """,
        [i.process_id for i in items],
        [i.sequence for i in items],
        [i.kind for i in items],
        [i.channel for i in items],
        [i.region for i in items],
        [i.topic for i in items],
        [i.occurred_at for i in items],
        [i.recorded_at for i in items],
    )
    for process_id in {i.process_id for i in items}:
        await conn.execute(
            "DELETE FROM activity WHERE process_id = $1 AND sequence < ("
            "SELECT sequence FROM activity WHERE process_id = $1 ORDER BY sequence DESC OFFSET $2 LIMIT 1)",
            process_id,
            activity.KEEP - 1,
        )


def _columns(counter: Any, width: int) -> tuple[list[list[str]], list[int]]:
    items = sorted(counter.items())  # a fixed order keeps concurrent writers from deadlocking
    return [[k[i] for k, _ in items] for i in range(width)], [v for _, v in items]


async def save_statuses(
    pool: asyncpg.Pool, process_id: str, changed: Mapping[tuple[str, str], str], sequence: int
) -> None:
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
        process_id,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [changed[k] for k in keys],
        sequence,
    )


async def ensure_derived(conn: Connection, derived: Mapping[str, DerivedRules]) -> list[str]:
    """Make the counters of the plans' derived groups agree with ``derived`` (each process's rules).

    The batch engine calls this inside each batch's transaction, with the checkpoint locked, so
    no batch counts by other rules meanwhile. A process whose counters were made by other rules
    (its plan changed, or a projector with another plan file counted) is counted again from its
    participants, once; returns those processes.
    """
    stored = {r["process_id"]: r["rules"] for r in await conn.fetch("SELECT process_id, rules FROM derived_rules")}
    recounted = []
    for proc in sorted(set(stored) | set(derived)):
        want = derived.get(proc, NO_RULES)
        text = reads.rules_text(want)
        if stored.get(proc) == text:
            continue
        old = {d for d, _, _ in orjson.loads(stored[proc])} if proc in stored else set()
        old |= {d for d, _, _ in want.rules}
        for dimension in sorted(old):
            await conn.execute("DELETE FROM category_counts WHERE process_id = $1 AND dimension = $2", proc, dimension)
            await conn.execute(
                "DELETE FROM dated_counts WHERE process_id = $1 AND starts_with(item, $2)",
                proc,
                category_item(dimension),
            )
        now, dated = await reads.derived_scan(conn, proc, want)
        changes = Changes(
            categories=Counter({(proc, d, c): n for (d, c), n in now.items()}),
            dated=Counter({(proc, day, category_item(d, c)): n for (day, d, c), n in dated.items()}),
        )
        await write(conn, changes)
        await conn.execute(
            "INSERT INTO derived_rules (process_id, rules) VALUES ($1, $2) "
            "ON CONFLICT (process_id) DO UPDATE SET rules = EXCLUDED.rules",
            proc,
            text,
        )
        recounted.append(proc)
    return recounted
