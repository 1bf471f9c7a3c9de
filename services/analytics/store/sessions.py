"""Signed-out dashboard sessions: the server's memory of cookies that must no longer work.

A session cookie is self-contained (see ``dashboard.session``), so signing out must leave
a mark on the server, or a copied cookie would keep working until it expires. The mark is
the session's random id, kept until the cookie's own expiry.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg


async def sign_out(pool: asyncpg.Pool, session_id: str, until: datetime) -> None:
    """Refuse ``session_id`` from now until ``until``; forget sign-outs that have run out."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO dashboard_signouts (session_id, until) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            session_id,
            until,
        )
        await conn.execute("DELETE FROM dashboard_signouts WHERE until < $1", datetime.now(UTC))


async def signed_out(pool: asyncpg.Pool, session_id: str) -> bool:
    found = await pool.fetchval("SELECT 1 FROM dashboard_signouts WHERE session_id = $1", session_id)
    return found is not None
