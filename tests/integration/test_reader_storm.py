"""The live reader never floods NATS with pull requests, whatever blocked it: against a real nats-server.

Twice in the field, after long as-of requests had blocked analytics' event loop, the reader
kept all 16 waiting slots of its consumer full and re-sent pull requests thousands of times a
second on an idle stream. Each block left one more request circulating (the answer to the old
one and the reader's "it must be lost" both asked again), and once the slots were full every
new request was answered 409 at once and asked again at once. A second connection counts the
pull requests the server receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

import nats
import orjson
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.analytics.reading.reader import PullReader, attach_consumer
from tests.polling import eventually

pytestmark = pytest.mark.integration
STREAM, DURABLE, EXPIRES = "STORM", "projector", 0.5
NEXT = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{DURABLE}"


@pytest.fixture
async def connections(nats_url: str) -> AsyncIterator[tuple[Client, Client]]:
    """The reader's connection, with an idle stream and the live consumer on it, and a spy's."""
    nc, spy = await nats.connect(nats_url), await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["storm.>"])
    await attach_consumer(js, STREAM, DURABLE, after=0, batch=10)
    yield nc, spy
    await nc.close()
    await spy.close()


@contextlib.asynccontextmanager
async def reading(nc: Client) -> AsyncIterator[tuple[PullReader, list[Msg]]]:
    """A reader driven as the projector drives it, and the messages it has handed out."""
    reader = PullReader(nc, STREAM, DURABLE, batch=10, expires=EXPIRES)
    await reader.start()
    got: list[Msg] = []

    async def drive() -> None:
        while True:
            got.extend(await reader.next_batch())

    task = asyncio.create_task(drive())
    try:
        yield reader, got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reader.stop()


async def pull_requests(spy: Client, seconds: float) -> int:
    """How many pull requests for the live consumer the server receives in ``seconds``."""
    seen = 0

    async def count(_: Msg) -> None:
        nonlocal seen
        seen += 1

    sub = await spy.subscribe(NEXT, cb=count)
    await asyncio.sleep(seconds)
    await sub.unsubscribe()
    return seen


async def delivered(nc: Client, got: list[Msg]) -> None:
    """An event published now reaches the reader: blocking it has not stopped the flow."""
    before = len(got)
    await nc.jetstream().publish("storm.one", b"{}")

    async def read() -> int:
        return len(got)

    await eventually(read, lambda n: n > before, what="the event to be read", timeout=10)


async def test_an_event_loop_blocked_again_and_again_keeps_one_pull_request_open(connections) -> None:
    """Blocked past a request's life, again and again, the reader keeps one request open, renewed once per expiry."""
    nc, spy = connections
    async with reading(nc) as (_, got):
        for _ in range(4):
            await asyncio.sleep(0.2)
            time.sleep(EXPIRES + 1.1)  # an as-of replay on the event loop: the request expires unanswered
        await asyncio.sleep(0.2)
        requests = await pull_requests(spy, 3.0)
        waiting = (await nc.jetstream().consumer_info(STREAM, DURABLE)).num_waiting
        # One request open, renewed each time it expires: 6 in 3 s, and a margin for the first one.
        assert requests <= 3.0 / EXPIRES + 2, f"{requests} pull requests in 3 s of idle"
        assert waiting <= 1, f"{waiting} pull requests waiting on the consumer"
        await delivered(nc, got)


async def test_a_consumer_whose_waiting_slots_are_full_is_not_asked_again_at_once(connections) -> None:
    """Answered 409 at once (all 16 slots held elsewhere), the reader backs off instead of asking as fast as it can."""
    nc, spy = connections

    async def waiting() -> int:
        return (await nc.jetstream().consumer_info(STREAM, DURABLE)).num_waiting

    hog = spy.new_inbox()
    await spy.subscribe(hog + ".*")  # someone else's requests, holding every slot for 4 s
    for _ in range(16):
        body = orjson.dumps({"batch": 1, "expires": int(4e9)})
        await spy.publish(NEXT, body, reply=f"{hog}.{secrets.token_hex(4)}")
    await eventually(waiting, lambda n: n == 16, what="every waiting slot to be taken")
    counting = asyncio.create_task(pull_requests(spy, 1.5))
    await asyncio.sleep(0.1)  # the spy listens before the reader asks
    async with reading(nc) as (_, got):
        requests = await counting
        # Backing off from 50 ms, doubling up to the request's life: a handful in 1.5 s.
        assert requests <= 10, f"{requests} pull requests in 1.5 s against a full waiting list"
        await eventually(waiting, lambda n: n <= 1, what="the other requests to expire")
        await delivered(nc, got)  # then the reader gets its turn
