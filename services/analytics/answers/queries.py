"""The questions analytics answers, each in one function: the API and the dashboard both ask here.

Each answer is typed (``answers.models``), reads its numbers in one snapshot, and says
which stream sequence they reflect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import asyncpg
from nats.aio.client import Client
from nats.js import JetStreamContext

from services.analytics.answers import asof
from services.analytics.answers.coverage import CHANNELS, View, coverage, segment_info
from services.analytics.answers.freshness import freshness
from services.analytics.answers.models import CoverageAnswer, Freshness, OverTimeAnswer
from services.analytics.answers.release import ReleaseBook, Released
from services.analytics.answers.segments import Segment, members, narrowing, parse_segment
from services.analytics.answers.timeline import timeline
from services.analytics.answers.workers import Workers
from services.analytics.projection.counts import Counts, counts_of, daily_of
from services.analytics.projection.fold import ParticipantState
from services.analytics.store import reads
from shared.bus import DEADLETTER_STREAM
from shared.http import TooManyRequests
from shared.plan import Plan
from shared.settings import Settings


class AsOfBusy(TooManyRequests):
    """Every as-of slot is taken (``ENGAGE_AS_OF_CONCURRENCY``): 429, try again shortly."""

    def __init__(self, slots: int) -> None:
        Exception.__init__(self, f"every as-of slot is taken (ENGAGE_AS_OF_CONCURRENCY={slots}); try again in 1 s")
        self.wait = 1.0


@dataclass(frozen=True)
class Sources:
    """Where answers come from: the read models, the log (for freshness and releases),
    settings and plans."""

    pool: asyncpg.Pool
    nc: Client
    settings: Settings
    plans: Mapping[str, Plan]
    releases: ReleaseBook
    as_of_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    # Releases read the log on a connection of their own (default ``nc``): a first refresh pulls
    # the whole log, and the projector's connection must not carry it.
    releases_nc: Client | None = None
    # Where as-of answers are folded (``answers.workers``); None: a thread of this process.
    as_of_workers: Workers | None = None

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    def view(self, suppressed: bool) -> View:
        """Rounded (coordinators) or exact (analysts)."""
        return View(self.settings.small_cell_k, suppressed, self.settings.every if suppressed else None)

    def process(self, process_id: str | None) -> tuple[str, Plan | None]:
        """The process asked about (default ENGAGE_PROCESS_ID) and its plan, if there is one."""
        process = process_id or self.settings.process_id
        return process, self.plans.get(process)

    async def freshness(self, sequence: int, projected_at: datetime | None) -> Freshness:
        return await freshness(self.js, self.settings.stream_name, sequence, projected_at)

    async def current(self) -> Freshness:
        """How fresh the read models are right now."""
        return await self.freshness(*await reads.reached(self.pool, self.settings.consumer_name))

    async def released(self, process: str, segment: Segment | None, plan: Plan | None) -> tuple[Released, Released]:
        """The latest release's counts (coordinators' numbers) of the segment and of the whole process,
        read forward from the log first."""
        releases = self.releases.of(process)
        return await releases.answers(self.releases_nc or self.nc, self.settings.stream_name, segment, plan)

    async def live_states(
        self, process: str, segment: Segment, plan: Plan | None
    ) -> tuple[Counts, list[ParticipantState]]:
        """The read models' participants in a segment, and their counts (analysts' live numbers)."""
        term = narrowing(segment, plan)
        sequence, projected_at, states = await reads.states_in(
            self.pool, process, self.settings.consumer_name, (term.dimension, term.category) if term else None
        )
        chosen = list(members(states, segment, plan))
        return counts_of(chosen, plan, sequence=sequence, projected_at=projected_at), chosen


async def coverage_now(src: Sources, process_id: str | None, segment: str | None, view: View) -> CoverageAnswer:
    """Coverage for a process and an optional segment (BadSegment if it is not one): from the read
    models for analysts, from the latest release, rounded, for coordinators."""
    process, plan = src.process(process_id)
    seg = parse_segment(plan, segment)
    if view.suppressed:
        rel, _ = await src.released(process, seg, plan)
        fresh = await src.freshness(rel.counts.sequence, rel.counts.projected_at)
        return coverage(rel.counts, process, plan, view, fresh, seg, rel.keys, rel.number)
    if seg is None:
        counts = await reads.counts(src.pool, process, src.settings.consumer_name, plan)
    else:
        counts, _ = await src.live_states(process, seg, plan)
    return coverage(counts, process, plan, view, await src.freshness(counts.sequence, counts.projected_at), seg)


async def coverage_as_of(
    src: Sources, process_id: str | None, segment: str | None, view: View, moment: datetime
) -> CoverageAnswer:
    """The same answer as it stood at ``moment`` (see ``asof``): exact numbers, for analysts only
    (two moments one arrival apart would show that person's answers). At most
    ``ENGAGE_AS_OF_CONCURRENCY`` are answered at once; one more is refused with 429 at once,
    rather than queued behind them."""
    if view.suppressed:
        raise PermissionError("as_of needs the analyst:read scope")
    process, plan = src.process(process_id)
    seg = parse_segment(plan, segment)
    if src.as_of_slots.locked():
        raise AsOfBusy(src.settings.as_of_concurrency)
    await _caught_up(src, (await src.js.stream_info(src.settings.stream_name)).state.last_seq or 0)
    async with src.as_of_slots:
        result = await asof.coverage_counts(
            src.pool,
            src.settings.consumer_name,
            process,
            moment,
            src.settings.tz,
            plan,
            seg,
            await _parked(src.js),
            workers=src.as_of_workers,
            database_url=src.settings.database_url,
        )
    info = await src.js.stream_info(src.settings.stream_name)
    return coverage(result.counts, process, plan, view, result.freshness(info.state.last_seq or 0), seg)


AS_OF_WAIT = 10.0  # seconds an as-of answer waits for the events on the log when asked to be counted


async def _caught_up(src: Sources, last: int) -> None:
    """Wait (at most ``AS_OF_WAIT``) until the read models count what the log held when asked:
    an as-of question is about the past, and the events recorded just before it belong in the
    answer. A projection still further behind answers anyway, saying how far (``behind``)."""
    deadline = asyncio.get_running_loop().time() + AS_OF_WAIT
    while await reads.checkpoint(src.pool, src.settings.consumer_name) < last:
        if asyncio.get_running_loop().time() >= deadline:
            return
        await asyncio.sleep(0.05)


async def _parked(js: JetStreamContext) -> int:
    """Events the projector parked (on the dead-letter stream): in no count, now or at any moment."""
    try:
        return int((await js.stream_info(DEADLETTER_STREAM)).state.messages or 0)
    except Exception:  # noqa: BLE001 - an identity that may not read it gets 0, as before anything was parked
        return 0


def _days(daily: Mapping[tuple[str, str], int]) -> dict[tuple[date, str], int]:
    return {(date.fromisoformat(day), channel): n for (day, channel), n in daily.items()}


async def over_time(
    src: Sources, process_id: str | None, by: Literal["day", "week"], view: View, segment: str | None = None
) -> OverTimeAnswer:
    """Participation per period and channel: engagements, and participants first reached."""
    process, plan = src.process(process_id)
    seg = parse_segment(plan, segment)
    number = None
    if view.suppressed:
        rel, whole = await src.released(process, seg, plan)
        sequence, projected_at, number = rel.counts.sequence, rel.counts.projected_at, rel.number
        days = {day for day, _ in _days(whole.engagements_daily)}  # the whole process's days, for any segment
        grid = (days, CHANNELS)
        periods = timeline(_days(rel.engagements_daily), _days(rel.reached_daily), by, view.k, rel.keys, grid)
    elif seg is None:
        sequence, projected_at, rows = await reads.daily(src.pool, process, src.settings.consumer_name)
        engaged = {(day, channel): n for day, channel, n, _ in rows if n}
        reached = {(day, channel): n for day, channel, _, n in rows if n}
        periods = timeline(engaged, reached, by, view.k)
    else:
        counts, chosen = await src.live_states(process, seg, plan)
        sequence, projected_at = counts.sequence, counts.projected_at
        engagements, firsts = daily_of(chosen, src.settings.tz)
        periods = timeline(_days(engagements), _days(firsts), by, view.k)
    return OverTimeAnswer(
        process_id=process,
        segment=segment_info(seg, plan),
        by=by,
        timezone=src.settings.timezone,
        as_of=await src.freshness(sequence, projected_at),
        suppression=view.suppression(sequence, number) if view.suppressed else view.suppression(),
        periods=periods,
    )
