"""Rebuilding the read models from the log, beside the live ones, then swapping them in.

``engage rebuild`` replays the whole stream into a fresh schema (``analytics_rebuild``)
with the same projection the live service uses, checks the result, and swaps the new
tables in for the old in one transaction (blue/green). The live service keeps answering
throughout: its requests wait only for the swap itself, which takes the read models'
locks, lets the rebuild catch up on the last few events, renames and commits.

Why the swap is safe: the live projector commits a batch and its checkpoint in one
transaction on these same tables. Once the swap holds their locks no batch is in flight,
so the live checkpoint stands still while the rebuild reaches it; after the commit, the
live projector's next batch reads the new checkpoint and goes on from there. The table
of announced statuses stays as it is, so a rebuild does not announce them again.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from services.analytics.engine.batch import BatchEngine
from services.analytics.reading.decode import decode_batch
from services.analytics.reading.replay import last_sequence, raw_batches
from services.analytics.store import reads
from services.analytics.store import schema as db_schema
from shared.bus import connect_nats
from shared.database import ensure_schema
from shared.logging import get_logger
from shared.plan import load_plans
from shared.settings import Settings

if TYPE_CHECKING:
    from services.analytics.store.schema import Connection

log = get_logger("engage.analytics.rebuild")

REBUILD_SCHEMA = "analytics_rebuild"
RETIRED_SCHEMA = "analytics_retired"
# The read models rebuilt from the log. category_status (what was announced) and
# schema_migrations stay with the live schema.
TABLES = (
    "checkpoint",
    "participants",
    "category_counts",
    "engagement_counts",
    "totals",
    "daily_counts",
    "activity",
    "interview_regions",
    "derived_rules",
    "dated_counts",
    "touches",
    "event_times",
    "as_of_needs_rebuild",
)
Progress = Callable[[int, int], None]  # (sequence reached, sequence aimed at)


_REBUILD_LOCK = 7_310_002


class RebuildBusy(RuntimeError):
    """The rebuild cannot start: another one holds the lock, or there is no log to read."""


class RebuildCheckFailed(RuntimeError):
    """The rebuilt tables do not add up; nothing was swapped."""


@dataclass
class Result:
    events: int = 0
    unreadable: int = 0
    sequence: int = 0
    seconds: float = 0.0
    checks: list[str] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def project_range(
    nc: Client,
    pool: asyncpg.Pool,
    settings: Settings,
    start: int,
    end: int,
    result: Result,
    progress: Progress | None = None,
    batch: int = 5000,
) -> None:
    """Project stream sequences ``start``..``end`` into the tables ``pool`` points at.

    Unreadable events are skipped: the live projector has parked them already."""
    plans = load_plans(settings.plans or None)
    engine = BatchEngine(pool, settings.consumer_name, settings.tz, overlap=True, plans=plans, single_writer=True)
    async for raw in raw_batches(nc, settings.stream_name, start, end, batch=batch):
        events, unreadable = decode_batch(raw)
        for skipped in unreadable:
            log.warning("event_skipped", sequence=skipped.sequence, subject=skipped.subject, reason=skipped.reason)
        await engine.submit(events, raw[-1][0])
        result.events += len(raw)
        result.unreadable += len(unreadable)
        if progress is not None:
            progress(raw[-1][0], end)
    await engine.flush()


async def check(conn: Connection, schema: str) -> list[str]:
    """Invariants every correct projection keeps; raises if one fails."""
    s = f'"{schema}"'
    problems = []
    checks = {
        "totals match the counted participants": f"SELECT t.process_id FROM {s}.totals t LEFT JOIN "
        f"(SELECT process_id, count(*) n FROM {s}.participants WHERE NOT withdrawn GROUP BY 1) p "
        "USING (process_id) WHERE t.participants <> coalesce(p.n, 0)",
        "engagements by channel add up to the total": f"SELECT t.process_id FROM {s}.totals t LEFT JOIN "
        f"(SELECT process_id, sum(engagements) n FROM {s}.engagement_counts GROUP BY 1) e "
        "USING (process_id) WHERE t.engagements <> coalesce(e.n, 0)",
        "engagements by day add up to the total": f"SELECT t.process_id FROM {s}.totals t LEFT JOIN "
        f"(SELECT process_id, sum(engagements) n FROM {s}.daily_counts GROUP BY 1) d "
        "USING (process_id) WHERE t.engagements <> coalesce(d.n, 0)",
        "participants first reached add up to the total": f"SELECT t.process_id FROM {s}.totals t LEFT JOIN "
        f"(SELECT process_id, sum(participants) n FROM {s}.daily_counts GROUP BY 1) d "
        "USING (process_id) WHERE t.participants <> coalesce(d.n, 0)",
        "no count is negative": f"SELECT process_id FROM {s}.category_counts WHERE participants < 0 UNION ALL "
        f"SELECT process_id FROM {s}.engagement_counts WHERE engagements < 0 OR participants < 0 UNION ALL "
        f"SELECT process_id FROM {s}.dated_counts WHERE n < 0",
        "those who gave a profile match the counted participants": f"SELECT t.process_id FROM {s}.totals t "
        f"LEFT JOIN (SELECT process_id, count(*) n FROM {s}.participants WHERE NOT withdrawn "
        "AND profile <> '{}'::jsonb GROUP BY 1) p USING (process_id) WHERE t.profiled <> coalesce(p.n, 0)",
        "the dated counts add up to the totals": f"SELECT t.process_id FROM {s}.totals t LEFT JOIN "
        f"(SELECT process_id, sum(n) n FROM {s}.dated_counts WHERE item = 'total:participants' GROUP BY 1) d "
        "USING (process_id) WHERE t.participants <> coalesce(d.n, 0)",
    }
    passed = []
    for name, query in checks.items():
        bad = await conn.fetch(query)
        if bad:
            problems.append(f"{name}: fails for {', '.join(sorted({r[0] for r in bad}))}")
        else:
            passed.append(name)
    if problems:
        raise RebuildCheckFailed("; ".join(problems))
    return passed


async def _totals(conn: Connection, schema: str) -> dict[str, int]:
    rows = await conn.fetch(f'SELECT process_id, participants FROM "{schema}".totals ORDER BY 1')
    return {r["process_id"]: r["participants"] for r in rows}


# How to drop each kind of relation (pg_class.relkind) a migration may leave in a schema; tables
# first, as their CASCADE takes the views and sequences that depend on them.
_DROP = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "m": "MATERIALIZED VIEW", "v": "VIEW", "S": "SEQUENCE"}


async def clear_schemas(conn: Connection) -> None:
    """Leave the rebuild's two schemas without a table: gone, or empty if this role may not make them again.

    Under ``engage up`` the superuser drops them, as a rebuild always did. A deployed analytics
    role has no CREATE on the database (deploy/postgres/init.sql makes the schemas for it), so it
    drops what is in them and keeps the schemas for the next rebuild.
    """
    for schema in (RETIRED_SCHEMA, REBUILD_SCHEMA):
        droppable = await conn.fetchval(
            "SELECT pg_has_role(nspowner, 'USAGE') AND has_database_privilege(current_database(), 'CREATE') "
            "FROM pg_namespace WHERE nspname = $1",
            schema,
        )
        if droppable is None:
            continue
        if droppable:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            continue
        rows = await conn.fetch(
            "SELECT c.relkind::text AS relkind, format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind::text = ANY($2::text[])",
            schema,
            list(_DROP),
        )
        for kind, what in _DROP.items():
            names = [r["name"] for r in rows if r["relkind"] == kind]
            if names:
                await conn.execute(f"DROP {what} IF EXISTS {', '.join(names)} CASCADE")
        left = await conn.fetch(
            "SELECT pg_describe_object(classid, objid, objsubid) AS what FROM pg_depend "
            "WHERE refclassid = 'pg_namespace'::regclass "
            "AND refobjid = (SELECT oid FROM pg_namespace WHERE nspname = $1)",
            schema,
        )
        if left:
            raise RebuildBusy(
                f'schema "{schema}" holds what a rebuild does not make and cannot empty '
                f"({', '.join(sorted(r['what'] for r in left))}): drop it there, then rebuild again"
            )


async def rebuild(settings: Settings, progress: Progress | None = None) -> Result:
    """Replay the whole log into fresh tables, check them, and swap them in for the live ones."""
    dsn, url = settings.database_url, settings.nats_url
    if not dsn or not url:
        raise ValueError("ENGAGE_NATS_URL and ENGAGE_DATABASE_URL must name the servers to rebuild from and into")
    result = Result()
    # A replay allocates millions of short-lived, acyclic objects: collecting cycles after every
    # 700 allocations (the default) spends most of the time scanning them for nothing.
    gc.set_threshold(100_000, 50, 1000)
    nc = await connect_nats(settings, "analytics", url)
    try:
        await nc.jetstream().stream_info(settings.stream_name)
    except NotFoundError:
        await nc.close()
        raise RebuildBusy(
            f"the event log (stream {settings.stream_name}) is not on that NATS server: nothing to rebuild from"
        ) from None
    live = await db_schema.open_pool(dsn)
    guard = await live.acquire()  # holds the rebuild's lock for as long as it runs
    if not await guard.fetchval("SELECT pg_try_advisory_lock($1)", _REBUILD_LOCK):
        await live.release(guard)
        await live.close()
        await nc.close()
        raise RebuildBusy("another rebuild of these read models is running; wait for it to finish")
    fresh: asyncpg.Pool | None = None
    try:
        await db_schema.migrate(live)
        async with live.acquire() as conn:
            await clear_schemas(conn)
        fresh = await db_schema.open_pool(dsn, schema=REBUILD_SCHEMA, max_size=3)
        started = time.perf_counter()
        await db_schema.migrate(fresh)
        end = await last_sequence(nc, settings.stream_name)
        await project_range(nc, fresh, settings, 1, end, result, progress)
        result.seconds = time.perf_counter() - started
        # The new tables go live ready: their planner statistics and visibility maps are made now,
        # not by autovacuum on the live tables just after the swap, while new events wait on it.
        async with fresh.acquire() as conn:
            for table in TABLES:
                await conn.execute(f'VACUUM (ANALYZE) "{REBUILD_SCHEMA}".{table}')
        async with live.acquire() as conn, conn.transaction():
            # From here the live projector waits: its checkpoint cannot move until the swap commits.
            await conn.execute(
                "LOCK TABLE " + ", ".join(f"{db_schema.SCHEMA}.{t}" for t in TABLES) + " IN ACCESS EXCLUSIVE MODE"
            )
            target = await reads.checkpoint(conn, settings.consumer_name)
            reached = await reads.checkpoint(fresh, settings.consumer_name)
            if target > reached:  # the live side went on while the rebuild ran: catch up to it
                await project_range(nc, fresh, settings, reached + 1, target, result, progress)
            result.sequence = await reads.checkpoint(fresh, settings.consumer_name)
            result.checks = await check(conn, REBUILD_SCHEMA)
            result.before, result.after = await _totals(conn, db_schema.SCHEMA), await _totals(conn, REBUILD_SCHEMA)
            await ensure_schema(conn, RETIRED_SCHEMA)
            for table in TABLES:
                await conn.execute(f'ALTER TABLE {db_schema.SCHEMA}.{table} SET SCHEMA "{RETIRED_SCHEMA}"')
                await conn.execute(f'ALTER TABLE "{REBUILD_SCHEMA}".{table} SET SCHEMA {db_schema.SCHEMA}')
        log.info("rebuild_swapped", events=result.events, sequence=result.sequence, seconds=round(result.seconds, 2))
    finally:
        if fresh is not None:
            await fresh.close()
        try:
            async with live.acquire() as conn:
                await clear_schemas(conn)
        finally:
            await guard.execute("SELECT pg_advisory_unlock($1)", _REBUILD_LOCK)
            await live.release(guard)
            await live.close()
            await nc.close()
    return result
