"""deploy/postgres/init.sql in a real PostgreSQL, run as the postgres image runs it: each
service migrates and works under its own role, analytics projects and rebuilds (twice, so
the swap works again), and neither role reaches the other's schema, makes a schema, a
role or a database, nor can anyone else connect."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from services.analytics.engine import rebuild as rebuilding
from services.analytics.engine.projector import Projector
from services.analytics.store import reads
from services.analytics.store import schema as store
from services.intake import contacts, replies
from shared.bus import attach_streams, make_broker, publish_event
from shared.errors import ConfigError
from shared.settings import Settings
from tests import factories as f
from tests.deploy.postgres import (
    INIT_SQL,
    ROLES,
    Deployment,
    create_database,
    deployed,
    drop,
    require_superuser_without_roles,
    run_init_sql,
    with_login,
)
from tests.projecting import project_until

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

PASSWORDS = {"INTAKE_DB_PASSWORD": "intake-pw", "ANALYTICS_DB_PASSWORD": "analytics-pw"}
SCHEMAS = {
    "engage_intake": {"intake"},
    "engage_analytics": {"analytics", "analytics_rebuild", "analytics_retired"},
}
ALL_SCHEMAS = sorted({"public"} | SCHEMAS["engage_intake"] | SCHEMAS["engage_analytics"])


@pytest.fixture
async def deployment(postgres_url: str) -> AsyncIterator[Deployment]:
    """init.sql run in a fresh database, and both services' migrations run under their roles."""
    async with deployed(postgres_url) as made:
        intake = await asyncpg.create_pool(made.intake, min_size=1, max_size=2)
        await contacts.migrate(intake)
        await replies.migrate(intake)
        await intake.close()
        analytics = await store.open_pool(made.analytics, max_size=2)
        await store.migrate(analytics)
        await analytics.close()
        yield made


async def snapshot(dsn: str) -> list[tuple[object, ...]]:
    """Roles, schemas and the database's privileges, to see whether anything changed."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT 'role', rolname, rolsuper::text || rolcreatedb::text || rolcreaterole::text || rolcanlogin::text, "
            "array_to_string(rolconfig, ',') FROM pg_roles WHERE rolname LIKE 'engage\\_%' "
            "UNION ALL SELECT 'schema', nspname, nspowner::regrole::text, nspacl::text FROM pg_namespace "
            "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' "
            "UNION ALL SELECT 'database', datname, datdba::regrole::text, datacl::text FROM pg_database "
            "WHERE datname = current_database() ORDER BY 1, 2"
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


async def test_init_sql_gives_each_role_login_connect_and_its_own_schemas_only(deployment: Deployment) -> None:
    """What init.sql made, privilege by privilege: nothing more than the comments in it say."""
    conn = await asyncpg.connect(deployment.superuser)
    try:
        for role in ROLES:
            attrs = await conn.fetchrow(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin, "
                "rolconnlimit, rolconfig FROM pg_roles WHERE rolname = $1",
                role,
            )
            assert attrs is not None, role
            assert tuple(attrs.values())[:7] == (False, False, False, False, False, True, 20), role
            assert attrs["rolconfig"] == [f"search_path={role.removeprefix('engage_')}"], role
            assert await conn.fetchval("SELECT count(*) FROM pg_auth_members WHERE member = $1::regrole", role) == 0
            db = deployment.database
            may = {
                p: await conn.fetchval("SELECT has_database_privilege($1, $2, $3)", role, db, p)
                for p in ("CONNECT", "CREATE", "TEMPORARY")
            }
            assert may == {"CONNECT": True, "CREATE": False, "TEMPORARY": False}, role
            for schema in ALL_SCHEMAS:
                own = schema in SCHEMAS[role]
                for privilege in ("USAGE", "CREATE"):
                    held = await conn.fetchval("SELECT has_schema_privilege($1, $2, $3)", role, schema, privilege)
                    assert held is own, f"{role} {'lacks' if own else 'has'} {privilege} on schema {schema}"
                owner = await conn.fetchval(
                    "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1", schema
                )
                assert owner not in ROLES, f"{owner} owns schema {schema}: it could drop it or grant it on"
        public = await conn.fetchval(
            "SELECT count(*) FROM pg_database, aclexplode(datacl) a "
            "WHERE datname = current_database() AND a.grantee = 0"
        )
        assert public == 0, "PUBLIC keeps a privilege on the database"
    finally:
        await conn.close()


async def test_init_sql_run_again_fails_loudly_and_changes_nothing(postgres_url: str, deployment: Deployment) -> None:
    """It is not idempotent, on purpose (the image runs it once): a second run exits non-zero
    naming the role that exists, in this database or in another one on the same server."""
    before = await snapshot(deployment.superuser)
    again = run_init_sql(postgres_url, deployment.database, PASSWORDS)
    assert again.returncode == 3, again.stderr
    assert 'role "engage_intake" already exists' in again.stderr
    assert await snapshot(deployment.superuser) == before

    other = await create_database(postgres_url)
    try:
        elsewhere = run_init_sql(postgres_url, other, PASSWORDS)
        assert elsewhere.returncode == 3, elsewhere.stderr
        assert 'role "engage_intake" already exists' in elsewhere.stderr
        conn = await asyncpg.connect(with_login(postgres_url, *_superuser(postgres_url), other))
        try:
            made = await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1::text[])", ALL_SCHEMAS)
            assert made == 1  # public only: nothing of engage's was made there
        finally:
            await conn.close()
    finally:
        conn = await asyncpg.connect(postgres_url)
        await conn.execute(f'DROP DATABASE "{other}" WITH (FORCE)')
        await conn.close()


def _superuser(dsn: str) -> tuple[str, str]:
    parts = urlsplit(dsn)
    return unquote(parts.username or "postgres"), unquote(parts.password or "")


async def test_init_sql_failing_half_way_leaves_nothing_behind(postgres_url: str) -> None:
    """One transaction: a failure after the roles were made (here a schema already there) undoes them."""
    await require_superuser_without_roles(postgres_url)
    database = await create_database(postgres_url)
    try:
        conn = await asyncpg.connect(with_login(postgres_url, *_superuser(postgres_url), database))
        await conn.execute("CREATE SCHEMA analytics_retired")
        await conn.close()
        ran = run_init_sql(postgres_url, database, PASSWORDS)
        assert ran.returncode == 3, ran.stderr
        assert 'schema "analytics_retired" already exists' in ran.stderr
        conn = await asyncpg.connect(postgres_url)
        try:
            assert (
                await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", list(ROLES)) == 0
            )
        finally:
            await conn.close()
    finally:
        await drop(postgres_url, [database])


@pytest.mark.parametrize("missing", ["INTAKE_DB_PASSWORD", "ANALYTICS_DB_PASSWORD"])
@pytest.mark.parametrize("unset", [True, False], ids=["unset", "empty"])
async def test_init_sql_refuses_a_missing_password_in_one_line(postgres_url: str, missing: str, unset: bool) -> None:
    await require_superuser_without_roles(postgres_url)
    database = await create_database(postgres_url)
    try:
        env = {k: v for k, v in PASSWORDS.items() if not (unset and k == missing)}
        if not unset:
            env[missing] = ""
        ran = run_init_sql(postgres_url, database, env)
        assert ran.returncode == 3
        assert ran.stderr.strip().splitlines() == [
            f"psql:{ran.args[-1]}:{_line_of(missing)}: ERROR:  {missing} is not set or empty: nothing was created"
        ]
        conn = await asyncpg.connect(postgres_url)
        try:
            assert (
                await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])", list(ROLES)) == 0
            )
        finally:
            await conn.close()
    finally:
        await drop(postgres_url, [database])


def _line_of(variable: str) -> int:
    lines = INIT_SQL.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if "RAISE EXCEPTION" in line and variable in line)


async def test_intake_migrates_again_and_keeps_and_deletes_contacts_under_its_role(deployment: Deployment) -> None:
    """A restart migrates again without CREATE on the database; contacts are written and deleted."""
    pool = await asyncpg.create_pool(deployment.intake, min_size=1, max_size=2)
    try:
        await contacts.migrate(pool)
        await replies.migrate(pool)
        async with pool.acquire() as conn:
            row = contacts.InterviewRow("iv-1", "shfa-2018", "one_on_one", "p-1")
            await contacts.remember_interview(conn, row)
            await contacts.save_contact(conn, "iv-1", "p-1", contacts.Contact(name="A", phone="555"))
        assert await contacts.find_interview(pool, "iv-1") == row
        assert await contacts.forget_interview_contact(pool, "iv-1") == 1
        owners = await pool.fetch("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'intake'")
        assert [r["tableowner"] for r in owners] == ["engage_intake"]
    finally:
        await pool.close()


async def test_analytics_projects_and_rebuilds_twice_under_its_role(
    deployment: Deployment, make_settings: Callable[..., Settings]
) -> None:
    """Live projection, then `engage rebuild` twice: the second swap finds the first's schemas and reuses them."""
    settings = make_settings(database_url=deployment.analytics)
    broker = make_broker(settings.nats_url or "", settings, "admin")
    await broker.connect()
    try:
        await attach_streams(broker.connection, settings)
        for _ in range(7):
            await publish_event(broker, f.survey(region="central"), settings)
        pool = await store.open_pool(deployment.analytics, max_size=2)
        try:
            assert await store.migrate(pool) == []  # migrated by the fixture: nothing left to apply
            await project_until(Projector(settings, broker.connection, pool), 7)
            live = await pool.fetchval("SELECT sum(participants) FROM totals")
            assert live == 7
            for _ in range(2):
                result = await rebuilding.rebuild(settings)
                assert (result.events, result.sequence, sum(result.after.values())) == (7, 7, 7)
                assert await reads.checkpoint(pool, settings.consumer_name) == 7
                assert await pool.fetchval("SELECT sum(participants) FROM totals") == 7
            left = await pool.fetch(
                "SELECT n.nspname, count(c.oid) AS n FROM pg_namespace n "
                "LEFT JOIN pg_class c ON c.relnamespace = n.oid "
                "WHERE n.nspname LIKE 'analytics\\_%' GROUP BY 1 ORDER BY 1"
            )
            assert [tuple(r) for r in left] == [("analytics_rebuild", 0), ("analytics_retired", 0)]
            owners = await pool.fetch("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'analytics'")
            assert [r["tableowner"] for r in owners] == ["engage_analytics"]
        finally:
            await pool.close()
    finally:
        await broker.stop()


OTHERS = [
    ("engage_analytics", "intake.contacts"),
    ("engage_analytics", "intake.interviews"),
    ("engage_intake", "analytics.participants"),
    ("engage_intake", "analytics.checkpoint"),
]


def _dsn(deployment: Deployment, role: str) -> str:
    return deployment.intake if role == "engage_intake" else deployment.analytics


@pytest.mark.parametrize(("role", "table"), OTHERS)
async def test_neither_role_reads_or_lists_the_others_tables(deployment: Deployment, role: str, table: str) -> None:
    conn = await asyncpg.connect(_dsn(deployment, role))
    schema = table.partition(".")[0]
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"permission denied for schema {schema}"):
            await conn.fetch(f"SELECT * FROM {table}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"permission denied for schema {schema}"):
            await conn.execute(f"DELETE FROM {table}")
        listed = await conn.fetchval("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1", schema)
        assert listed == 0
        # PostgreSQL's catalogue, readable by every role, still names the tables (never their rows).
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = $1", schema) > 0
    finally:
        await conn.close()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("CREATE SCHEMA elsewhere", "permission denied for database"),
        ("CREATE TABLE public.elsewhere (x int)", "permission denied for schema public"),
        ("CREATE TEMPORARY TABLE elsewhere (x int)", "permission denied to create temporary tables"),
        ("CREATE ROLE someone", "permission denied to create role"),
        ("CREATE DATABASE elsewhere", "permission denied to create database"),
        ("ALTER ROLE {role} CREATEDB", "permission denied to alter role"),
    ],
    ids=["schema", "public-table", "temporary-table", "role", "database", "alter-itself"],
)
async def test_neither_role_makes_anything_outside_its_own_schemas(
    deployment: Deployment, role: str, statement: str, refusal: str
) -> None:
    conn = await asyncpg.connect(_dsn(deployment, role))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=refusal):
            await conn.execute(statement.format(role=role, database=deployment.database))
        for schema in sorted(set(SCHEMAS["engage_intake"] | SCHEMAS["engage_analytics"]) - SCHEMAS[role]):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=f"permission denied for schema {schema}"):
                await conn.execute(f"CREATE TABLE {schema}.elsewhere (x int)")
        # Granting itself more is no error, only a warning that nothing was granted.
        await conn.execute(f'GRANT CREATE, TEMPORARY ON DATABASE "{deployment.database}" TO {role}')
        assert await conn.fetchval("SELECT has_database_privilege(current_database(), 'CREATE, TEMPORARY')") is False
    finally:
        await conn.close()


async def test_public_cannot_connect(postgres_url: str, deployment: Deployment) -> None:
    """A role engage did not name (here one made for the test) is refused at the door."""
    stranger = "engage_stranger_" + secrets.token_hex(4)
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f"CREATE ROLE {stranger} LOGIN PASSWORD 'stranger-pw'")
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
            await asyncpg.connect(with_login(postgres_url, stranger, "stranger-pw", deployment.database))
    finally:
        await admin.execute(f"DROP ROLE {stranger}")
        await admin.close()


async def test_a_schema_the_role_cannot_use_is_named_in_one_line(deployment: Deployment) -> None:
    """Missing, or there but not granted: the service says which schema and role, and what to do."""
    with pytest.raises(
        ConfigError, match='schema "analytics_elsewhere" does not exist and role engage_analytics may not'
    ):
        await store.open_pool(deployment.analytics, schema="analytics_elsewhere")
    admin = await asyncpg.connect(deployment.superuser)
    pool = await asyncpg.create_pool(deployment.intake, min_size=1, max_size=1)
    try:
        await admin.execute("REVOKE CREATE ON SCHEMA intake FROM engage_intake")
        with pytest.raises(ConfigError, match='role engage_intake may not make tables in schema "intake"'):
            await contacts.migrate(pool)
        await admin.execute("DROP SCHEMA intake CASCADE")
        with pytest.raises(ConfigError, match='schema "intake" does not exist and role engage_intake may not create'):
            await contacts.migrate(pool)
    finally:
        await pool.close()
        await admin.close()
