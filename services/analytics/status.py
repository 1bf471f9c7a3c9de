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

from services.analytics import store
from services.analytics.coverage import View, coverage
from services.analytics.representation import NO_TARGET, UNDER_REACHED
from shared.logging import get_logger
from shared.plan import Plan
from shared.settings import Settings
from shared.status_events import TYPE_OF_STATUS, CommunityStatusChanged

log = get_logger("engage.analytics.status")


def derived_rules(plan: Plan | None) -> dict[str, dict[str, dict[str, list[str]]]]:
    """dimension -> category -> {profile dimension: categories} for the plan's derived dimensions."""
    if plan is None:
        return {}
    return {key: {code: dict(cat.when or {}) for code, cat in dim.categories.items()}
            for key, dim in plan.dimensions.items() if dim.derived}


def changes(judged: Mapping[tuple[str, str], str], before: Mapping[tuple[str, str], str]
            ) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """(to announce, to remember silently): a first judgement is announced only if under-reached."""
    announce, baseline = {}, {}
    for key, status in judged.items():
        if key in before:
            if before[key] != status:
                announce[key] = status
        elif status == UNDER_REACHED:
            announce[key] = status
        else:
            baseline[key] = status
    return announce, baseline


async def judge_and_announce(js: JetStreamContext, pool: asyncpg.Pool, plans: Mapping[str, Plan],
                             settings: Settings) -> list[CommunityStatusChanged]:
    published: list[CommunityStatusChanged] = []
    for process_id, plan in plans.items():
        counts = await store.counts(pool, process_id, settings.consumer_name, derived_rules(plan))
        if not counts.participants:
            continue
        body = coverage(counts, plan, View(settings.small_cell_k, suppressed=False))
        rows = {(d["dimension"], c["category"]): c for d in body["dimensions"] for c in d["categories"]
                if c["status"] != NO_TARGET}
        before = await store.statuses(pool, process_id)
        announce, baseline = changes({key: row["status"] for key, row in rows.items()}, before)
        now = datetime.now(UTC)
        for (dimension, category), status in sorted(announce.items()):
            row = rows[(dimension, category)]
            event = CommunityStatusChanged(
                type=TYPE_OF_STATUS[status], event_id=f"{process_id}.{dimension}.{category}.{status}.{counts.sequence}",
                process_id=process_id, dimension=dimension, category=category, label=row["label"],
                status=status, previous=before.get((dimension, category)), ratio=row["ratio"],
                needed=row["needed"], sequence=counts.sequence, judged_at=now,
            )
            await js.publish(event.subject, event.model_dump_json().encode(),
                             headers={"Nats-Msg-Id": event.event_id}, timeout=settings.publish_timeout_seconds)
            published.append(event)
            log.info("status_changed", process_id=process_id, dimension=dimension, category=category,
                     status=status, sequence=counts.sequence)
        await store.save_statuses(pool, process_id, {**baseline, **announce}, counts.sequence)
    return published
