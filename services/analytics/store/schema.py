"""The analytics schema in PostgreSQL: connection pools and the migrations that make the tables.

Each pool works in one schema (``search_path``): ``analytics`` holds the live read models,
and a rebuild fills ``analytics_rebuild`` beside them before it swaps them in.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from shared.database import ensure_schema
from shared.errors import ConfigError

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of our own, or one borrowed from a pool: the read models' functions take either.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

SCHEMA = "analytics"
_MIGRATION_LOCK = 7_310_001


async def open_pool(dsn: str, schema: str = SCHEMA, max_size: int = 8) -> asyncpg.Pool:
    """A pool whose connections work in ``schema`` and commit synchronously.

    ``synchronous_commit=on`` for every connection, whatever the server's or database's
    default: a batch's counts and checkpoint are on disk before the batch is acknowledged
    to NATS, so a power cut cannot lose a batch the log then no longer redelivers. Each new
    connection checks that the server honours it (a pooler in between may drop it).
    """
    admin = await asyncpg.connect(dsn)
    try:
        await ensure_schema(admin, schema)
    finally:
        await admin.close()
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        server_settings={"search_path": schema, "synchronous_commit": "on"},
        init=require_synchronous_commit,
    )


async def require_synchronous_commit(conn: Connection) -> None:
    """Refuse a connection whose commits may return before they are on disk."""
    value = await conn.fetchval("SHOW synchronous_commit")
    if value != "on":
        raise ConfigError(
            f"PostgreSQL runs this connection with synchronous_commit={value}, and analytics needs it on "
            "(a committed batch must survive a power cut): connect to PostgreSQL directly, or let the "
            "connection pooler pass the setting through"
        )


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply the SQL files in ``migrations/`` not yet applied, in name order; return them."""
    files = sorted(
        (
            f
            for f in resources.files("services.analytics.store").joinpath("migrations").iterdir()
            if f.name.endswith(".sql")
        ),
        key=lambda f: f.name,
    )
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for f in files:
            if f.name not in done:
                await conn.execute(f.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", f.name)
                applied.append(f.name)
    return applied
