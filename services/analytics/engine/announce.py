"""Announcing status changes: after the projection moves, judge every targeted category.

A category is judged only once its base (who its share is worked out of) holds the plan's
``announce.min_participants``. The first judgement of a category is a baseline: only an
under-reached one is announced. After that a change is announced (CommunityUnderReached,
CommunityReached, CommunityOnWatch) once the new status has held at every judgement while
``announce.hold_participants`` more participants joined the base (``status_pending`` keeps it
meanwhile; a judgement that sees another status starts the wait again). An announced change
is published, put in the alert outbox (``alert_outbox``, delivered by ``services.analytics.alerts``)
and remembered in ``category_status``. Publishing comes before the remembering, so a crash in
between announces the change again (at least once), and the message id (process, category,
status, sequence) lets JetStream drop an exact repeat.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from nats.js import JetStreamContext

from services.analytics.answers.coverage import View, coverage
from services.analytics.answers.models import CategoryRow, Freshness
from services.analytics.engine.batch import EVERYTHING
from services.analytics.projection.counts import Counts
from services.analytics.projection.fold import ANSWERED, PARTICIPANTS, PROFILED
from services.analytics.store import reads, writes
from shared.logging import get_logger
from shared.plan import Announce, Plan
from shared.settings import Settings
from shared.status_events import TYPE_OF_STATUS, CommunityStatusChanged, Status

log = get_logger("engage.analytics.status")


Key = tuple[str, str]


@dataclass(frozen=True)
class Pending:
    """A status seen that differs from the one announced, not yet announced: it must hold first."""

    status: Status
    since_base: int  # the category's base when it was first seen
    sequence: int


@dataclass
class Decision:
    announce: dict[Key, Status] = field(default_factory=dict)
    baseline: dict[Key, Status] = field(default_factory=dict)  # remembered without an announcement
    pending: dict[Key, Pending] = field(default_factory=dict)  # to keep waiting (new or unchanged)
    cleared: set[Key] = field(default_factory=set)  # waits that ended (announced, or the status went back)


def changes(judged: Mapping[Key, Status], before: Mapping[Key, str]) -> tuple[dict[Key, Status], dict[Key, Status]]:
    """(to announce, to remember silently), without hysteresis: a first judgement is announced only if
    under-reached, every later change at once."""
    got = decide({key: (status, 0) for key, status in judged.items()}, before, {}, Announce(), sequence=0)
    return got.announce, got.baseline


def decide(
    judged: Mapping[Key, tuple[Status, int]],
    before: Mapping[Key, str],
    pending: Mapping[Key, Pending],
    rule: Announce,
    sequence: int,
) -> Decision:
    """What to announce, remember and keep waiting on, from each category's (status, base) now.

    A base below ``rule.min_participants`` is not judged. A first judgement is the baseline
    (announced only if under-reached). A change is announced once it has held while
    ``rule.hold_participants`` joined the base; seeing another status meanwhile starts again.
    """
    out = Decision()
    for key, (status, base) in judged.items():
        if base < rule.min_participants:
            continue
        if key not in before:
            (out.announce if status is Status.UNDER_REACHED else out.baseline)[key] = status
            if key in pending:
                out.cleared.add(key)
            continue
        if before[key] == status:
            if key in pending:
                out.cleared.add(key)
            continue
        waiting = pending.get(key)
        if waiting is None or waiting.status is not status:
            waiting = Pending(status, base, sequence)
        if base - waiting.since_base >= rule.hold_participants:
            out.announce[key] = status
            if key in pending:
                out.cleared.add(key)
        elif pending.get(key) != waiting:
            out.pending[key] = waiting
    return out


def base_of(counts: Counts, plan: Plan, dimension: str, category: str) -> int:
    """The category's base: who its share is worked out of, as ``answers.coverage`` works it out."""
    spec = plan.dimensions[dimension]
    if spec.derived:
        return counts.participants
    target = spec.categories[category].target
    if target is not None and target.base == "profiled":
        return counts.profiled
    if target is not None and target.min_count is not None:
        return counts.participants
    return counts.categories.get((dimension, ANSWERED), 0)


async def _pending(pool: asyncpg.Pool, process_id: str) -> dict[Key, Pending]:
    rows = await pool.fetch(
        "SELECT dimension, category, status, since_base, sequence FROM status_pending WHERE process_id = $1",
        process_id,
    )
    return {(r["dimension"], r["category"]): Pending(Status(r["status"]), r["since_base"], r["sequence"]) for r in rows}


async def _save_pending(pool: asyncpg.Pool, process_id: str, decision: Decision) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if decision.cleared:
            keys = sorted(decision.cleared)
            await conn.execute(
                "DELETE FROM status_pending WHERE process_id = $1 AND (dimension, category) IN "
                "(SELECT * FROM unnest($2::text[], $3::text[]))",
                process_id,
                [k[0] for k in keys],
                [k[1] for k in keys],
            )
        for (dimension, category), p in sorted(decision.pending.items()):
            await conn.execute(
                "INSERT INTO status_pending (process_id, dimension, category, status, since_base, sequence) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (process_id, dimension, category) DO UPDATE "
                "SET status = EXCLUDED.status, since_base = EXCLUDED.since_base, sequence = EXCLUDED.sequence",
                process_id,
                dimension,
                category,
                str(p.status),
                p.since_base,
                p.sequence,
            )


async def _to_outbox(pool: asyncpg.Pool, events: list[CommunityStatusChanged]) -> None:
    if events:
        await pool.executemany(
            "INSERT INTO alert_outbox (event_id, event) VALUES ($1, $2::jsonb) ON CONFLICT (event_id) DO NOTHING",
            [(e.event_id, e.model_dump_json()) for e in events],
        )


def to_judge(plan: Plan, moved: Set[str]) -> set[str]:
    """The dimensions whose statuses may have changed, from what moved (``BatchEngine.touched``).

    A status is a function of a category's count and its base (``base_of``): a dimension's
    counts and answered count move with its own category counters; derived groups and
    minimum-count targets are judged on all participants; targets on the profiled base, on
    those who gave a profile.
    """
    if EVERYTHING in moved:
        return set(plan.dimensions)
    dims = {d for d in moved if d in plan.dimensions}
    for key, spec in plan.dimensions.items():
        targets = [c.target for c in spec.categories.values() if c.target is not None]
        if PARTICIPANTS in moved and (spec.derived or any(t.min_count is not None for t in targets)):
            dims.add(key)
        if PROFILED in moved and any(t.base == "profiled" for t in targets):
            dims.add(key)
    return dims


async def judge_and_announce(
    js: JetStreamContext,
    pool: asyncpg.Pool,
    plans: Mapping[str, Plan],
    settings: Settings,
    touched: Mapping[str, Set[str]] | None = None,
) -> list[CommunityStatusChanged]:
    """Judge each plan's targeted categories and announce what changed: all of them, or with
    ``touched`` (process -> what moved, ``BatchEngine.touched``) only those whose count or base moved."""
    published: list[CommunityStatusChanged] = []
    for process_id, plan in plans.items():
        dims = set(plan.dimensions) if touched is None else to_judge(plan, touched.get(process_id, set()))
        if not dims:
            continue
        counts = await reads.counts(pool, process_id, settings.consumer_name, plan)
        if not counts.participants:
            continue
        fresh = Freshness(
            sequence=counts.sequence,
            stream_sequence=counts.sequence,
            behind=0,
            projected_at=counts.projected_at,
            answered_at=datetime.now(UTC),
        )
        body = coverage(counts, process_id, plan, View(settings.small_cell_k, suppressed=False), fresh)
        rows: dict[tuple[str, str], CategoryRow] = {
            (d.dimension, c.category): c
            for d in body.dimensions
            for c in d.categories
            if c.status is not Status.NO_TARGET and d.dimension in dims
        }
        before = await reads.statuses(pool, process_id)
        judged = {key: (row.status, base_of(counts, plan, *key)) for key, row in rows.items()}
        decision = decide(judged, before, await _pending(pool, process_id), plan.announce, counts.sequence)
        announce, baseline = decision.announce, decision.baseline
        mine: list[CommunityStatusChanged] = []
        now = datetime.now(UTC)
        for (dimension, category), status in sorted(announce.items()):
            row = rows[(dimension, category)]
            event = CommunityStatusChanged(
                type=TYPE_OF_STATUS[status],
                event_id=f"{process_id}.{dimension}.{category}.{status}.{counts.sequence}",
                process_id=process_id,
                dimension=dimension,
                category=category,
                label=row.label,
                status=status,
                previous=before.get((dimension, category)),
                ratio=row.ratio,
                needed=row.needed,
                sequence=counts.sequence,
                judged_at=now,
            )
            await js.publish(
                event.subject,
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": event.event_id},
                timeout=settings.publish_timeout_seconds,
            )
            mine.append(event)
            log.info(
                "status_changed",
                process_id=process_id,
                dimension=dimension,
                category=category,
                status=status,
                sequence=counts.sequence,
            )
        await _to_outbox(pool, mine)
        await writes.save_statuses(pool, process_id, {**baseline, **announce}, counts.sequence)
        await _save_pending(pool, process_id, decision)
        published += mine
    return published
