"""The questions analytics answers, each in one function: the API and the dashboard both ask here.

Each answer is typed (``answers.models``), reads its numbers in one snapshot, and says
which stream sequence they reflect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.analytics.answers import asof
from services.analytics.answers.coverage import View, coverage
from services.analytics.answers.freshness import freshness
from services.analytics.answers.models import CoverageAnswer, Freshness, OverTimeAnswer
from services.analytics.answers.segments import parse_segment
from services.analytics.answers.timeline import timeline
from services.analytics.projection.counts import counts_of
from services.analytics.store import reads
from shared.plan import Plan
from shared.settings import Settings


@dataclass(frozen=True)
class Sources:
    """Where answers come from: the read models, the log (for freshness and as-of), settings and plans."""

    pool: asyncpg.Pool
    nc: Client
    settings: Settings
    plans: Mapping[str, Plan]

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    def process(self, process_id: str | None) -> tuple[str, Plan | None]:
        """The process asked about (default ENGAGE_PROCESS_ID) and its plan, if there is one."""
        process = process_id or self.settings.process_id
        return process, self.plans.get(process)

    async def freshness(self, sequence: int, projected_at: datetime | None) -> Freshness:
        return await freshness(self.js, self.settings.stream_name, sequence, projected_at)

    async def current(self) -> Freshness:
        """How fresh the read models are right now."""
        return await self.freshness(*await reads.reached(self.pool, self.settings.consumer_name))


async def coverage_now(src: Sources, process_id: str | None, segment: str | None, view: View) -> CoverageAnswer:
    """Coverage from the read models, for a process and an optional segment (BadSegment if it is not one)."""
    process, plan = src.process(process_id)
    seg = parse_segment(plan, segment)
    consumer = src.settings.consumer_name
    if seg is None:
        counts = await reads.counts(src.pool, process, consumer, plan)
    else:
        sequence, states = await reads.states_in(src.pool, process, consumer, *seg)
        counts = counts_of(states, plan, sequence=sequence)
    return coverage(counts, process, plan, view, await src.freshness(counts.sequence, counts.projected_at), seg)


async def coverage_as_of(
    src: Sources, process_id: str | None, segment: str | None, view: View, moment: datetime
) -> CoverageAnswer:
    """The same answer as it stood at ``moment``, replayed from the log (see ``asof``)."""
    process, plan = src.process(process_id)
    seg = parse_segment(plan, segment)
    result = await asof.coverage_counts(src.nc, src.settings.stream_name, process, moment, src.settings.tz, plan, seg)
    return coverage(result.counts, process, plan, view, result.freshness(), seg)


async def over_time(src: Sources, process_id: str | None, by: Literal["day", "week"], view: View) -> OverTimeAnswer:
    """Participation per period and channel: engagements, and participants first reached."""
    process, _ = src.process(process_id)
    sequence, projected_at, rows = await reads.daily(src.pool, process, src.settings.consumer_name)
    return OverTimeAnswer(
        process_id=process,
        by=by,
        timezone=src.settings.timezone,
        as_of=await src.freshness(sequence, projected_at),
        suppression=view.suppression,
        periods=timeline(rows, by, view.k, view.suppressed),
    )
