"""Announcing status changes: after the projection moves, judge every targeted category.

The first judgement of a category is a baseline: only an under-reached one is announced.
After that every change is published (CommunityUnderReached, CommunityReached,
CommunityOnWatch) and remembered in ``category_status``. Publishing comes before the
remembering, so a crash in between announces the change again (at least once), and the
message id (process, category, status, sequence) lets JetStream drop an exact repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg
from nats.js import JetStreamContext

from services.analytics.answers.coverage import View, coverage
from services.analytics.answers.models import CategoryRow, Freshness
from services.analytics.store import reads, writes
from shared.logging import get_logger
from shared.plan import Plan
from shared.settings import Settings
from shared.status_events import TYPE_OF_STATUS, CommunityStatusChanged, Status

log = get_logger("engage.analytics.status")


def changes(
    judged: Mapping[tuple[str, str], Status], before: Mapping[tuple[str, str], str]
) -> tuple[dict[tuple[str, str], Status], dict[tuple[str, str], Status]]:
    """(to announce, to remember silently): a first judgement is announced only if under-reached."""
    announce: dict[tuple[str, str], Status] = {}
    baseline: dict[tuple[str, str], Status] = {}
    for key, status in judged.items():
        if key in before:
            if before[key] != status:
                announce[key] = status
        elif status is Status.UNDER_REACHED:
            announce[key] = status
        else:
            baseline[key] = status
    return announce, baseline


async def judge_and_announce(
    js: JetStreamContext, pool: asyncpg.Pool, plans: Mapping[str, Plan], settings: Settings
) -> list[CommunityStatusChanged]:
    published: list[CommunityStatusChanged] = []
    for process_id, plan in plans.items():
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
            if c.status is not Status.NO_TARGET
        }
        before = await reads.statuses(pool, process_id)
        announce, baseline = changes({key: row.status for key, row in rows.items()}, before)
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
            published.append(event)
            log.info(
                "status_changed",
                process_id=process_id,
                dimension=dimension,
                category=category,
                status=status,
                sequence=counts.sequence,
            )
        await writes.save_statuses(pool, process_id, {**baseline, **announce}, counts.sequence)
    return published
