"""The shared HTTP pieces on their own: health checks that never raise."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from nats.aio.client import Client

from shared.http import health_checks


class FakeNats:
    """Stands in for a nats-py client: connected or not, and a PING that answers, fails or hangs."""

    def __init__(self, connected: bool = True, flush: str = "ok") -> None:
        self.connected, self.mode = connected, flush

    @property
    def is_connected(self) -> bool:
        if self.mode == "raise-on-state":
            raise RuntimeError("no connection object yet")
        return self.connected

    async def flush(self, timeout: int = 10) -> None:
        if self.mode == "raise":
            raise OSError("connection reset")
        if self.mode == "hang":
            await asyncio.sleep(3600)


class FakeDatabase:
    def __init__(self, answer: Any = 1, mode: str = "ok") -> None:
        self.answer, self.mode = answer, mode

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        assert query == "SELECT 1"
        if self.mode == "raise":
            raise ConnectionRefusedError("database is down")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return self.answer


def nats(**kw: Any) -> Client:
    return cast(Client, FakeNats(**kw))


async def test_only_what_is_given_is_checked() -> None:
    assert health_checks() == {}
    assert set(health_checks(nats=nats())) == {"nats"}
    assert set(health_checks(database=FakeDatabase())) == {"database"}
    assert set(health_checks(nats=nats(), database=FakeDatabase())) == {"nats", "database"}


async def test_healthy_servers_are_true() -> None:
    checks = health_checks(nats=nats(), database=FakeDatabase())
    assert {name: await check() for name, check in checks.items()} == {"nats": True, "database": True}


async def test_a_probe_that_raises_is_false_never_an_exception() -> None:
    for checks in (
        health_checks(nats=nats(flush="raise")),
        health_checks(nats=nats(flush="raise-on-state")),
        health_checks(database=FakeDatabase(mode="raise")),
    ):
        [check] = checks.values()
        assert await check() is False


async def test_a_disconnected_client_or_a_wrong_answer_is_false() -> None:
    assert await health_checks(nats=nats(connected=False))["nats"]() is False
    assert await health_checks(database=FakeDatabase(answer=None))["database"]() is False


async def test_a_probe_that_hangs_is_false_within_the_timeout() -> None:
    checks = health_checks(nats=nats(flush="hang"), database=FakeDatabase(mode="hang"), timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(check() for check in checks.values()))
    assert results == [False, False]
    assert loop.time() - started < 2
