"""Coverage as it stood at a moment: who had been heard from by then.

An engagement counts if it happened (``occurred_at``) at or before the moment asked about;
events recorded after the fact count wherever they sit in the log. A
``ParticipantWithdrawn`` applies whatever its time: the process promised that withdrawal
removes a person from every count, so they are absent from every as-of view too,
including views of moments before they withdrew.

No log is replayed. The projection keeps, beside the live counters, each participant's
contribution under the UTC day of their last engagement (``dated_counts``), the
engagements of everyone engaged more than once (``touches``) and when each event happened
(``event_times``); a withdrawal takes the person out of all three. The counts as of a
moment are then the dated counters of the days before its day, plus the participants seen
since that day began, each as they stood at the moment (``store.reads.dated``), summed by
the one count builder (``fold``, in a worker process: ``answers.workers``). The cost is
the plan's size times the days, and one day's participants: not the log's length. A
segment's as-of view needs each participant's state, so it reads the participants its
narrowest term allows, as the live segment view does.

The answer reflects the read models, so it can be behind the log like any live answer
(``behind``): the moment's events still being projected are not in it yet.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo

import asyncpg

from services.analytics.answers import workers as workers_module
from services.analytics.answers.models import Replayed
from services.analytics.answers.segments import Segment, members, narrowing
from services.analytics.answers.workers import Workers
from services.analytics.projection.counts import Counts, counts_of
from services.analytics.projection.fold import ENGAGEMENTS, PARTICIPANTS, PROFILED, ParticipantState
from services.analytics.reading import replay
from services.analytics.store import reads, schema
from shared.events import EARLIEST
from shared.plan import NO_RULES, Plan


@dataclass(frozen=True)
class AsOf:
    """Counts as they stood at ``moment``, from the read models at stream sequence ``sequence``."""

    moment: datetime
    sequence: int
    counts: Counts
    unreadable: int  # events the projector parked: in no count, now or then
    projected_at: datetime | None

    def freshness(self, stream_sequence: int) -> Replayed:
        """What an as-of answer reflects: the moment, and the read models' sequence."""
        return Replayed(
            as_of=self.moment,
            sequence=self.sequence,
            stream_sequence=max(stream_sequence, self.sequence),
            behind=max(stream_sequence - self.sequence, 0),
            unreadable=self.unreadable,
            projected_at=self.projected_at,
            answered_at=datetime.now(UTC),
        )


def parse_moment(value: str, now: datetime | None = None) -> datetime:
    """The moment asked about: a time with a zone, not in the future.

    Raises ``ValueError`` with a reason that never repeats the value (it came from a user).
    """
    try:
        moment = replay.parse_time(value, "as_of")
    except ValueError as exc:
        if "time zone" in str(exc):
            raise ValueError("needs a time zone, e.g. 2018-04-01T00:00Z") from None
        raise ValueError("is not a time like 2018-04-01T00:00Z or 2018-04-01") from None
    if moment is None:
        raise ValueError("is required")
    if moment > (now or datetime.now(UTC)):
        raise ValueError("is in the future; coverage can only be told up to now")
    if moment < EARLIEST:
        raise ValueError(f"is before {EARLIEST:%Y-%m-%d}: no event on the log can be that old")
    return moment


def counts_of_dated(found: reads.Dated, states: list[ParticipantState], plan: Plan | None) -> Counts:
    """The counts the dated counters and the states as of the moment make together."""
    tail = counts_of(states, plan, sequence=found.sequence)
    base = found.base
    channels = Counter(tail.channels)
    people = Counter(tail.people_by_channel)
    categories = Counter(tail.categories)
    for item, n in base.items():
        kind, _, what = item.partition(":")
        if kind == "engagements":
            channels[what] += n
        elif kind == "people":
            people[what] += n
        elif kind == "category":
            dimension, _, category = what.partition("\x1f")
            categories[(dimension, category)] += n
    return Counts(
        sequence=found.sequence,
        participants=tail.participants + base.get(f"total:{PARTICIPANTS}", 0),
        engagements=tail.engagements + base.get(f"total:{ENGAGEMENTS}", 0),
        channels={c: n for c, n in channels.items() if n},
        categories={k: n for k, n in categories.items() if n},
        profiled=tail.profiled + base.get(f"total:{PROFILED}", 0),
        people_by_channel={c: n for c, n in people.items() if n},
        first_event=found.first_event,
        last_event=found.last_event,
        projected_at=found.projected_at,
    )


def fold(found: reads.Dated, moment: datetime, tz: tzinfo, plan: Plan | None, segment: Segment | None) -> Counts:
    """The counts as of ``moment`` from what ``reads.dated`` read: pure CPU, no I/O, so that it
    can run in another process (``answers.workers``)."""
    states = reads.states_as_of(found, moment, tz)
    if segment is None:
        return counts_of_dated(found, states, plan)
    return replace(
        counts_of(members(states, segment, plan), plan, sequence=found.sequence),
        first_event=found.first_event,
        last_event=found.last_event,
        projected_at=found.projected_at,
    )


@dataclass(frozen=True)
class Question:
    """One as-of question, whole: what reading and folding its answer need (it is pickled to a worker)."""

    consumer: str
    process_id: str
    moment: datetime
    tz: tzinfo
    plan: Plan | None
    segment: Segment | None

    async def read(self, pool: asyncpg.Pool) -> reads.Dated:
        rules = self.plan.derived_rule_list() if self.plan else NO_RULES
        narrow: tuple[str, str] | bool = False
        if self.segment is not None:
            term = narrowing(self.segment, self.plan)
            narrow = (term.dimension, term.category) if term else True
        return await reads.dated(pool, self.process_id, self.consumer, self.moment, self.tz, rules, everyone=narrow)

    def fold(self, found: reads.Dated) -> Counts:
        return fold(found, self.moment, self.tz, self.plan, self.segment)


# In a worker process: one small pool per database, kept from one question to the next.
_worker_pools: dict[str, asyncpg.Pool] = {}


async def answer_in_worker(database_url: str, question: Question) -> tuple[int, datetime | None, Counts]:
    """Read and fold an as-of answer, all of it in a worker (``answers.workers``): the rows are
    decoded and folded there, never in the process that counts."""
    pool = _worker_pools.get(database_url)
    if pool is None:
        pool = _worker_pools[database_url] = await schema.open_pool(database_url, max_size=1)
    found = await question.read(pool)
    return found.sequence, found.projected_at, question.fold(found)


async def coverage_counts(
    pool: asyncpg.Pool,
    consumer: str,
    process_id: str,
    moment: datetime,
    tz: tzinfo,
    plan: Plan | None,
    segment: Segment | None,
    unreadable: int = 0,
    *,
    workers: Workers | None = None,
    database_url: str | None = None,
) -> AsOf:
    """The counts of a process (or of one segment of it) as they stood at ``moment``.

    With ``workers`` (analytics gives them processes of their own), the whole answer is read
    and folded in a worker, connected to ``database_url``: an as-of answer never holds the
    live projector's interpreter. Without, it is read here and folded in a thread."""
    question = Question(consumer, process_id, moment, tz, plan, segment)
    if workers is not None:
        if not database_url:
            raise ValueError("as-of workers need the database's URL")
        run = workers_module.on_worker_loop
        sequence, projected_at, counts = await workers.run(run, answer_in_worker, database_url, question)
        return AsOf(moment, sequence, counts, unreadable, projected_at)
    found = await question.read(pool)
    counts = await asyncio.to_thread(question.fold, found)
    return AsOf(moment, found.sequence, counts, unreadable, found.projected_at)
