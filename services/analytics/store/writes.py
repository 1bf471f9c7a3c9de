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


# Every write of a batch in one statement (one round trip to PostgreSQL, however many tables
# move): each table's change is a data-modifying WITH of its own, fed arrays that may be empty.
# They all see the snapshot the statement began with, and no two of them write the same row:
# touches are forgotten only for those who withdrew, and added only for those who did not;
# the feed's trim deletes only rows that were there before the batch, the newest of them kept
# up to ``activity.KEEP`` with the batch's own (which come later on the log than any of them).
_WRITE = """
WITH
forgotten AS (
    DELETE FROM touches WHERE (process_id, participant) IN (SELECT * FROM unnest($1::text[], $2::text[]))
),
touched AS (
    INSERT INTO touches (process_id, participant, sequence, at, channel, profile)
    SELECT p, k, s, a, c, pr::jsonb
      FROM unnest($3::text[], $4::text[], $5::bigint[], $6::timestamptz[], $7::text[], $8::text[])
           AS t(p, k, s, a, c, pr)
),
moments AS (
    INSERT INTO event_times (process_id, at) SELECT * FROM unnest($9::text[], $10::timestamptz[])
    ON CONFLICT DO NOTHING
),
people AS (
    INSERT INTO participants (process_id, participant, profile, channels, days, first_channel,
                              withdrawn, first_seen, last_seen)
    SELECT p, k, pr::jsonb, ch::jsonb, d::jsonb, fc, w, f, l
      FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::bool[],
                  $18::timestamptz[], $19::timestamptz[]) AS t(p, k, pr, ch, d, fc, w, f, l)
    ON CONFLICT (process_id, participant) DO UPDATE
       SET profile = EXCLUDED.profile, channels = EXCLUDED.channels, days = EXCLUDED.days,
           first_channel = EXCLUDED.first_channel, withdrawn = EXCLUDED.withdrawn,
           first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen
),
categories AS (
    INSERT INTO category_counts AS c (process_id, dimension, category, participants)
    SELECT * FROM unnest($20::text[], $21::text[], $22::text[], $23::bigint[])
    ON CONFLICT (process_id, dimension, category) DO UPDATE
       SET participants = c.participants + EXCLUDED.participants
),
channels AS (
    INSERT INTO engagement_counts AS e (process_id, channel, engagements, participants)
    SELECT * FROM unnest($24::text[], $25::text[], $26::bigint[], $27::bigint[])
    ON CONFLICT (process_id, channel) DO UPDATE
       SET engagements = e.engagements + EXCLUDED.engagements,
           participants = e.participants + EXCLUDED.participants
),
days AS (
    INSERT INTO daily_counts AS d (process_id, day, channel, engagements, participants)
    SELECT * FROM unnest($28::text[], $29::date[], $30::text[], $31::bigint[], $32::bigint[])
    ON CONFLICT (process_id, day, channel) DO UPDATE
       SET engagements = d.engagements + EXCLUDED.engagements,
           participants = d.participants + EXCLUDED.participants
),
totalled AS (
    INSERT INTO totals AS t (process_id, participants, engagements, profiled, first_event, last_event)
    SELECT * FROM unnest($33::text[], $34::bigint[], $35::bigint[], $36::bigint[], $37::timestamptz[],
                         $38::timestamptz[])
    ON CONFLICT (process_id) DO UPDATE
       SET participants = t.participants + EXCLUDED.participants,
           engagements = t.engagements + EXCLUDED.engagements,
           profiled = t.profiled + EXCLUDED.profiled,
           first_event = LEAST(t.first_event, EXCLUDED.first_event),
           last_event = GREATEST(t.last_event, EXCLUDED.last_event)
),
dated AS (
    INSERT INTO dated_counts AS d (process_id, day, item, n)
    SELECT * FROM unnest($39::text[], $40::int[], $41::text[], $42::bigint[])
    ON CONFLICT (process_id, day, item) DO UPDATE SET n = d.n + EXCLUDED.n
),
regions AS (
    INSERT INTO interview_regions (process_id, interview_id, region)
    SELECT * FROM unnest($43::text[], $44::text[], $45::text[])
    ON CONFLICT (process_id, interview_id) DO UPDATE SET region = EXCLUDED.region
),
feed AS (
    INSERT INTO activity (process_id, sequence, kind, channel, region, topic, occurred_at, recorded_at)
    SELECT * FROM unnest($46::text[], $47::bigint[], $48::text[], $49::text[], $50::text[], $51::text[],
                         $52::timestamptz[], $53::timestamptz[])
    ON CONFLICT DO NOTHING
    RETURNING process_id
),
trimmed AS (
    DELETE FROM activity a
     USING (SELECT process_id, count(*) AS added FROM feed GROUP BY process_id) AS b
     WHERE a.process_id = b.process_id
       AND (b.added >= $54 OR a.sequence <= (SELECT x.sequence FROM activity x WHERE x.process_id = b.process_id
                                             ORDER BY x.sequence DESC OFFSET $54 - b.added LIMIT 1))
),
moved AS (
    UPDATE checkpoint SET stream_seq = $56, updated_at = now() WHERE consumer = $55 AND stream_seq < $56
)
SELECT 1
"""


async def write(
    conn: Connection,
    changes: Changes,
    *,
    counters: bool = True,
    feed: tuple[Mapping[tuple[str, str], str], Sequence[activity.Item]] | None = None,
    checkpoint: tuple[str, int] | None = None,
) -> None:
    """Every change of a batch in one statement: the participants' states and what as-of answers
    need of them, the counters (not with ``counters=False``: a rebuild sums them, see
    ``engine.batch``), the dashboard's feed (``activity_of``), and the checkpoint moved to
    ``(consumer, sequence)``."""
    gone = sorted(changes.forget)
    touches = changes.touches  # with stream sequences by now (``engine.batch``)
    moments = sorted(changes.moments)
    keys, states = zip(*changes.participants.items(), strict=True) if changes.participants else ((), ())
    counted = changes if counters else Changes()
    (cat_procs, dims, cats), cat_deltas = _columns(counted.categories, 3)
    channels = sorted(set(counted.engagements) | set(counted.people))  # a fixed order: no deadlocks
    days = sorted(set(counted.daily) | set(counted.firsts))
    procs = sorted(counted.event_times)
    (dated_procs, utc_days, items), dated_deltas = _columns(counted.dated, 3)
    regions, feed_items = feed if feed is not None else ({}, ())
    region_keys = sorted(regions)
    consumer, reached = checkpoint if checkpoint is not None else ("", 0)
    await conn.execute(
        _WRITE,
        [k[0] for k in gone],
        [k[1] for k in gone],
        [key[0] for key, *_ in touches],
        [key[1] for key, *_ in touches],
        [seq for _, seq, *_ in touches],
        [at for _, _, at, _, _ in touches],
        [channel for *_, channel, _ in touches],
        [None if profile is None else profile.model_dump_json(exclude_none=True) for *_, profile in touches],
        [m[0] for m in moments],
        [m[1] for m in moments],
        [k[0] for k in keys],
        [k[1] for k in keys],
        [st.profile.model_dump_json(exclude_none=True) for st in states],
        [orjson.dumps(st.channels).decode() for st in states],
        [orjson.dumps(st.days).decode() for st in states],
        [st.first_channel for st in states],
        [st.withdrawn for st in states],
        [st.first_seen for st in states],
        [st.last_seen for st in states],
        cat_procs,
        dims,
        cats,
        cat_deltas,
        [k[0] for k in channels],
        [k[1] for k in channels],
        [counted.engagements[k] for k in channels],
        [counted.people[k] for k in channels],
        [k[0] for k in days],
        [date.fromisoformat(k[1]) for k in days],
        [k[2] for k in days],
        [counted.daily[k] for k in days],
        [counted.firsts[k] for k in days],
        procs,
        [counted.totals[(p, PARTICIPANTS)] for p in procs],
        [counted.totals[(p, ENGAGEMENTS)] for p in procs],
        [counted.totals[(p, PROFILED)] for p in procs],
        [counted.event_times[p][0] for p in procs],
        [counted.event_times[p][1] for p in procs],
        dated_procs,
        utc_days,
        items,
        dated_deltas,
        [k[0] for k in region_keys],
        [k[1] for k in region_keys],
        [regions[k] for k in region_keys],
        [i.process_id for i in feed_items],
        [i.sequence for i in feed_items],
        [i.kind for i in feed_items],
        [i.channel for i in feed_items],
        [i.region for i in feed_items],
        [i.topic for i in feed_items],
        [i.occurred_at for i in feed_items],
        [i.recorded_at for i in feed_items],
        activity.KEEP,
        consumer,
        reached,
    )


async def activity_of(
    conn: Connection, events: Sequence[tuple[int, Envelope]]
) -> tuple[dict[tuple[str, str], str], list[activity.Item]]:
    """What a batch adds to the dashboard's feed: where its interviews take place, and its feed
    items (their regions looked up for interviews scheduled in earlier batches, a read only
    when there are some). :func:`write` writes them and keeps each process's latest
    ``activity.KEEP``."""
    scheduled = activity.regions_scheduled(ev for _, ev in events)
    items = activity.items(events, scheduled)
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
    return scheduled, items


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


async def ensure_derived(conn: Connection, derived: Mapping[str, DerivedRules], stored: Mapping[str, str]) -> list[str]:
    """Make the counters of the plans' derived groups agree with ``derived`` (each process's rules).

    The batch engine calls this inside each batch's transaction, with the checkpoint locked, so
    no batch counts by other rules meanwhile, giving the rules ``stored`` in ``derived_rules``
    as it read them with the checkpoint. A process whose counters were made by other rules
    (its plan changed, or a projector with another plan file counted) is counted again from
    its participants, once; returns those processes.
    """
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
