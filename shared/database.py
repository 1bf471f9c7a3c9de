"""PostgreSQL set-up that intake and analytics share: making sure a service's schema is there.

Each service owns its tables; this is only the step before its migrations, the same for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from shared.errors import ConfigError

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]


async def ensure_schema(conn: Connection, schema: str) -> None:
    """Make sure ``schema`` exists and this role may make tables in it; create it only if missing.

    A deployment gives each role its schemas ready-made (deploy/postgres/init.sql) and no
    CREATE on the database, so look in ``pg_namespace`` first: ``CREATE SCHEMA IF NOT EXISTS``
    checks the database privilege before it looks whether the schema exists. ``engage up``'s
    superuser finds nothing there and creates it. Raises ConfigError, naming the schema and the
    role, when the schema is missing and cannot be made, or is there but not this role's to use.
    """
    # The role is asked for now: after a refused CREATE SCHEMA a transaction answers nothing more.
    row = await conn.fetchrow(
        "SELECT current_user, (SELECT has_schema_privilege(oid, 'USAGE') AND has_schema_privilege(oid, 'CREATE') "
        "FROM pg_namespace WHERE nspname = $1)",
        schema,
    )
    assert row is not None  # a SELECT without FROM answers one row
    role, usable = row
    if usable is None:
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except asyncpg.InsufficientPrivilegeError:
            raise ConfigError(
                f'PostgreSQL schema "{schema}" does not exist and role {role} may not create it: create it '
                f"and grant {role} USAGE and CREATE on it (deploy/postgres/init.sql does)"
            ) from None
        except asyncpg.UniqueViolationError:
            pass  # another process created it at the same moment
    elif not usable:
        raise ConfigError(
            f'PostgreSQL role {role} may not make tables in schema "{schema}": grant it USAGE and CREATE '
            "on that schema (deploy/postgres/init.sql does)"
        )
